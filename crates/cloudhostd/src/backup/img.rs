//! The qemu-img steps of a backup: what a disk file holds (its size, its
//! backing file, its `cm-backup` bitmap), new files for a chain, copies,
//! rebases and the bitmap's add and remove. Blocking.

use super::{BackupError, BITMAP};
use std::ffi::OsStr;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};

/// The most of qemu-img's standard output kept (`info` is a few KiB).
const MAX_OUT: u64 = 256 << 10;
/// The most of its standard error kept for a message.
const MAX_ERR: u64 = 4 << 10;

/// Run qemu-img; its output read up to a bound (the rest drained unread).
pub fn run(what: &'static str, args: &[&OsStr]) -> Result<Vec<u8>, BackupError> {
    let mut child = Command::new("qemu-img")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| BackupError::Spawn("qemu-img", e))?;
    let stderr = child.stderr.take();
    let err_reader = std::thread::spawn(move || {
        let mut kept = Vec::new();
        if let Some(mut s) = stderr {
            let _ = Read::by_ref(&mut s).take(MAX_ERR).read_to_end(&mut kept);
            let _ = std::io::copy(&mut s, &mut std::io::sink());
        }
        kept
    });
    let mut out = Vec::new();
    if let Some(mut s) = child.stdout.take() {
        let _ = Read::by_ref(&mut s).take(MAX_OUT).read_to_end(&mut out);
        let _ = std::io::copy(&mut s, &mut std::io::sink());
    }
    let status = child
        .wait()
        .map_err(|e| BackupError::Spawn("qemu-img", e))?;
    let err = err_reader.join().unwrap_or_default();
    if !status.success() {
        let msg = String::from_utf8_lossy(&err).trim().to_string();
        return Err(BackupError::Tool(what, msg));
    }
    Ok(out)
}

/// The state of a disk's `cm-backup` bitmap as qemu-img sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bitmap {
    Missing,
    /// Present, recording (`auto`) and closed cleanly.
    Consistent,
    /// Left `in-use` by a QEMU that did not close the file, or not `auto`.
    Inconsistent,
}

/// What `qemu-img info` says of a qcow2 file.
#[derive(Debug, Clone)]
pub struct Info {
    pub virtual_size: u64,
    pub backing: Option<String>,
    /// A qcow2 whose clusters live in another file (`data_file`): never
    /// one of ours; refused when fetched (backup/mirror.rs).
    pub data_file: Option<String>,
    pub bitmap: Bitmap,
}

pub fn info(file: &Path, shared: bool) -> Result<Info, BackupError> {
    let mut args: Vec<&OsStr> = vec!["info".as_ref(), "--output=json".as_ref()];
    if shared {
        args.push("-U".as_ref());
    }
    args.extend::<[&OsStr; 3]>(["-f".as_ref(), "qcow2".as_ref(), file.as_os_str()]);
    let out = run("info", &args)?;
    parse_info(&out)
}

fn parse_info(out: &[u8]) -> Result<Info, BackupError> {
    let v: serde_json::Value =
        serde_json::from_slice(out).map_err(|e| BackupError::Unexpected(e.to_string()))?;
    let virtual_size = v["virtual-size"]
        .as_u64()
        .ok_or_else(|| BackupError::Unexpected("qemu-img info: no virtual-size".into()))?;
    let backing = v["backing-filename"].as_str().map(str::to_string);
    let data_file = v["format-specific"]["data"]["data-file"]
        .as_str()
        .map(str::to_string);
    let bitmaps = v["format-specific"]["data"]["bitmaps"].as_array();
    let bitmap = match bitmaps.and_then(|b| b.iter().find(|b| b["name"] == BITMAP)) {
        None => Bitmap::Missing,
        Some(b) => {
            let flags: Vec<&str> = b["flags"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|f| f.as_str())
                .collect();
            if flags.contains(&"auto") && !flags.contains(&"in-use") {
                Bitmap::Consistent
            } else {
                Bitmap::Inconsistent
            }
        }
    };
    Ok(Info {
        virtual_size,
        backing,
        data_file,
        bitmap,
    })
}

