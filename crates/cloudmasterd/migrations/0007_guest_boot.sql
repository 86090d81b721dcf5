-- Issue 9, points 12 and 17: dynamic records held by an instance across its
-- reboots, and the NoCloud credential's window per boot.

-- The instance (`--dynamic-domain`) holding this dynamic record: the same
-- record at every boot, released (back to the pool) when it is deleted.
ALTER TABLE configs ADD COLUMN bound_instance TEXT;
CREATE UNIQUE INDEX configs_bound ON configs(bound_instance) WHERE bound_instance IS NOT NULL;

-- The NoCloud credential of an instance's launch is usable for one window per
-- boot: which boot ("BOOT_GEN.REBOOT_GEN"), when its first use was, and
-- whether cloud-init has fetched everything (then it is spent).
ALTER TABLE configs ADD COLUMN nocloud_boot TEXT;
ALTER TABLE configs ADD COLUMN nocloud_opened_at INTEGER;
ALTER TABLE configs ADD COLUMN nocloud_done INTEGER NOT NULL DEFAULT 0;
