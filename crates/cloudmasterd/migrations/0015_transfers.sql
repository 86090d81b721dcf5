-- Transfers (issue 12 points 3 and 7, docs/storage.md "Transfers"): a disk a
-- host flattens and sends to the master, kept as DATA/transfers/ID until its
-- use (a volume move, an image from an instance) ends.
CREATE TABLE transfers (
    id          TEXT PRIMARY KEY,
    purpose     TEXT NOT NULL CHECK (purpose IN ('volume_move', 'image_create')),
    -- the host asked to send it (DesiredExport), and the disk
    host_id     TEXT NOT NULL,
    disk_of     TEXT NOT NULL CHECK (disk_of IN ('volume', 'instance_root')),
    disk_id     TEXT NOT NULL,
    -- the most bytes the file may take (the disk's virtual size + 1 GiB)
    max_bytes   INTEGER NOT NULL,
    -- facts, once received: the file's size and sha256
    size_bytes  INTEGER,
    sha256      TEXT,
    received_at INTEGER,
    -- the host's reason it could not send it
    error       TEXT,
    created_at  INTEGER NOT NULL
);

-- A volume being copied to another host (cm volume move): at most one per
-- volume. The volume keeps its row (and host) until the new host reports it.
CREATE TABLE volume_moves (
    volume_id    TEXT PRIMARY KEY,
    from_host_id TEXT NOT NULL,
    to_host_id   TEXT NOT NULL,
    transfer_id  TEXT NOT NULL,
    operation_id TEXT NOT NULL,
    started_at   INTEGER NOT NULL
);

-- A volume file a host must remove although the volume lives elsewhere: the
-- old copy after a move, or a partial copy after a failed one. Kept until
-- that host no longer reports the file.
CREATE TABLE volume_leftovers (
    host_id   TEXT NOT NULL,
    volume_id TEXT NOT NULL,
    PRIMARY KEY (host_id, volume_id)
);

-- An image being made from an instance's root disk (cm image create
-- --from-instance): the image exists once the operation succeeds.
CREATE TABLE image_builds (
    image_id     TEXT PRIMARY KEY,
    name         TEXT NOT NULL UNIQUE,
    instance_id  TEXT NOT NULL,
    transfer_id  TEXT NOT NULL,
    operation_id TEXT NOT NULL,
    created_at   INTEGER NOT NULL
);