/// A new empty qcow2 of `size` bytes at `file`, over `backing` (a name in
/// the same directory: the chain stays movable) when given.
pub fn create(file: &Path, size: u64, backing: Option<&str>) -> Result<(), BackupError> {
    let size = size.to_string();
    let mut args: Vec<&OsStr> = vec!["create".as_ref(), "-q".as_ref(), "-f".as_ref()];
    args.push("qcow2".as_ref());
    if let Some(b) = backing {
        args.extend::<[&OsStr; 4]>(["-b".as_ref(), b.as_ref(), "-F".as_ref(), "qcow2".as_ref()]);
    }
    args.extend::<[&OsStr; 2]>([file.as_os_str(), size.as_ref()]);
    run("create", &args).map(|_| ())
}

/// The whole disk seen through `src` (its backing chain followed) as one
/// standalone qcow2 at `dst`.
pub fn convert(src: &Path, dst: &Path) -> Result<(), BackupError> {
    run(
        "convert",
        &[
            "convert".as_ref(),
            "-q".as_ref(),
            "-f".as_ref(),
            "qcow2".as_ref(),
            "-O".as_ref(),
            "qcow2".as_ref(),
            src.as_os_str(),
            dst.as_os_str(),
        ],
    )
    .map(|_| ())
}

/// Make `file` standalone: safe mode copies from its backing chain every
/// cluster it does not hold, so what it reads stays the same.
pub fn rebase_standalone(file: &Path) -> Result<(), BackupError> {
    run(
        "rebase",
        &[
            "rebase".as_ref(),
            "-q".as_ref(),
            "-f".as_ref(),
            "qcow2".as_ref(),
            "-b".as_ref(),
            "".as_ref(),
            file.as_os_str(),
        ],
    )
    .map(|_| ())
}

/// Rebase `file` (safe mode) onto `backing`, a name relative to its
/// directory: every cluster that differs between its old backing chain and
/// the new one is copied into it first, so what it reads never changes and
/// a crash half-way leaves a file that still reads right.
pub fn rebase_onto(file: &Path, backing: &str) -> Result<(), BackupError> {
    // qemu-img opens a relative backing name from the file's directory.
    run(
        "rebase",
        &[
            "rebase".as_ref(),
            "-q".as_ref(),
            "-f".as_ref(),
            "qcow2".as_ref(),
            "-F".as_ref(),
            "qcow2".as_ref(),
            "-b".as_ref(),
            backing.as_ref(),
            file.as_os_str(),
        ],
    )
    .map(|_| ())
}

/// Add (`--add`, persistent and recording) or remove (`--remove`) the
/// `cm-backup` bitmap of a file no QEMU holds.
pub fn bitmap(file: &Path, op: &'static str) -> Result<(), BackupError> {
    run(
        "bitmap",
        &[
            "bitmap".as_ref(),
            op.as_ref(),
            "-f".as_ref(),
            "qcow2".as_ref(),
            file.as_os_str(),
            BITMAP.as_ref(),
        ],
    )
    .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitmap_flags_decide_consistency() {
        let info = |flags: &str| {
            let j = format!(
                r#"{{"virtual-size": 1048576, "format-specific": {{"type": "qcow2", "data":
                {{"bitmaps": [{{"name": "other", "flags": ["auto"]}},
                              {{"name": "cm-backup", "flags": {flags}}}]}}}}}}"#
            );
            parse_info(j.as_bytes()).unwrap().bitmap
        };
        assert_eq!(info(r#"["auto"]"#), Bitmap::Consistent);
        assert_eq!(info(r#"["in-use", "auto"]"#), Bitmap::Inconsistent);
        assert_eq!(info(r#"[]"#), Bitmap::Inconsistent);
        let none = parse_info(br#"{"virtual-size": 5, "backing-filename": "a.qcow2"}"#).unwrap();
        assert_eq!(none.bitmap, Bitmap::Missing);
        assert_eq!(none.backing.as_deref(), Some("a.qcow2"));
        parse_info(b"{}").unwrap_err();
        parse_info(b"not json").unwrap_err();
    }
}
