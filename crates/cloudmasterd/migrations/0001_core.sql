-- The core cloud: hosts, images, flavors, instances, operations, events.
-- Timestamps are milliseconds since the Unix epoch (UTC).

CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- Bearer tokens, by the SHA-256 of the token (tokens are 256-bit random).
CREATE TABLE tokens (
    hash       TEXT PRIMARY KEY,
    kind       TEXT NOT NULL CHECK (kind IN ('admin', 'host')),
    host_id    TEXT,
    created_at INTEGER NOT NULL
);

CREATE TABLE hosts (
    id                 TEXT PRIMARY KEY,
    name               TEXT NOT NULL UNIQUE,
    enabled            INTEGER NOT NULL DEFAULT 1,
    reserved_mib       INTEGER NOT NULL,
    facts              TEXT NOT NULL,
    last_seen          INTEGER,
    registered_at      INTEGER NOT NULL,
    -- raised whenever the desired state of an instance on this host changes
    generation         INTEGER NOT NULL DEFAULT 1,
    -- the generation the host says it has applied
    applied_generation INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE images (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    kind       TEXT NOT NULL CHECK (kind IN ('kernel', 'disk')),
    files      TEXT NOT NULL,
    cmdline    TEXT,
    created_at INTEGER NOT NULL
);

CREATE TABLE flavors (
    name       TEXT PRIMARY KEY,
    memory_mib INTEGER NOT NULL,
    vcpus      INTEGER NOT NULL,
    disk_gib   INTEGER NOT NULL,
    builtin    INTEGER NOT NULL
);

CREATE TABLE instances (
    id                TEXT PRIMARY KEY,
    name              TEXT NOT NULL,
    image_id          TEXT NOT NULL REFERENCES images(id),
    flavor            TEXT,
    memory_mib        INTEGER NOT NULL,
    vcpus             INTEGER NOT NULL,
    disk_gib          INTEGER NOT NULL,
    host_id           TEXT NOT NULL REFERENCES hosts(id),
    ports             TEXT NOT NULL,
    restart_policy    TEXT NOT NULL,
    accel             TEXT NOT NULL,
    stop_timeout_secs INTEGER NOT NULL,
    -- desired state, owned by the master
    desired_power     TEXT NOT NULL CHECK (desired_power IN ('running', 'stopped')),
    boot_gen          INTEGER NOT NULL,
    reboot_gen        INTEGER NOT NULL DEFAULT 0,
    stop_timeout_now  INTEGER,
    deleted           INTEGER NOT NULL DEFAULT 0,
    deleted_gen       INTEGER,
    -- observed state, owned by the host
    obs_state         TEXT,
    obs_reason        TEXT,
    obs_boot_gen      INTEGER NOT NULL DEFAULT 0,
    obs_reboot_gen    INTEGER NOT NULL DEFAULT 0,
    obs_pid           INTEGER,
    obs_accel         TEXT,
    obs_since         INTEGER,
    -- restart policy bookkeeping
    running_since     INTEGER,
    restart_count     INTEGER NOT NULL DEFAULT 0,
    backoff_step      INTEGER NOT NULL DEFAULT 0,
    next_restart_at   INTEGER,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL
);
CREATE UNIQUE INDEX instances_live_name ON instances(name) WHERE deleted = 0;
CREATE INDEX instances_host ON instances(host_id);

CREATE TABLE operations (
    id         TEXT PRIMARY KEY,
    kind       TEXT NOT NULL,
    target     TEXT NOT NULL,
    target_id  TEXT NOT NULL,
    status     TEXT NOT NULL CHECK (status IN ('running', 'succeeded', 'failed')),
    progress   TEXT NOT NULL,
    error      TEXT,
    -- the generation that completes it (boot_gen, reboot_gen), if any
    want       INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX operations_running ON operations(target_id) WHERE status = 'running';
CREATE INDEX operations_created ON operations(created_at);

CREATE TABLE events (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    time    INTEGER NOT NULL,
    kind    TEXT NOT NULL,
    target  TEXT NOT NULL,
    message TEXT NOT NULL
);
