-- Backups (issue 12 point 6, docs/storage.md "Backups"): copies of a
-- volume or of an instance's root disk kept in a chain on a host. The
-- master owns the intent (exists, deleted); the fact columns (obs_*) come
-- from the chain's host's reports. A row is removed only when its host no
-- longer reports it after it applied the deletion.
CREATE TABLE backup_schedules (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    of_kind     TEXT NOT NULL CHECK (of_kind IN ('volume', 'instance_root')),
    disk_id     TEXT NOT NULL,
    source_name TEXT NOT NULL,
    target      TEXT NOT NULL,
    every_secs  INTEGER NOT NULL CHECK (every_secs >= 60),
    keep        INTEGER NOT NULL CHECK (keep BETWEEN 1 AND 1000),
    next_at     INTEGER NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE INDEX backup_schedules_disk ON backup_schedules(disk_id);

CREATE TABLE backups (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL UNIQUE,
    of_kind         TEXT NOT NULL CHECK (of_kind IN ('volume', 'instance_root')),
    -- the volume's id, or the instance's (its root disk)
    disk_id         TEXT NOT NULL,
    -- the volume's or instance's name when it was taken
    source_name     TEXT NOT NULL,
    host_id         TEXT NOT NULL REFERENCES hosts(id),
    target          TEXT NOT NULL,
    -- the schedule that made it (its backups outlive it)
    schedule_id     TEXT,
    schedule_name   TEXT,
    -- the origin image of the disk backed up (a restore keeps it)
    origin_image_id TEXT,
    deleted         INTEGER NOT NULL DEFAULT 0,
    deleted_gen     INTEGER,
    -- the host generation it was recorded at
    intent_gen      INTEGER NOT NULL DEFAULT 0,
    -- facts
    obs_kind        TEXT CHECK (obs_kind IN ('full', 'incremental')),
    obs_full_reason TEXT,
    obs_consistency TEXT CHECK (obs_consistency IN ('offline', 'filesystem', 'crash')),
    obs_size_bytes  INTEGER,
    obs_file_bytes  INTEGER,
    obs_took_ms     INTEGER,
    obs_error       TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);
CREATE INDEX backups_disk ON backups(disk_id);
CREATE INDEX backups_host ON backups(host_id);
CREATE INDEX backups_schedule ON backups(schedule_id);

-- A restore is a transfer (the chain's host sends the flattened backup) and
-- a move of the new volume onto its host: transfers learn the purpose.
CREATE TABLE transfers_v16 (
    id          TEXT PRIMARY KEY,
    purpose     TEXT NOT NULL
        CHECK (purpose IN ('volume_move', 'image_create', 'backup_restore')),
    host_id     TEXT NOT NULL,
    disk_of     TEXT NOT NULL CHECK (disk_of IN ('volume', 'instance_root')),
    disk_id     TEXT NOT NULL,
    max_bytes   INTEGER NOT NULL,
    size_bytes  INTEGER,
    sha256      TEXT,
    received_at INTEGER,
    error       TEXT,
    created_at  INTEGER NOT NULL,
    -- the backup a restore sends (DiskRef.backup)
    backup_id   TEXT
);
INSERT INTO transfers_v16 (id, purpose, host_id, disk_of, disk_id, max_bytes, size_bytes,
    sha256, received_at, error, created_at)
SELECT id, purpose, host_id, disk_of, disk_id, max_bytes, size_bytes, sha256, received_at,
    error, created_at FROM transfers;
DROP TABLE transfers;
ALTER TABLE transfers_v16 RENAME TO transfers;
