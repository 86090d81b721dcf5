//! Disks that travel through the master (docs/storage.md, "Transfers"): a
//! disk flattened into a file of its own and its sha256 (exports), and a
//! volume's file made from a transfer the master holds (imports).

use super::files::{qemu_img, virtual_size, FileError};
use crate::client::{ClientError, Master};
use cm_api::agent::DiskImport;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};
use tokio::io::AsyncWriteExt;

/// Where `file` is made before it takes its name.
pub fn part_of(file: &Path) -> PathBuf {
    let mut s = file.as_os_str().to_owned();
    s.push(".part");
    PathBuf::from(s)
}

/// Flatten `src` into `dst`: one qcow2 file with no backing file and no
/// internal snapshots, zeroes left sparse (`qemu-img convert -O qcow2`),
/// made under `dst.part` and renamed. Without `-U`: qemu-img refuses a disk
/// a running QEMU holds for writing, so a VM's disk is never copied torn.
pub fn flatten(src: &Path, dst: &Path) -> Result<(), FileError> {
    let tmp = part_of(dst);
    let _ = std::fs::remove_file(&tmp);
    qemu_img(
        "convert",
        &[
            "convert".as_ref(),
            "-q".as_ref(),
            "-O".as_ref(),
            "qcow2".as_ref(),
            src.as_os_str(),
            tmp.as_os_str(),
        ],
    )
    .inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })?;
    durable_fs::persist(&tmp, dst).map_err(|e| FileError::Io(dst.display().to_string(), e))
}

/// A file's sha256 (lowercase hex) and length. Blocking.
pub fn sha256_file(file: &Path) -> std::io::Result<(String, u64)> {
    let mut f = std::fs::File::open(file)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        len += n as u64;
    }
    Ok((hex::encode(hasher.finalize()), len))
}

/// An import that receives nothing for this long is abandoned (and tried
/// again on a later pass), so a stalled connection never holds a volume.
const STALL: std::time::Duration = std::time::Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("fetching transfer: {0}")]
    Fetch(ClientError),
    #[error("transfer longer than its {0} bytes")]
    TooLong(u64),
    #[error("transfer of {got} bytes, {want} expected")]
    Short { got: u64, want: u64 },
    #[error("transfer sha256 {got} does not match {want}")]
    Sha { got: String, want: String },
    #[error("the transferred file is not a qcow2 disk: {0}")]
    NotQcow2(FileError),
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
}

/// Make `dst` (a volume's file) from transfer `imp`: fetched into
/// `dst.part`, at most `imp.size` bytes, checked (size, sha256, a qcow2),
/// then renamed into place. On any failure nothing is left.
pub async fn import(master: &Master, imp: &DiskImport, dst: &Path) -> Result<(), ImportError> {
    let tmp = part_of(dst);
    let r = fetch_checked(master, imp, &tmp).await;
    let r = match r {
        Ok(()) => {
            let (t, d) = (tmp.clone(), dst.to_path_buf());
            tokio::task::spawn_blocking(move || {
                virtual_size(&t).map_err(ImportError::NotQcow2)?;
                durable_fs::persist(&t, &d).map_err(|e| ImportError::Io(d.display().to_string(), e))
            })
            .await
            .unwrap_or_else(|e| Err(ImportError::Io(dst.display().to_string(), e.into())))
        }
        Err(e) => Err(e),
    };
    if r.is_err() {
        let _ = tokio::fs::remove_file(&tmp).await;
    }
    r
}

async fn fetch_checked(master: &Master, imp: &DiskImport, tmp: &Path) -> Result<(), ImportError> {
    let at = |e: std::io::Error| ImportError::Io(tmp.display().to_string(), e);
    let mut resp = master
        .get_transfer(imp.transfer, imp.size)
        .await
        .map_err(ImportError::Fetch)?;
    if resp.content_length().is_some_and(|n| n > imp.size) {
        return Err(ImportError::TooLong(imp.size));
    }
    let mut out = tokio::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(tmp)
        .await
        .map_err(at)?;
    let mut hasher = Sha256::new();
    let mut got = 0u64;
    loop {
        let chunk = tokio::time::timeout(STALL, resp.chunk())
            .await
            .map_err(|_| {
                ImportError::Fetch(ClientError::Transport(format!(
                    "nothing received for {} s",
                    STALL.as_secs()
                )))
            })?
            .map_err(|e| ImportError::Fetch(ClientError::Transport(e.to_string())))?;
        let Some(chunk) = chunk else { break };
        got += chunk.len() as u64;
        if got > imp.size {
            return Err(ImportError::TooLong(imp.size));
        }
        hasher.update(&chunk);
        out.write_all(&chunk).await.map_err(at)?;
    }
    out.sync_all().await.map_err(at)?;
    if got != imp.size {
        return Err(ImportError::Short {
            got,
            want: imp.size,
        });
    }
    let sha = hex::encode(hasher.finalize());
    if sha != imp.sha256.to_ascii_lowercase() {
        return Err(ImportError::Sha {
            got: sha,
            want: imp.sha256.clone(),
        });
    }
    Ok(())
}

#[cfg(test)]
#[path = "transfers_tests.rs"]
mod tests;
