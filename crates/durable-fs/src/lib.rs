//! Durable replacement of whole files, the one way every daemon and agent
//! of cloudmaster writes a file that must survive a crash (a token, a
//! state file, a cached image, a file a guest configuration asks for).
//!
//! The new content goes to a fresh temporary file in the target's own
//! directory (created with `O_EXCL | O_NOFOLLOW`, mode 0600 while it is
//! written), which is fsynced, given its final mode, renamed over the
//! target, and then the directory is fsynced so that the rename itself is
//! on disk. A crash at any point leaves the old file or the new one, never
//! half of one; an error removes the temporary file.
//!
//! [`write_atomic`] takes a path. [`write_atomic_at`] takes a directory
//! the caller has already opened (cm-guest's walk that follows no symbolic
//! link), so that nothing is resolved by name again. [`AtomicFile`] is the
//! same for content written in pieces (a download), and [`persist`]
//! publishes a file another program wrote (qemu-img).

use rustix::fs::{AtFlags, Mode, OFlags};
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

/// How many fresh names are tried before giving up (each is 64 random bits:
/// a clash means someone plants names in the directory).
const NAME_TRIES: usize = 8;

/// Replace `path` with `bytes`, mode `mode` (exactly: no umask applies).
/// The parent directory is opened by path, as any write of `path` would.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let (dir, name) = open_parent(path)?;
    write_atomic_at(&dir, name, bytes, mode)
}

/// Replace `name` (one path component) in the open directory `dir`.
pub fn write_atomic_at(dir: impl AsFd, name: &str, bytes: &[u8], mode: u32) -> io::Result<()> {
    let mut f = AtomicFile::create_at(dir.as_fd(), name, mode)?;
    f.file().write_all(bytes)?;
    f.commit()
}

/// Publish `tmp`, a complete file another program wrote, as `target` in
/// the same directory: fsync it, rename it over, fsync the directory.
pub fn persist(tmp: &Path, target: &Path) -> io::Result<()> {
    File::open(tmp)?.sync_all()?;
    std::fs::rename(tmp, target)?;
    let (dir, _) = open_parent(target)?;
    rustix::fs::fsync(&dir)?;
    Ok(())
}

/// A temporary file that replaces its target on [`AtomicFile::commit`]
/// and is removed when dropped without one.
#[derive(Debug)]
pub struct AtomicFile {
    dir: OwnedFd,
    name: String,
    tmp: String,
    mode: u32,
    file: File,
    committed: bool,
}

impl AtomicFile {
    /// Start replacing `path` (its parent opened by path).
    pub fn create(path: &Path, mode: u32) -> io::Result<AtomicFile> {
        let (dir, name) = open_parent(path)?;
        AtomicFile::create_at(dir.as_fd(), name, mode)
    }

    /// Start replacing `name` in the open directory `dir`.
    pub fn create_at(dir: BorrowedFd<'_>, name: &str, mode: u32) -> io::Result<AtomicFile> {
        check_name(name)?;
        let dir = dir.try_clone_to_owned()?;
        for _ in 0..NAME_TRIES {
            let tmp = format!(".{name}.{:016x}.tmp", random_u64());
            match rustix::fs::openat(
                &dir,
                tmp.as_str(),
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            ) {
                Ok(fd) => {
                    return Ok(AtomicFile {
                        dir,
                        name: name.to_string(),
                        tmp,
                        mode,
                        file: File::from(fd),
                        committed: false,
                    })
                }
                Err(rustix::io::Errno::EXIST) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "no free temporary name",
        ))
    }

    /// The temporary file, to write the new content into.
    pub fn file(&mut self) -> &mut File {
        &mut self.file
    }

    /// Sync the content, set the mode, rename over the target, sync the
    /// directory. On an error the target is untouched and the temporary
    /// file removed.
    pub fn commit(mut self) -> io::Result<()> {
        self.file.flush()?;
        rustix::fs::fchmod(&self.file, Mode::from_raw_mode(self.mode))?;
        self.file.sync_all()?;
        rustix::fs::renameat(&self.dir, self.tmp.as_str(), &self.dir, self.name.as_str())?;
        self.committed = true;
        rustix::fs::fsync(&self.dir)?;
        Ok(())
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if !self.committed {
            // Best effort: the error being reported matters more.
            let _ = rustix::fs::unlinkat(&self.dir, self.tmp.as_str(), AtFlags::empty());
        }
    }
}

/// The parent directory of `path`, opened, and the last component.
fn open_parent(path: &Path) -> io::Result<(OwnedFd, &str)> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| invalid(format!("{}: no file name", path.display())))?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let dir = rustix::fs::open(
        parent,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    Ok((dir, name))
}

fn check_name(name: &str) -> io::Result<()> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(invalid(format!("{name:?} is not a file name")));
    }
    Ok(())
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

/// 64 random bits for a temporary name; the clock and a counter when the
/// kernel has no randomness to give (O_EXCL keeps a clash harmless).
fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    match rustix::rand::getrandom(&mut b, rustix::rand::GetRandomFlags::NONBLOCK) {
        Ok(8) => u64::from_le_bytes(b),
        _ => {
            static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            (u64::from(std::process::id()) << 32) ^ u64::from(nanos) ^ seq.rotate_left(17)
        }
    }
}

#[cfg(test)]
mod tests;
