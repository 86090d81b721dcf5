-- Backups to a host over ssh (docs/storage.md, "Backups to a host over
-- ssh"): a chain whose backups have an ssh:// target is mirrored there by
-- its host, which reports per backup whether the copy there holds it and
-- why the chain's last mirroring failed. NULL: the chain has no mirror (or
-- the backup is not made yet).
ALTER TABLE backups ADD COLUMN obs_mirrored INTEGER;
ALTER TABLE backups ADD COLUMN obs_mirror_error TEXT;
