//! One backup of a disk into its chain: full or incremental, and why.
//!
//! The steps, for a crash at any point: the backup's id goes to the chain's
//! `pending` file first; the new file is written as `.part`; it joins the
//! chain by a synced rename; `pending` is removed last. A backup that finds
//! `pending` (a crash, or a failure after the disk's bitmap stopped
//! matching the chain) is full. A failed increment whose job QEMU reports
//! failed leaves the bitmap as it was (QEMU clears it only on success), so
//! it clears `pending` and the next one is incremental again.

use super::chain::{BackupFile, Chain};
use super::img::{self, Bitmap};
use super::job::{self, Failure, Freeze, Mode};
use super::{qsd, BackupError};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// The node name the storage daemon gives the disk.
const OFFLINE_NODE: &str = "cmbksrc";

/// The disk to back up.
#[derive(Debug, Clone, Copy)]
pub enum Source<'a> {
    /// A qcow2 file no QEMU holds.
    Offline(&'a Path),
    /// A disk a running QEMU holds: its QMP socket and the disk's format
    /// node (`cm_api::volume::qemu_node(id)` for a volume,
    /// `job::node_of_file` for a root drive).
    Online { qmp: &'a Path, node: &'a str },
}

/// Why a backup copied the whole disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FullReason {
    /// The chain had no backup yet.
    FirstInChain,
    /// The disk has no `cm-backup` bitmap.
    NoBitmap,
    /// The bitmap was left in use by a QEMU that did not close the disk
    /// (a crash), or stopped recording: it cannot be trusted.
    InconsistentBitmap,
    /// The backup before this one (its id) did not finish.
    Interrupted(String),
    /// The disk's size differs from the chain's last backup.
    Resized { from: u64, to: u64 },
    /// The chain's newest backup (its id) was removed: the disk's bitmap
    /// counts from it, not from the chain's last file.
    LastRemoved(String),
}

