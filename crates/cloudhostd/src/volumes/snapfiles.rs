//! A disk's snapshots on file (docs/storage.md, "Snapshots"): qcow2 internal
//! snapshots tagged `cm-ID`, taken, removed, applied and cloned with
//! qemu-img, and two small files beside the disk that the host keeps:
//! `ID.snaps` (what it took: consistency and size, recorded *before* a
//! snapshot is taken, so a crash never leaves a tag it does not know of)
//! and `ID.revert` (the last revert generation applied, so a revert is
//! applied once). Blocking; call from `spawn_blocking`.

use super::files::{qemu_img, FileError};
use cm_api::snapshot::{snapshot_tag, Consistency};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use uuid::Uuid;

/// The most of `qemu-img info`'s answer read with snapshots listed (each
/// is a couple of hundred bytes).
const MAX_LIST: usize = 1 << 20;
/// The most of a `.snaps` or `.revert` file read.
const MAX_RECORD: u64 = 1 << 20;

/// What the host knows of one snapshot it took (or is taking) of a disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Taken {
    /// None while it is being taken (a crash then: looked for next pass).
    pub consistency: Option<Consistency>,
    pub size_bytes: u64,
}

/// The snapshots a disk holds, by id, as recorded beside it.
pub type Record = BTreeMap<Uuid, Taken>;

/// `DIR/ID.qcow2` → `DIR/ID.EXT`.
fn beside(disk: &Path, ext: &str) -> PathBuf {
    disk.with_extension(ext)
}

fn read_small(path: &Path) -> Result<Option<Vec<u8>>, FileError> {
    use std::io::Read;
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(FileError::Io(path.display().to_string(), e)),
    };
    let mut buf = Vec::new();
    f.take(MAX_RECORD + 1)
        .read_to_end(&mut buf)
        .map_err(|e| FileError::Io(path.display().to_string(), e))?;
    if buf.len() as u64 > MAX_RECORD {
        return Err(FileError::Info(format!("{} is too big", path.display())));
    }
    Ok(Some(buf))
}

/// The snapshots recorded beside `disk` (none when no file).
pub fn record(disk: &Path) -> Result<Record, FileError> {
    let path = beside(disk, "snaps");
    match read_small(&path)? {
        None => Ok(Record::new()),
        Some(b) => serde_json::from_slice(&b)
            .map_err(|e| FileError::Info(format!("{}: {e}", path.display()))),
    }
}

/// Write the record durably (removed when empty).
pub fn save_record(disk: &Path, r: &Record) -> Result<(), FileError> {
    let path = beside(disk, "snaps");
    if r.is_empty() {
        return remove_quietly(&path);
    }
    let bytes = serde_json::to_vec(r).map_err(|e| FileError::Info(e.to_string()))?;
    durable_fs::write_atomic(&path, &bytes, 0o600)
        .map_err(|e| FileError::Io(path.display().to_string(), e))
}

/// The last revert generation applied to `disk` (0: none).
pub fn reverted_gen(disk: &Path) -> Result<u64, FileError> {
    let path = beside(disk, "revert");
    match read_small(&path)? {
        None => Ok(0),
        Some(b) => String::from_utf8_lossy(&b)
            .trim()
            .parse()
            .map_err(|e| FileError::Info(format!("{}: {e}", path.display()))),
    }
}

fn save_reverted_gen(disk: &Path, gen: u64) -> Result<(), FileError> {
    let path = beside(disk, "revert");
    durable_fs::write_atomic(&path, format!("{gen}\n").as_bytes(), 0o600)
        .map_err(|e| FileError::Io(path.display().to_string(), e))
}

fn remove_quietly(path: &Path) -> Result<(), FileError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(FileError::Io(path.display().to_string(), e)),
    }
}

/// Remove what the host keeps beside a disk (with the disk).
pub fn remove_beside(disk: &Path) -> Result<(), FileError> {
    remove_quietly(&beside(disk, "snaps"))?;
    remove_quietly(&beside(disk, "revert"))
}

