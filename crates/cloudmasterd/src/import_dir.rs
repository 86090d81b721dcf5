//! The operator's import directory (`--image-import-dir`): the only place
//! `POST /v1/images` may name a master-side file. A path is refused unless
//! the regular file it ends at lies inside the directory: no `..`, no
//! symlink leading out, no device, FIFO or socket, nothing of /proc, /sys or
//! /dev, nothing of the master's own data dir. The check is made on the
//! opened file (its `/proc/self/fd` link), so swapping a path component for
//! a symlink between the check and the open changes nothing.

use std::fs::File;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

/// Trees no import may come from, whatever the operator names.
const FORBIDDEN: &[&str] = &["/proc", "/sys", "/dev"];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PathError {
    #[error("the path is empty")]
    Empty,
    #[error("'..' is not allowed in a path")]
    DotDot,
    #[error("no such file in the import directory")]
    NotFound,
    #[error("the path leads outside the import directory {0}")]
    Outside(String),
    #[error("the path names {0}, not a regular file")]
    NotRegular(&'static str),
    #[error("cannot open it: {0}")]
    Io(String),
}

/// What a bad `--image-import-dir` is.
#[derive(Debug, thiserror::Error)]
pub enum DirError {
    #[error("--image-import-dir {0}: {1}")]
    Unusable(String, String),
}

#[derive(Debug, Clone)]
pub struct ImportDir {
    /// Canonical: no symlink, no `..`.
    root: PathBuf,
    /// As the operator wrote it (made absolute): what people type.
    given: PathBuf,
    /// The master's data dir, canonical: never importable.
    data_dir: PathBuf,
}

fn forbidden(p: &Path) -> bool {
    FORBIDDEN.iter().any(|f| p.starts_with(f))
}

impl ImportDir {
    pub fn new(dir: &Path, data_dir: &Path) -> Result<ImportDir, DirError> {
        let bad = |why: &str| DirError::Unusable(dir.display().to_string(), why.to_string());
        let root = std::fs::canonicalize(dir).map_err(|e| bad(&e.to_string()))?;
        if !root.is_dir() {
            return Err(bad("not a directory"));
        }
        if root == Path::new("/") || forbidden(&root) {
            return Err(bad(
                "must be a directory of its own, not /, /proc, /sys or /dev",
            ));
        }
        let data_dir = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
        if data_dir.starts_with(&root) {
            return Err(bad(
                "holds the master's data dir (tokens, keys); name a directory beside it",
            ));
        }
        let given = std::path::absolute(dir).unwrap_or_else(|_| root.clone());
        Ok(ImportDir {
            root,
            given,
            data_dir,
        })
    }

    #[cfg(test)]
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Open `given` (relative to the directory, or absolute inside it) for
    /// reading. Returns the file and its size.
    pub fn open(&self, given: &str) -> Result<(File, u64), PathError> {
        if given.is_empty() || given.contains('\0') {
            return Err(PathError::Empty);
        }
        let path = Path::new(given);
        if path.components().any(|c| c == Component::ParentDir) {
            return Err(PathError::DotDot);
        }
        // Outside by its very name: refused without looking at what is there.
        if path.is_absolute() && !path.starts_with(&self.root) && !path.starts_with(&self.given) {
            return Err(PathError::Outside(self.root.display().to_string()));
        }
        let joined = if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.root.join(path)
        };
        let canonical = std::fs::canonicalize(&joined).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => PathError::NotFound,
            _ => PathError::Io(e.to_string()),
        })?;
        self.check_inside(&canonical)?;
        // O_NOFOLLOW: the last component cannot have become a symlink;
        // O_NONBLOCK: a FIFO put there does not hang the open.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&canonical)
            .map_err(|e| PathError::Io(e.to_string()))?;
        let meta = file.metadata().map_err(|e| PathError::Io(e.to_string()))?;
        let ft = meta.file_type();
        if !ft.is_file() {
            return Err(PathError::NotRegular(if ft.is_dir() {
                "a directory"
            } else if ft.is_block_device() || ft.is_char_device() {
                "a device"
            } else if ft.is_fifo() {
                "a FIFO"
            } else if ft.is_socket() {
                "a socket"
            } else {
                "something else"
            }));
        }
        // What was opened, not what the path said a moment ago.
        let opened = std::fs::read_link(format!("/proc/self/fd/{}", raw_fd(&file)))
            .map_err(|e| PathError::Io(format!("cannot check the opened file: {e}")))?;
        self.check_inside(&opened)?;
        Ok((file, meta.len()))
    }

    fn check_inside(&self, canonical: &Path) -> Result<(), PathError> {
        if !canonical.starts_with(&self.root)
            || canonical == self.root
            || forbidden(canonical)
            || canonical.starts_with(&self.data_dir)
        {
            return Err(PathError::Outside(self.root.display().to_string()));
        }
        Ok(())
    }
}

