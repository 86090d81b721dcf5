//! What a made backup was, kept beside its file (`CHAIN/ID.json`, written
//! durably before the file joins the chain): full or incremental and why,
//! its consistency, sizes and time. A report after an agent restart still
//! says them without running qemu-img. A file whose record is missing (an
//! agent killed between the two, or a chain older than records) gets one
//! from `qemu-img info` once, saying the reason is unknown.

use super::chain::{io, BackupFile};
use super::engine::{Backup, BackupKind as EngineKind};
use super::{img, BackupError};
use cm_api::backup::BackupKind;
use cm_api::snapshot::Consistency;
use serde::{Deserialize, Serialize};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use uuid::Uuid;

/// The biggest record read back (they are a few hundred bytes).
const MAX_RECORD: u64 = 16 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub kind: BackupKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistency: Option<Consistency>,
    pub size_bytes: u64,
    pub file_bytes: u64,
    /// An increment: the bytes its job copied.
    #[serde(default)]
    pub changed_bytes: u64,
    pub took_ms: u64,
}

impl Record {
    pub fn of(b: &Backup, consistency: Consistency) -> Record {
        let (kind, full_reason, changed_bytes) = match &b.kind {
            EngineKind::Full { reason } => (BackupKind::Full, Some(reason.to_string()), 0),
            EngineKind::Incremental { changed_bytes } => {
                (BackupKind::Incremental, None, *changed_bytes)
            }
        };
        Record {
            kind,
            full_reason,
            consistency: Some(consistency),
            size_bytes: b.virtual_size,
            file_bytes: b.file_bytes,
            changed_bytes,
            took_ms: u64::try_from(b.took.as_millis()).unwrap_or(u64::MAX),
        }
    }
}

fn path(dir: &Path, id: Uuid) -> PathBuf {
    dir.join(format!("{id}.json"))
}

pub fn save(dir: &Path, id: Uuid, r: &Record) -> Result<(), BackupError> {
    let p = path(dir, id);
    let bytes = serde_json::to_vec(r).map_err(|e| BackupError::Unexpected(e.to_string()))?;
    durable_fs::write_atomic(&p, &bytes, 0o600).map_err(|e| io(&p, e))
}

/// The record of backup `id`, if one was written and reads back.
pub fn load(dir: &Path, id: Uuid) -> Option<Record> {
    use std::io::Read;
    let f = std::fs::File::open(path(dir, id)).ok()?;
    let mut bytes = Vec::new();
    f.take(MAX_RECORD).read_to_end(&mut bytes).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The record of `file`, made from the file itself (and saved) when it
/// has none. Blocking (qemu-img, at most once per file).
pub fn load_or_make(dir: &Path, file: &BackupFile) -> Result<Record, BackupError> {
    if let Some(r) = load(dir, file.id) {
        return Ok(r);
    }
    let info = img::info(&file.path, true)?;
    let meta = std::fs::metadata(&file.path).map_err(|e| io(&file.path, e))?;
    let full = info.backing.is_none();
    let r = Record {
        kind: if full {
            BackupKind::Full
        } else {
            BackupKind::Incremental
        },
        full_reason: full.then(|| "unknown (the agent stopped before recording it)".into()),
        consistency: None,
        size_bytes: info.virtual_size,
        file_bytes: meta.blocks() * 512,
        changed_bytes: 0,
        took_ms: 0,
    };
    save(dir, file.id, &r)?;
    Ok(r)
}

pub fn remove(dir: &Path, id: Uuid) -> Result<(), BackupError> {
    let p = path(dir, id);
    match std::fs::remove_file(&p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(&p, e)),
    }
}
