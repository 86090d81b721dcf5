-- Volumes (issue 12, docs/storage.md): qcow2 files on one host. The master
-- owns the intent columns; the fact columns (obs_*) come from its host's
-- reports. A row is removed only when its host reports the file gone after
-- the deletion was recorded, so a name stays taken while it is deleting.
CREATE TABLE volumes (
    id               TEXT PRIMARY KEY,
    name             TEXT NOT NULL UNIQUE,
    host_id          TEXT NOT NULL REFERENCES hosts(id),
    -- intent
    size_bytes       INTEGER NOT NULL,
    -- the instance it is to be attached to, and its place among that
    -- instance's volumes
    instance_id      TEXT,
    attach_pos       INTEGER NOT NULL DEFAULT 0,
    -- raised by every attach and detach: an operation waits for its own
    attach_gen       INTEGER NOT NULL DEFAULT 0,
    -- the detach under way may restart the VM (cm volume detach --force)
    force_detach     INTEGER NOT NULL DEFAULT 0,
    deleted          INTEGER NOT NULL DEFAULT 0,
    -- the host generation its deletion was recorded at
    deleted_gen      INTEGER,
    -- the host generation at which what the host must do for it last
    -- changed: a failure reported before the host applied it is old news
    intent_gen       INTEGER NOT NULL DEFAULT 0,
    -- fact: the file (NULL: the host reports none)
    obs_size_bytes   INTEGER,
    obs_allocated    INTEGER,
    obs_error        TEXT,
    -- fact: the instance whose VM holds it, how, and the host's last
    -- failure to attach or detach it
    obs_instance_id  TEXT,
    obs_attach_state TEXT CHECK (obs_attach_state IN ('attached', 'detaching')),
    obs_attach_error TEXT,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL
);
CREATE INDEX volumes_host ON volumes(host_id);
CREATE INDEX volumes_instance ON volumes(instance_id) WHERE instance_id IS NOT NULL;
