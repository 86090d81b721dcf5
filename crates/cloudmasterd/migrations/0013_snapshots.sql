-- Snapshots (issue 12 point 4, docs/storage.md "Snapshots"): qcow2 internal
-- snapshots of a volume or of an instance's root disk. The master owns the
-- intent (exists, deleted); the fact columns (obs_*) come from its host's
-- reports. A row is removed only when its host no longer reports it after
-- it applied the deletion, so a name stays taken while it is deleting.
CREATE TABLE snapshots (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL UNIQUE,
    of_kind         TEXT NOT NULL CHECK (of_kind IN ('volume', 'instance_root')),
    -- the volume's id, or the instance's (its root disk)
    disk_id         TEXT NOT NULL,
    -- the volume's or instance's name when it was taken
    source_name     TEXT NOT NULL,
    host_id         TEXT NOT NULL REFERENCES hosts(id),
    deleted         INTEGER NOT NULL DEFAULT 0,
    deleted_gen     INTEGER,
    -- the host generation it was recorded at: a failure reported before
    -- the host applied it is old news
    intent_gen      INTEGER NOT NULL DEFAULT 0,
    -- facts
    obs_consistency TEXT CHECK (obs_consistency IN ('offline', 'filesystem', 'crash')),
    obs_size_bytes  INTEGER,
    obs_error       TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);
CREATE INDEX snapshots_disk ON snapshots(disk_id);
CREATE INDEX snapshots_host ON snapshots(host_id);

-- A disk's revert: the master raises gen with every restore; its host
-- reports the last gen it applied (obs_gen) or why the last one failed.
CREATE TABLE disk_reverts (
    disk_id     TEXT PRIMARY KEY,
    of_kind     TEXT NOT NULL CHECK (of_kind IN ('volume', 'instance_root')),
    host_id     TEXT NOT NULL REFERENCES hosts(id),
    snapshot_id TEXT NOT NULL,
    gen         INTEGER NOT NULL,
    intent_gen  INTEGER NOT NULL DEFAULT 0,
    obs_gen     INTEGER NOT NULL DEFAULT 0,
    obs_error   TEXT,
    updated_at  INTEGER NOT NULL
);

-- A volume made from a snapshot (a clone): its host makes the file from it.
CREATE TABLE volume_clones (
    volume_id   TEXT PRIMARY KEY REFERENCES volumes(id) ON DELETE CASCADE,
    snapshot_id TEXT NOT NULL,
    of_kind     TEXT NOT NULL CHECK (of_kind IN ('volume', 'instance_root')),
    disk_id     TEXT NOT NULL
);
CREATE INDEX volume_clones_snapshot ON volume_clones(snapshot_id);