fn raw_fd(f: &File) -> i32 {
    use std::os::fd::AsRawFd;
    f.as_raw_fd()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    struct Fixture {
        _tmp: tempfile::TempDir,
        dir: ImportDir,
        root: PathBuf,
    }

    fn fixture() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("import");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("disk.qcow2"), b"0123456789").unwrap();
        std::fs::write(root.join("sub/vmlinuz"), b"kernel").unwrap();
        let data = tmp.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let dir = ImportDir::new(&root, &data).unwrap();
        let root = dir.root().to_path_buf();
        Fixture {
            _tmp: tmp,
            dir,
            root,
        }
    }

    #[test]
    fn files_inside_are_opened_by_relative_or_absolute_path() {
        let f = fixture();
        let (_, size) = f.dir.open("disk.qcow2").unwrap();
        assert_eq!(size, 10);
        let (_, size) = f.dir.open("sub/vmlinuz").unwrap();
        assert_eq!(size, 6);
        let abs = f.root.join("sub/vmlinuz");
        f.dir.open(&abs.to_string_lossy()).unwrap();
        // A symlink that stays inside is followed.
        symlink(f.root.join("disk.qcow2"), f.root.join("sub/alias")).unwrap();
        assert_eq!(f.dir.open("sub/alias").unwrap().1, 10);
    }

    #[test]
    fn a_symlinked_import_dir_is_named_either_way() {
        let f = fixture();
        let tmp = tempfile::tempdir().unwrap();
        let link = tmp.path().join("images");
        symlink(&f.root, &link).unwrap();
        let dir = ImportDir::new(&link, tmp.path()).unwrap();
        dir.open(&link.join("disk.qcow2").to_string_lossy())
            .unwrap();
        dir.open(&f.root.join("disk.qcow2").to_string_lossy())
            .unwrap();
        dir.open("disk.qcow2").unwrap();
    }

    #[test]
    fn paths_outside_are_refused() {
        let f = fixture();
        for p in [
            "/etc/shadow",
            "/etc/passwd",
            "/proc/self/environ",
            "/dev/zero",
        ] {
            assert!(
                matches!(f.dir.open(p), Err(PathError::Outside(_))),
                "{p}: {:?}",
                f.dir.open(p).map(|x| x.1)
            );
        }
        assert_eq!(f.dir.open("../data/x").unwrap_err(), PathError::DotDot);
        assert_eq!(
            f.dir.open("sub/../disk.qcow2").unwrap_err(),
            PathError::DotDot
        );
        assert_eq!(f.dir.open("").unwrap_err(), PathError::Empty);
        assert_eq!(f.dir.open("nope").unwrap_err(), PathError::NotFound);
        // The directory itself is not a file in it.
        assert!(matches!(
            f.dir.open(&f.root.to_string_lossy()),
            Err(PathError::Outside(_))
        ));
    }

    #[test]
    fn symlinks_leading_out_are_refused() {
        let f = fixture();
        symlink("/etc/passwd", f.root.join("passwd")).unwrap();
        symlink("/proc/self/environ", f.root.join("env")).unwrap();
        symlink("/etc", f.root.join("etc")).unwrap();
        for p in ["passwd", "env", "etc/passwd"] {
            assert!(
                matches!(f.dir.open(p), Err(PathError::Outside(_))),
                "{p} was not refused"
            );
        }
    }

    #[test]
    fn only_regular_files_are_opened() {
        let f = fixture();
        assert_eq!(
            f.dir.open("sub").unwrap_err(),
            PathError::NotRegular("a directory")
        );
        let fifo = f.root.join("fifo");
        let c = std::ffi::CString::new(fifo.to_string_lossy().as_bytes()).unwrap();
        // SAFETY: a valid C string; mkfifo has no other preconditions.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        // Refused at once, without waiting for a writer.
        assert_eq!(
            f.dir.open("fifo").unwrap_err(),
            PathError::NotRegular("a FIFO")
        );
        symlink("/dev/null", f.root.join("null")).unwrap();
        f.dir.open("null").unwrap_err();
    }

    #[test]
    fn unusable_directories_are_refused_at_start() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        ImportDir::new(Path::new("/"), &data).unwrap_err();
        ImportDir::new(Path::new("/proc"), &data).unwrap_err();
        ImportDir::new(Path::new("/dev"), &data).unwrap_err();
        ImportDir::new(&tmp.path().join("missing"), &data).unwrap_err();
        // The data dir (tokens, keys) or a directory holding it.
        ImportDir::new(&data, &data).unwrap_err();
        ImportDir::new(tmp.path(), &data).unwrap_err();
        let file = tmp.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        ImportDir::new(&file, &data).unwrap_err();
    }
}
