//! One agent per data dir: an exclusive `flock` on `DATA/cloudhostd.lock`,
//! released by the kernel when the process exits, however it exits.

use anyhow::Context;
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::Path;

pub struct DataDirLock {
    _file: std::fs::File,
}

impl DataDirLock {
    pub fn take(data_dir: &Path) -> anyhow::Result<DataDirLock> {
        let path = data_dir.join("cloudhostd.lock");
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        // SAFETY: flock on a descriptor we own; no memory is involved.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let mut holder = String::new();
            let _ = Read::by_ref(&mut file).take(32).read_to_string(&mut holder);
            anyhow::bail!(
                "another cloudhostd (pid {}) uses the data dir {}",
                holder.trim(),
                data_dir.display()
            );
        }
        file.set_len(0)?;
        file.rewind()?;
        write!(file, "{}", std::process::id())?;
        Ok(DataDirLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_agent_on_one_data_dir_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataDirLock::take(dir.path()).unwrap();
        let err = DataDirLock::take(dir.path()).err().unwrap().to_string();
        assert!(err.contains("another cloudhostd"), "{err}");
        assert!(err.contains(&std::process::id().to_string()), "{err}");
        drop(first);
        DataDirLock::take(dir.path()).unwrap();
    }
}
