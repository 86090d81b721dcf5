//! Schema migrations: numbered files in `crates/cloudmasterd/migrations/`
//! (`NNNN_what.sql`), applied in order; `PRAGMA user_version` records the
//! last one applied. A migration, once released, never changes: deployed
//! stores have applied it. A change of schema is a new file at the end.

use crate::store::{Result, StoreError};
use rusqlite::Connection;

/// One migration: its number (the file's prefix), its file name, its SQL.
pub struct Migration {
    pub version: i64,
    pub file: &'static str,
    pub sql: &'static str,
}

macro_rules! migration {
    ($version:literal, $file:literal) => {
        Migration {
            version: $version,
            file: $file,
            sql: include_str!(concat!("../../../migrations/", $file)),
        }
    };
}

/// Every migration, in the order they are applied.
pub const MIGRATIONS: &[Migration] = &[
    migration!(1, "0001_core.sql"),
    migration!(2, "0002_configs.sql"),
    migration!(3, "0003_idempotency.sql"),
    migration!(4, "0004_uploads.sql"),
    migration!(5, "0005_retention.sql"),
    migration!(6, "0006_hosts.sql"),
    migration!(7, "0007_guest_boot.sql"),
    migration!(8, "0008_instance_name_index.sql"),
    migration!(9, "0009_host_sums_index.sql"),
    migration!(10, "0010_deployables.sql"),
    migration!(11, "0011_slot_restart_gens.sql"),
    migration!(12, "0012_volumes.sql"),
    migration!(13, "0013_snapshots.sql"),
    migration!(14, "0014_persistent_roots.sql"),
    migration!(15, "0015_transfers.sql"),
    migration!(16, "0016_backups.sql"),
    migration!(17, "0017_backup_mirror.sql"),
];

/// The schema version this master writes.
pub fn latest() -> i64 {
    MIGRATIONS.last().map(|m| m.version).unwrap_or(0)
}

/// The schema version of a store (0 for a new file).
pub fn version(c: &Connection) -> Result<i64> {
    Ok(c.query_row("PRAGMA user_version", [], |r| r.get(0))?)
}

/// Apply, in the caller's transaction, every migration above the store's
/// version up to `target`. A store written by a newer master is refused:
/// this one would not know its tables.
pub fn apply(c: &Connection, target: i64) -> Result<()> {
    let current = version(c)?;
    if current > latest() {
        return Err(StoreError::Unavailable(format!(
            "the store's schema is version {current}, newer than this master's ({}): \
             run the newer master",
            latest()
        )));
    }
    for m in MIGRATIONS {
        if m.version > current && m.version <= target {
            c.execute_batch(m.sql)
                .map_err(|e| StoreError::Unavailable(format!("migration {}: {e}", m.file)))?;
            c.pragma_update(None, "user_version", m.version)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The list and the directory agree: every file is listed, once, in
    /// the order of its number, and the numbers have no gap.
    #[test]
    fn migrations_are_the_numbered_files_in_order() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        let listed: Vec<&str> = MIGRATIONS.iter().map(|m| m.file).collect();
        assert_eq!(files, listed);
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version, i64::try_from(i).unwrap() + 1, "{}", m.file);
            assert!(
                m.file.starts_with(&format!("{:04}_", m.version)),
                "{} is not numbered {}",
                m.file,
                m.version
            );
            assert!(m.file.ends_with(".sql"));
        }
    }

    /// Released migrations never change: deployed stores have applied them,
    /// and an edit would reach only fresh stores. A schema change is a new
    /// file (add its hash here when it is released).
    #[test]
    fn released_migrations_never_change() {
        use sha2::{Digest, Sha256};
        let released = [
            (
                "0001_core.sql",
                "c853dc0a1147aa30492f96bc63fbdaa1198fba53014f78f285d019296a8d1f66",
            ),
            (
                "0002_configs.sql",
                "f01b003d1ec0cb2367ba2f94c4210bcc7dec96015bdc709d5c3a74374abfd8f1",
            ),
            (
                "0003_idempotency.sql",
                "d336704b8809e3fa51d9a4b84f1bb4d8d6ce6a4950483ef5fd21c1ce51a7dfc2",
            ),
            (
                "0004_uploads.sql",
                "41e6585f7ed4238d4bad7c7401eadabb81f182f02ad0b4fdff335bf446f1593f",
            ),
            (
                "0005_retention.sql",
                "fe132a10d5ac1049cc5bd1e9d82184c08117ed1a1ea0dd1f0915620275b8032e",
            ),
            (
                "0006_hosts.sql",
                "bc3080b568a4fefa44e74b5db4f2a6488d3fea0eabb2dad325f4df80925e8fda",
            ),
            (
                "0007_guest_boot.sql",
                "0ef161c0c3e377150d47839b9ef17d61f79bb2df07b472c3f62d6a44264460d4",
            ),
            (
                "0008_instance_name_index.sql",
                "3ac4ee4af22c70d9e63d658ef442cbc0516bc693e4e1d0f598fa800987fdb874",
            ),
            (
                "0009_host_sums_index.sql",
                "367b70b8f105af62a9fe084cfa1c37a463e9a99ea2ca4e5fd377a33f18f8a442",
            ),
            (
                "0010_deployables.sql",
                "56bffd73b0d46d5eee6668347ec99f6512c94d10a1b2a35e1c2d2d714c0787ba",
            ),
            (
                "0011_slot_restart_gens.sql",
                "0901704bb79d447b740a40846ad9448040c373bea15d4fd9bb5d41e6c82bd8bc",
            ),
        ];
        for (file, sha) in released {
            let m = MIGRATIONS.iter().find(|m| m.file == file).unwrap();
            assert_eq!(hex::encode(Sha256::digest(m.sql)), sha, "{file} changed");
        }
    }

    #[test]
    fn a_store_from_a_newer_master_is_refused() {
        let c = Connection::open_in_memory().unwrap();
        c.pragma_update(None, "user_version", latest() + 1).unwrap();
        let e = apply(&c, latest()).unwrap_err();
        assert!(e.to_string().contains("newer than this master"), "{e}");
    }
}
