//! Writing files as root where guest users may have been before: no
//! symbolic link is ever followed below the base directory. Every path
//! component is opened relative to its parent's descriptor with
//! `O_NOFOLLOW`, missing directories are made the same way, and the file
//! is written to a fresh temporary name in its own directory, then renamed
//! over the target (so a planted link or hard link at the target's name is
//! replaced, never written through).

use rustix::fs::{AtFlags, Mode, OFlags};
use rustix::io::Errno;
use std::os::fd::OwnedFd;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum SafeFsError {
    #[error("{path}: '{component}' is not allowed in a path")]
    BadComponent { path: String, component: String },
    #[error("{path}: no file name")]
    NoName { path: String },
    #[error(
        "{path}: {at} is a symbolic link (to {target}); cm-guest does not follow links, write the real path"
    )]
    Symlink {
        path: String,
        at: String,
        target: String,
    },
    #[error("{path}: {at} is not a directory")]
    NotDir { path: String, at: String },
    #[error("{path}: {at}: {source}")]
    Io {
        path: String,
        at: String,
        source: std::io::Error,
    },
}

/// The components of `rel` (leading `/` ignored); `.` and `..` are refused.
fn components(rel: &str) -> Result<Vec<&str>, SafeFsError> {
    let mut out = Vec::new();
    for c in rel.split('/').filter(|c| !c.is_empty()) {
        if c == "." || c == ".." {
            return Err(SafeFsError::BadComponent {
                path: rel.to_string(),
                component: c.to_string(),
            });
        }
        out.push(c);
    }
    Ok(out)
}

/// `rel`'s last component and the directories leading to it.
fn named(rel: &str) -> Result<(&str, Vec<&str>), SafeFsError> {
    let mut comps = components(rel)?;
    match comps.pop() {
        Some(name) => Ok((name, comps)),
        None => Err(SafeFsError::NoName {
            path: rel.to_string(),
        }),
    }
}

struct Walk<'a> {
    path: &'a str,
    /// The components walked so far, as `/a/b`.
    at: String,
}

impl Walk<'_> {
    fn io(&self, e: impl Into<std::io::Error>) -> SafeFsError {
        SafeFsError::Io {
            path: self.path.to_string(),
            at: if self.at.is_empty() {
                "/".into()
            } else {
                self.at.clone()
            },
            source: e.into(),
        }
    }

    /// What a failed `O_NOFOLLOW` open of `name` in `dir` means.
    fn refused(&self, dir: &OwnedFd, name: &str, e: Errno) -> SafeFsError {
        let st = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW);
        match st {
            Ok(st) if rustix::fs::FileType::from_raw_mode(st.st_mode).is_symlink() => {
                let target = rustix::fs::readlinkat(dir, name, Vec::new())
                    .map(|t| t.to_string_lossy().into_owned())
                    .unwrap_or_else(|_| "?".into());
                SafeFsError::Symlink {
                    path: self.path.to_string(),
                    at: self.at.clone(),
                    target,
                }
            }
            Ok(_) if e == Errno::NOTDIR => SafeFsError::NotDir {
                path: self.path.to_string(),
                at: self.at.clone(),
            },
            _ => self.io(e),
        }
    }
}

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// Open (making it when `create`) the directory `comps` under `base`,
/// following no link on the way.
fn open_dir(
    base: &Path,
    comps: &[&str],
    create: bool,
    walk: &mut Walk<'_>,
) -> Result<OwnedFd, SafeFsError> {
    // The base itself is the caller's (`/`, or `--root DIR`): trusted.
    let mut dir = rustix::fs::open(base, DIR_FLAGS.difference(OFlags::NOFOLLOW), Mode::empty())
        .map_err(|e| walk.io(e))?;
    for c in comps {
        walk.at.push('/');
        walk.at.push_str(c);
        let next = match rustix::fs::openat(&dir, *c, DIR_FLAGS, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::NOENT) if create => {
                match rustix::fs::mkdirat(&dir, *c, Mode::from_raw_mode(0o755)) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(e) => return Err(walk.io(e)),
                }
                rustix::fs::openat(&dir, *c, DIR_FLAGS, Mode::empty())
                    .map_err(|e| walk.refused(&dir, c, e))?
            }
            Err(e) => return Err(walk.refused(&dir, c, e)),
        };
        dir = next;
    }
    Ok(dir)
}

/// Write `bytes` with `mode` to `rel` under `base`, making missing parent
/// directories (0755), following no symbolic link below `base`.
pub fn write(base: &Path, rel: &str, bytes: &[u8], mode: u32) -> Result<(), SafeFsError> {
    let (name, parents) = named(rel)?;
    let mut walk = Walk {
        path: rel,
        at: String::new(),
    };
    let dir = open_dir(base, &parents, true, &mut walk)?;
    walk.at.push('/');
    walk.at.push_str(name);
    // The temporary file is made beside the target in the directory just
    // walked (O_EXCL | O_NOFOLLOW on a fresh random name), renamed over it
    // and the directory fsynced, all through `dir`: nothing is looked up
    // by name again (durable-fs).
    durable_fs::write_atomic_at(&dir, name, bytes, mode).map_err(|e| walk.io(e))
}