impl std::fmt::Display for FullReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FullReason::FirstInChain => write!(f, "the first backup of this chain"),
            FullReason::NoBitmap => write!(f, "the disk has no dirty bitmap"),
            FullReason::InconsistentBitmap => {
                write!(
                    f,
                    "the disk's dirty bitmap is inconsistent (QEMU did not close it)"
                )
            }
            FullReason::Interrupted(id) => write!(f, "the previous backup {id} did not finish"),
            FullReason::Resized { from, to } => {
                write!(f, "the disk was resized from {from} to {to} bytes")
            }
            FullReason::LastRemoved(id) => {
                write!(f, "the chain's newest backup {id} was removed")
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackupKind {
    Full { reason: FullReason },
    Incremental { changed_bytes: u64 },
}

/// A backup made.
#[derive(Debug, Clone)]
pub struct Backup {
    pub file: BackupFile,
    pub kind: BackupKind,
    /// The disk's virtual size.
    pub virtual_size: u64,
    /// The bytes the new file takes on disk.
    pub file_bytes: u64,
    pub took: Duration,
    /// Online, whether `freeze` froze the guest around the job's start.
    pub frozen: bool,
}

#[cfg(test)]
/// Back up `source` into `chain` (a new id); a job running longer than
/// `timeout` is cancelled (and the backup failed).
pub fn backup(chain: &Chain, source: Source, timeout: Duration) -> Result<Backup, BackupError> {
    backup_as(chain, Uuid::new_v4(), source, timeout, None)
}

/// Back up `source` into `chain` as backup `id` (the master's); online,
/// `freeze` quiesces the guest around the job's start.
pub fn backup_as(
    chain: &Chain,
    id: Uuid,
    source: Source,
    timeout: Duration,
    freeze: Option<&dyn Freeze>,
) -> Result<Backup, BackupError> {
    let t0 = Instant::now();
    let files = chain.list()?;
    let last = files.last();
    let (size, bitmap) = match source {
        Source::Offline(f) => {
            let i = img::info(f, false)?;
            (i.virtual_size, i.bitmap)
        }
        Source::Online { qmp, node } => job::node_state(qmp, node)?,
    };
    let pending = chain.pending()?;
    if let (Source::Online { qmp, .. }, Some(Ok(p))) =
        (source, pending.as_deref().map(Uuid::parse_str))
    {
        // An agent that died mid-backup left its job and target in QEMU.
        job::sweep(qmp, p)?;
    }
    // A failure that leaves the bitmap as it was still leaves a `pending`
    // found here: the bitmap did not match the chain before either.
    let had_pending = pending.is_some();
    let reason = match (last, pending) {
        (None, _) => Some(FullReason::FirstInChain),
        (Some(_), Some(p)) => Some(match p.strip_prefix(super::chain::REMOVED) {
            Some(id) => FullReason::LastRemoved(id.to_string()),
            None => FullReason::Interrupted(p),
        }),
        (Some(l), None) => {
            let from = img::info(&l.path, true)?.virtual_size;
            if from != size {
                Some(FullReason::Resized { from, to: size })
            } else {
                match bitmap {
                    Bitmap::Missing => Some(FullReason::NoBitmap),
                    Bitmap::Inconsistent => Some(FullReason::InconsistentBitmap),
                    Bitmap::Consistent => None,
                }
            }
        }
    };
    let file = chain.next(last, id);
    chain.set_pending(file.id)?;
    let part = Chain::part(&file);
    let done = match (&reason, last) {
        (None, Some(last)) => increment(chain, source, size, last, &file, timeout, freeze),
        _ => full(chain, source, size, bitmap, &file, timeout, freeze).map(|f| (0, f)),
    };
    let (changed, frozen) = match done {
        Ok(done) => done,
        Err(f) => {
            let _ = std::fs::remove_file(&part);
            if !f.consumed && !had_pending {
                chain.clear_pending()?;
            }
            return Err(f.error);
        }
    };
    chain.clear_pending()?;
    let file_bytes = std::fs::metadata(&file.path)
        .map_err(|e| super::chain::io(&file.path, e))?
        .blocks()
        * 512;
    let kind = match reason {
        Some(reason) => BackupKind::Full { reason },
        None => BackupKind::Incremental {
            changed_bytes: changed,
        },
    };
    Ok(Backup {
        file,
        kind,
        virtual_size: size,
        file_bytes,
        took: t0.elapsed(),
        frozen,
    })
}

/// A whole copy; a fresh bitmap from its point in time. Any failure leaves
/// `pending` (the old bitmap may be gone already).
fn full(
    chain: &Chain,
    source: Source,
    size: u64,
    bitmap: Bitmap,
    file: &BackupFile,
    timeout: Duration,
    freeze: Option<&dyn Freeze>,
) -> Result<bool, Failure> {
    let failed = |error| Failure {
        error,
        consumed: true,
    };
    let part = Chain::part(file);
    match source {
        Source::Offline(disk) => {
            if bitmap != Bitmap::Missing {
                img::bitmap(disk, "--remove").map_err(failed)?;
            }
            img::convert(disk, &part).map_err(failed)?;
            chain.publish(file).map_err(failed)?;
            img::bitmap(disk, "--add").map_err(failed)?;
            Ok(false)
        }
        Source::Online { qmp, node } => {
            img::create(&part, size, None).map_err(failed)?;
            let drop_old = bitmap != Bitmap::Missing;
            let mode = Mode::Full { drop_old };
            let (_, frozen) = job::run(qmp, node, file.id, &part, mode, timeout, freeze)?;
            chain.publish(file).map_err(failed)?;
            Ok(frozen)
        }
    }
}

/// The clusters written since `last`: a new file over it, filled by an
/// incremental job (the VM's QEMU, or a storage daemon started for it).
fn increment(
    chain: &Chain,
    source: Source,
    size: u64,
    last: &BackupFile,
    file: &BackupFile,
    timeout: Duration,
    freeze: Option<&dyn Freeze>,
) -> Result<(u64, bool), Failure> {
    let part = Chain::part(file);
    let before = |error| Failure {
        error,
        consumed: false,
    };
    img::create(&part, size, Some(&last.name())).map_err(before)?;
    let changed = match source {
        Source::Offline(disk) => {
            let daemon = qsd::Daemon::start(disk, OFFLINE_NODE).map_err(before)?;
            let job = job::run(
                &daemon.socket(),
                OFFLINE_NODE,
                file.id,
                &part,
                Mode::Incremental,
                timeout,
                None,
            );
            // The bitmap (cleared, or given back by a failed job) is
            // written back on a clean close, also after a failure; an
            // unclean one leaves it in use, and the next backup full.
            let quit = daemon.quit();
            let changed = job?;
            quit.map_err(|error| Failure {
                error,
                consumed: true,
            })?;
            changed
        }
        Source::Online { qmp, node } => job::run(
            qmp,
            node,
            file.id,
            &part,
            Mode::Incremental,
            timeout,
            freeze,
        )?,
    };
    chain.publish(file).map_err(|error| Failure {
        error,
        consumed: true,
    })?;
    Ok(changed)
}