/// The tags of the internal snapshots in `disk` (`-U`: also while a QEMU
/// holds it).
pub fn tags(disk: &Path) -> Result<Vec<String>, FileError> {
    let out = qemu_img(
        "info",
        &[
            "info".as_ref(),
            "--output=json".as_ref(),
            "-U".as_ref(),
            disk.as_os_str(),
        ],
    )?;
    if out.len() > MAX_LIST {
        return Err(FileError::Info(format!("{} bytes", out.len())));
    }
    let v: serde_json::Value =
        serde_json::from_slice(&out).map_err(|e| FileError::Info(e.to_string()))?;
    Ok(v["snapshots"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default())
}

fn snapshot_op(what: &'static str, flag: &str, disk: &Path, id: Uuid) -> Result<(), FileError> {
    let tag = snapshot_tag(id);
    qemu_img(
        what,
        &[
            "snapshot".as_ref(),
            "-q".as_ref(),
            flag.as_ref(),
            tag.as_ref(),
            disk.as_os_str(),
        ],
    )
    .map(|_| ())
}

/// Take snapshot `id` of a disk no QEMU holds (`qemu-img snapshot -c`);
/// one there already is kept.
pub fn take_offline(disk: &Path, id: Uuid) -> Result<(), FileError> {
    if tags(disk)?.contains(&snapshot_tag(id)) {
        return Ok(());
    }
    snapshot_op("snapshot -c", "-c", disk, id)
}

/// Remove snapshot `id` from a disk no QEMU holds; gone already is fine.
pub fn delete_offline(disk: &Path, id: Uuid) -> Result<(), FileError> {
    if !tags(disk)?.contains(&snapshot_tag(id)) {
        return Ok(());
    }
    snapshot_op("snapshot -d", "-d", disk, id)
}

/// Revert a disk no QEMU holds to snapshot `id` for generation `gen`,
/// unless that generation was applied already. The generation is kept
/// beside the disk once applied.
pub fn revert(disk: &Path, id: Uuid, gen: u64) -> Result<bool, FileError> {
    if gen <= reverted_gen(disk)? {
        return Ok(false);
    }
    if !tags(disk)?.contains(&snapshot_tag(id)) {
        return Err(FileError::Info(format!("the disk holds no snapshot {id}")));
    }
    snapshot_op("snapshot -a", "-a", disk, id)?;
    save_reverted_gen(disk, gen)?;
    Ok(true)
}

/// Make `dst` a standalone qcow2 of snapshot `id` of `src` (under
/// `DST.part`, then renamed; a backing file is flattened in). `-U`: the
/// snapshot's clusters never change, even while a QEMU writes the disk.
pub fn clone(src: &Path, id: Uuid, dst: &Path) -> Result<(), FileError> {
    if dst.exists() {
        return Ok(());
    }
    if !tags(src)?.contains(&snapshot_tag(id)) {
        return Err(FileError::Info(format!(
            "the source disk holds no snapshot {id}"
        )));
    }
    let part = dst.with_extension("qcow2.part");
    let _ = std::fs::remove_file(&part);
    let sel = format!("snapshot.name={}", snapshot_tag(id));
    qemu_img(
        "convert",
        &[
            "convert".as_ref(),
            "-q".as_ref(),
            "-U".as_ref(),
            "-O".as_ref(),
            "qcow2".as_ref(),
            "-l".as_ref(),
            sel.as_ref(),
            src.as_os_str(),
            part.as_os_str(),
        ],
    )
    .inspect_err(|_| {
        let _ = std::fs::remove_file(&part);
    })?;
    durable_fs::persist(&part, dst).map_err(|e| FileError::Io(dst.display().to_string(), e))
}

#[cfg(test)]
#[path = "snapfiles_tests.rs"]
mod tests;