/// Read at most `max` bytes of `rel` under `base`, following no link;
/// `Ok(None)` when it does not exist.
pub fn read(base: &Path, rel: &str, max: u64) -> Result<Option<Vec<u8>>, SafeFsError> {
    let (name, parents) = named(rel)?;
    let mut walk = Walk {
        path: rel,
        at: String::new(),
    };
    let dir = match open_dir(base, &parents, false, &mut walk) {
        Ok(d) => d,
        Err(SafeFsError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            return Ok(None)
        }
        Err(e) => return Err(e),
    };
    walk.at.push('/');
    walk.at.push_str(name);
    let fd = match rustix::fs::openat(
        &dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(None),
        Err(e) => return Err(walk.refused(&dir, name, e)),
    };
    let mut out = Vec::new();
    std::io::Read::read_to_end(
        &mut std::io::Read::take(std::fs::File::from(fd), max),
        &mut out,
    )
    .map_err(|e| walk.io(e))?;
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};

    #[test]
    fn files_and_their_parents_are_made() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "/etc/app/conf", b"one", 0o640).unwrap();
        let p = d.path().join("etc/app/conf");
        assert_eq!(std::fs::read(&p).unwrap(), b"one");
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o640
        );
        // Replaced whole, and no temporary file is left beside it.
        write(d.path(), "/etc/app/conf", b"two", 0o644).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(d.path().join("etc/app"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec!["conf"]);
        assert_eq!(
            read(d.path(), "/etc/app/conf", 2).unwrap(),
            Some(b"tw".to_vec())
        );
        assert_eq!(read(d.path(), "/etc/none/conf", 10).unwrap(), None);
    }

    #[test]
    fn a_planted_link_in_the_path_is_not_followed() {
        let d = tempfile::tempdir().unwrap();
        // What root must not overwrite: "/etc/shadow".
        std::fs::create_dir_all(d.path().join("etc")).unwrap();
        let shadow = d.path().join("etc/shadow");
        std::fs::write(&shadow, "root:secret\n").unwrap();
        // A user's link as the file itself ...
        std::fs::create_dir_all(d.path().join("home/user")).unwrap();
        symlink(&shadow, d.path().join("home/user/notes")).unwrap();
        write(d.path(), "/home/user/notes", b"pwned\n", 0o644).unwrap();
        assert_eq!(std::fs::read_to_string(&shadow).unwrap(), "root:secret\n");
        // (the link itself was replaced by a plain file)
        let notes = d.path().join("home/user/notes");
        assert!(!std::fs::symlink_metadata(&notes)
            .unwrap()
            .file_type()
            .is_symlink());
        // ... and as a directory on the way: refused, with what it is.
        symlink(d.path().join("etc"), d.path().join("home/user/www")).unwrap();
        let e = write(d.path(), "/home/user/www/shadow", b"pwned\n", 0o644).unwrap_err();
        assert!(matches!(e, SafeFsError::Symlink { .. }), "{e}");
        assert!(
            e.to_string().contains("/home/user/www is a symbolic link"),
            "{e}"
        );
        assert_eq!(std::fs::read_to_string(&shadow).unwrap(), "root:secret\n");
        // A relative link, and a link to a directory higher up: the same.
        symlink("../../etc", d.path().join("home/user/up")).unwrap();
        assert!(write(d.path(), "/home/user/up/shadow", b"x", 0o644).is_err());
        read(d.path(), "/home/user/up/shadow", 100).unwrap_err();
        read(d.path(), "/home/user/www/shadow", 100).unwrap_err();
        assert_eq!(std::fs::read_to_string(&shadow).unwrap(), "root:secret\n");
    }

    #[test]
    fn a_hard_link_at_the_target_is_replaced_not_written_through() {
        let d = tempfile::tempdir().unwrap();
        let victim = d.path().join("victim");
        std::fs::write(&victim, "keep").unwrap();
        std::fs::create_dir_all(d.path().join("tmp")).unwrap();
        std::fs::hard_link(&victim, d.path().join("tmp/out")).unwrap();
        write(d.path(), "/tmp/out", b"new", 0o644).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
        assert_eq!(
            std::fs::read_to_string(d.path().join("tmp/out")).unwrap(),
            "new"
        );
    }

    #[test]
    fn dot_dot_and_nameless_paths_are_refused() {
        let d = tempfile::tempdir().unwrap();
        for bad in ["/etc/../shadow", "/./x", "/", ""] {
            assert!(write(d.path(), bad, b"x", 0o644).is_err(), "{bad}");
        }
        std::fs::write(d.path().join("file"), "").unwrap();
        let e = write(d.path(), "/file/x", b"x", 0o644).unwrap_err();
        assert!(matches!(e, SafeFsError::NotDir { .. }), "{e}");
    }
}
