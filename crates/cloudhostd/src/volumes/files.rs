//! A volume's file: made, grown, measured and removed with qemu-img and the
//! file system (docs/storage.md). Blocking; call from `spawn_blocking`.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use uuid::Uuid;

/// The most of `qemu-img info`'s answer read (it is a few hundred bytes).
const MAX_INFO: usize = 64 << 10;

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("cannot run qemu-img: {0}")]
    Spawn(std::io::Error),
    #[error("qemu-img {0} failed: {1}")]
    Failed(&'static str, String),
    #[error("qemu-img info said something unexpected: {0}")]
    Info(String),
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
}

/// The file of volume `id` in `dir`.
pub fn path(dir: &Path, id: Uuid) -> PathBuf {
    dir.join(format!("{id}.qcow2"))
}

/// Where a volume is made before it takes its name.
fn part(dir: &Path, id: Uuid) -> PathBuf {
    dir.join(format!("{id}.qcow2.part"))
}

pub(crate) fn qemu_img(
    what: &'static str,
    args: &[&std::ffi::OsStr],
) -> Result<Vec<u8>, FileError> {
    let out = Command::new("qemu-img")
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(FileError::Spawn)?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(FileError::Failed(
            what,
            err.trim().chars().take(500).collect(),
        ));
    }
    Ok(out.stdout)
}

/// Make volume `id` of `size` bytes: a qcow2 under `ID.qcow2.part`, synced
/// and renamed into place, so a crash never leaves half a volume under its
/// name. A file that exists already is left alone.
pub fn create(dir: &Path, id: Uuid, size: u64) -> Result<(), FileError> {
    let file = path(dir, id);
    if file.exists() {
        return Ok(());
    }
    let tmp = part(dir, id);
    let _ = std::fs::remove_file(&tmp);
    let size = size.to_string();
    qemu_img(
        "create",
        &[
            "create".as_ref(),
            "-q".as_ref(),
            "-f".as_ref(),
            "qcow2".as_ref(),
            tmp.as_os_str(),
            size.as_ref(),
        ],
    )
    .inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })?;
    durable_fs::persist(&tmp, &file).map_err(|e| FileError::Io(file.display().to_string(), e))
}

/// The virtual size of a qcow2 file (`-U`: also while a QEMU holds it).
pub fn virtual_size(file: &Path) -> Result<u64, FileError> {
    let out = qemu_img(
        "info",
        &[
            "info".as_ref(),
            "--output=json".as_ref(),
            "-U".as_ref(),
            file.as_os_str(),
        ],
    )?;
    if out.len() > MAX_INFO {
        return Err(FileError::Info(format!("{} bytes", out.len())));
    }
    let v: serde_json::Value =
        serde_json::from_slice(&out).map_err(|e| FileError::Info(e.to_string()))?;
    if v["format"] != "qcow2" {
        return Err(FileError::Info(format!("format {}", v["format"])));
    }
    v["virtual-size"]
        .as_u64()
        .ok_or_else(|| FileError::Info("no virtual-size".into()))
}

/// Grow a file no QEMU holds to `size` bytes (qemu-img refuses a file a
/// running QEMU has locked).
pub fn grow(file: &Path, size: u64) -> Result<(), FileError> {
    let size = size.to_string();
    qemu_img(
        "resize",
        &[
            "resize".as_ref(),
            "-q".as_ref(),
            "-f".as_ref(),
            "qcow2".as_ref(),
            file.as_os_str(),
            size.as_ref(),
        ],
    )
    .map(|_| ())
}

/// What a file is on disk: its inode (to tell a replaced file) and the
/// bytes it takes.
pub fn stat(file: &Path) -> Option<(u64, u64)> {
    let m = std::fs::metadata(file).ok()?;
    Some((m.ino(), m.blocks().saturating_mul(512)))
}

/// Remove a volume's file. Gone already is fine.
pub fn remove(dir: &Path, id: Uuid) -> Result<(), FileError> {
    let file = path(dir, id);
    match std::fs::remove_file(&file) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(FileError::Io(file.display().to_string(), e)),
    }
    // The removal is durable before the host reports the file gone.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// The volumes whose files are in `dir`.
pub fn list(dir: &Path) -> Vec<Uuid> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut ids: Vec<Uuid> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name();
            let stem = name.to_str()?.strip_suffix(".qcow2")?;
            Uuid::parse_str(stem).ok()
        })
        .collect();
    ids.sort();
    ids
}

/// Remove what a crash left half made (`*.qcow2.part`); returns how many.
pub fn remove_stray_parts(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".qcow2.part"))
        .filter(|e| std::fs::remove_file(e.path()).is_ok())
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volumes_are_made_grown_measured_and_removed_with_qemu_img() {
        let dir = tempfile::tempdir().unwrap();
        let id = Uuid::new_v4();
        create(dir.path(), id, 64 << 20).unwrap();
        let f = path(dir.path(), id);
        assert_eq!(virtual_size(&f).unwrap(), 64 << 20);
        // Thin: a fresh qcow2 takes far less than its size.
        let (_, allocated) = stat(&f).unwrap();
        assert!(allocated > 0 && allocated < 4 << 20, "{allocated}");
        // Made again: nothing happens (the file is kept as it is).
        create(dir.path(), id, 128 << 20).unwrap();
        assert_eq!(virtual_size(&f).unwrap(), 64 << 20);
        grow(&f, 96 << 20).unwrap();
        assert_eq!(virtual_size(&f).unwrap(), 96 << 20);
        // qemu-img refuses to shrink without --shrink; we never pass it.
        let err = grow(&f, 32 << 20).unwrap_err().to_string();
        assert!(err.contains("resize"), "{err}");
        assert_eq!(list(dir.path()), vec![id]);
        remove(dir.path(), id).unwrap();
        remove(dir.path(), id).unwrap();
        assert!(list(dir.path()).is_empty());
    }

    #[test]
    fn half_made_volumes_are_removed_and_bad_files_reported() {
        let dir = tempfile::tempdir().unwrap();
        let id = Uuid::new_v4();
        std::fs::write(part(dir.path(), id), b"half").unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"x").unwrap();
        assert_eq!(remove_stray_parts(dir.path()), 1);
        assert!(list(dir.path()).is_empty());
        // Not a qcow2: an error that says so, no panic.
        let raw = path(dir.path(), id);
        std::fs::write(&raw, vec![0u8; 4096]).unwrap();
        let err = virtual_size(&raw).unwrap_err().to_string();
        assert!(err.contains("format"), "{err}");
        // A size qemu-img cannot make is its error, and no file is left.
        let big = Uuid::new_v4();
        let err = create(dir.path(), big, u64::MAX).unwrap_err().to_string();
        assert!(err.contains("qemu-img create"), "{err}");
        assert!(!path(dir.path(), big).exists() && !part(dir.path(), big).exists());
    }
}
