-- Boot-time configuration (seed 003): the rendezvous cache.

-- Domains group records; a dynamic guest proves itself with its domain's secret.
CREATE TABLE config_domains (
    name         TEXT PRIMARY KEY,
    secret_epoch INTEGER NOT NULL DEFAULT 1,
    secret_salt  BLOB NOT NULL,
    secret_hash  BLOB NOT NULL,
    created_at   INTEGER NOT NULL
);

CREATE TABLE configs (
    uuid          TEXT PRIMARY KEY,
    domain        TEXT NOT NULL,
    dynamic       INTEGER NOT NULL DEFAULT 0,
    assigned      INTEGER NOT NULL DEFAULT 0,
    -- the instance it was made for (cm instance create --config); no foreign
    -- key: the record goes with the instance, by the same transaction
    instance_id   TEXT,
    body          BLOB NOT NULL,
    body_sha256   TEXT NOT NULL,
    version       INTEGER NOT NULL DEFAULT 1,
    -- secrets are never stored: only salted hashes (the master re-derives a
    -- record's secret from its key, the uuid and the epoch)
    secret_epoch  INTEGER NOT NULL DEFAULT 1,
    secret_salt   BLOB NOT NULL,
    secret_hash   BLOB NOT NULL,
    trust_salt    BLOB,
    trust_hash    BLOB,
    my_conf_addr  TEXT,
    status        TEXT NOT NULL,
    reason        TEXT,
    parameter_map TEXT NOT NULL DEFAULT '{}',
    config_hosts  TEXT NOT NULL DEFAULT '[]',
    -- heartbeats over HTTP (federated guests)
    hb_seq        INTEGER,
    hb_at         INTEGER,
    hb_services   TEXT,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);
CREATE INDEX configs_free ON configs(domain, created_at) WHERE dynamic = 1 AND assigned = 0;
CREATE UNIQUE INDEX configs_instance ON configs(instance_id) WHERE instance_id IS NOT NULL;

-- An instance that boots as a dynamic guest of a domain.
ALTER TABLE instances ADD COLUMN dynamic_domain TEXT;
-- The guest agent's heartbeats, relayed by the host.
ALTER TABLE instances ADD COLUMN guest_seq INTEGER;
ALTER TABLE instances ADD COLUMN guest_seen_at INTEGER;
ALTER TABLE instances ADD COLUMN guest_services TEXT;
