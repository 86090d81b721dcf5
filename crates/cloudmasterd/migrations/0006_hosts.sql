-- Hosts: identity, revocation, death and orphans (issue 9, points 13-16).

-- Bumped by every change of the tokens table, by triggers, so that a running
-- master notices a token written by another process (`cloudmasterd
-- --reset-admin-token`) and reloads its cache.
CREATE TABLE token_epoch (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    n  INTEGER NOT NULL
);
INSERT INTO token_epoch (id, n) VALUES (1, 1);
CREATE TRIGGER tokens_inserted AFTER INSERT ON tokens
BEGIN UPDATE token_epoch SET n = n + 1 WHERE id = 1; END;
CREATE TRIGGER tokens_deleted AFTER DELETE ON tokens
BEGIN UPDATE token_epoch SET n = n + 1 WHERE id = 1; END;
CREATE TRIGGER tokens_updated AFTER UPDATE ON tokens
BEGIN UPDATE token_epoch SET n = n + 1 WHERE id = 1; END;

-- VMs a host keeps that are no instance of that host: reported by the host,
-- replaced with every report; `purge` is the operator's recorded decision
-- to delete one (cm host orphans NAME --purge).
CREATE TABLE host_orphans (
    host_id    TEXT NOT NULL REFERENCES hosts(id) ON DELETE CASCADE,
    vm_id      TEXT NOT NULL,
    name       TEXT NOT NULL,
    state      TEXT NOT NULL,
    disk_bytes INTEGER NOT NULL,
    purge      INTEGER NOT NULL DEFAULT 0,
    first_seen INTEGER NOT NULL,
    last_seen  INTEGER NOT NULL,
    PRIMARY KEY (host_id, vm_id)
);

-- An instance whose disk holds data the user marked as such: never rebuilt
-- elsewhere by an evacuation. Nothing sets it yet (no volumes before the
-- storage issue); the evacuation already refuses such instances.
ALTER TABLE instances ADD COLUMN holds_data INTEGER NOT NULL DEFAULT 0;
