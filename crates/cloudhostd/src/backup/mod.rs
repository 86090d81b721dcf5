//! The host's backup engine (docs/storage.md, "Backups: the host's
//! engine"): backups of a disk file into a chain of qcow2 files, full or
//! incremental through QEMU's persistent dirty bitmap `cm-backup`, for a
//! disk no QEMU holds (qemu-img, a `qemu-storage-daemon`) or one a running
//! VM holds (its QMP); a chain's file flattened for a restore; retention.
//! Blocking; call from `spawn_blocking`. The agent drives it through
//! `chains` (the master's `DesiredState.chains`, volumes/backups.rs).

pub mod chain;
pub mod chains;
mod engine;
pub mod img;
pub mod job;
pub mod mirror;
mod qsd;
pub mod record;

#[cfg(test)]
mod backup_vm_test;
#[cfg(test)]
mod chains_vm_test;
#[cfg(test)]
pub(crate) mod tests;

pub use chain::Chain;
#[cfg(test)]
pub use engine::{backup, Backup, BackupKind, FullReason};
pub use engine::{backup_as, Source};

/// The name of the dirty bitmap a backed-up disk carries.
pub const BITMAP: &str = "cm-backup";

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("cannot run {0}: {1}")]
    Spawn(&'static str, std::io::Error),
    #[error("qemu-img {0} failed: {1}")]
    Tool(&'static str, String),
    #[error("{0}")]
    Unexpected(String),
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error(transparent)]
    Qmp(#[from] crate::vm::qmp::QmpError),
    #[error("the backup job failed: {0}")]
    Job(String),
    #[error("qemu-storage-daemon: {0}")]
    Daemon(String),
    #[error("QEMU has no block node {0}")]
    NoNode(String),
    #[error("a chain name is letters, digits, '-', '_' and '.' (not first): {0:?}")]
    BadName(String),
    #[error("another backup of chain {0} is under way")]
    Busy(String),
    #[error("no backup {0} in this chain")]
    NoSuchBackup(uuid::Uuid),
    #[cfg(test)]
    #[error("retention keeps at least one backup")]
    BadKeep,
}
