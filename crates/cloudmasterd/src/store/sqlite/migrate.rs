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
            assert_eq!(m.version, i as i64 + 1, "{}", m.file);
            assert!(
                m.file.starts_with(&format!("{:04}_", m.version)),
                "{} is not numbered {}",
                m.file,
                m.version
            );
            assert!(m.file.ends_with(".sql"));
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
