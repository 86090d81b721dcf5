//! A backup chain: the files `NNNN-ID.qcow2` of one directory, the first a
//! full copy, each later one either an increment over the one before it
//! (relative backing name, `-F qcow2`) or a full copy again. Files are only
//! added at the end (written as `.part`, synced, renamed) or dropped at the
//! start (after the next one is made standalone), so `qemu-img convert` of
//! any file gives the whole disk at that backup. A `pending` file holds the
//! id of a backup under way: one that finds it there knows the previous one
//! was cut short and the disk's bitmap no longer matches the chain.

use super::{img, BackupError};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use uuid::Uuid;

const PENDING: &str = "pending";
/// What `pending` holds (before the id) when the newest backup was removed.
pub const REMOVED: &str = "removed ";
const LOCK: &str = "lock";
const PART: &str = ".part";
/// How many times (20 ms apart) the chain's lock is tried.
const LOCK_TRIES: u32 = 25;

/// One backup of a chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupFile {
    pub seq: u64,
    pub id: Uuid,
    pub path: PathBuf,
}

impl BackupFile {
    pub fn name(&self) -> String {
        file_name(self.seq, self.id)
    }
}

fn file_name(seq: u64, id: Uuid) -> String {
    format!("{seq:04}-{id}.qcow2")
}

/// `NNNN-UUID.qcow2` into its number and id; anything else is not ours.
fn parse_name(name: &str) -> Option<(u64, Uuid)> {
    let stem = name.strip_suffix(".qcow2")?;
    let (seq, id) = stem.split_once('-')?;
    if seq.is_empty() || !seq.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((seq.parse().ok()?, Uuid::parse_str(id).ok()?))
}

/// A backup as a listing shows it.
#[cfg(test)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detail {
    pub file: BackupFile,
    pub full: bool,
    pub virtual_size: u64,
    pub file_bytes: u64,
}

/// An open chain, held exclusively (`flock` on `DIR/lock`) while it lives:
/// two backups of one chain never run at once.
pub struct Chain {
    dir: PathBuf,
    _lock: std::fs::File,
}

impl Chain {
    /// Open (made when missing) the chain `name` under `root`. A `.part`
    /// (or an rsync's temporary `.NAME.XXXXXX`) left by a crash is removed:
    /// it was never part of the chain.
    pub fn open(root: &Path, name: &str) -> Result<Chain, BackupError> {
        if name.is_empty()
            || name.starts_with('.')
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        {
            return Err(BackupError::BadName(name.to_string()));
        }
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
        let lock_path = dir.join(LOCK);
        let lock = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|e| io(&lock_path, e))?;
        // A child another thread forks holds a copy of the descriptor (and
        // so the lock) until it execs: a few tries before "busy".
        let mut tries = 0;
        // SAFETY: flock on a descriptor we own; no memory is involved.
        while unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            tries += 1;
            if tries == LOCK_TRIES {
                return Err(BackupError::Busy(dir.display().to_string()));
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let chain = Chain { dir, _lock: lock };
        for entry in std::fs::read_dir(&chain.dir).map_err(|e| io(&chain.dir, e))? {
            let entry = entry.map_err(|e| io(&chain.dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            // A `.part` of ours, or a temporary file of an rsync fetching
            // the chain back (`.NAME.XXXXXX`, backup/mirror.rs) cut short.
            if name.ends_with(PART) || (name.starts_with('.') && entry.path().is_file()) {
                let p = entry.path();
                std::fs::remove_file(&p).map_err(|e| io(&p, e))?;
            }
        }
        Ok(chain)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The backups, oldest first.
    pub fn list(&self) -> Result<Vec<BackupFile>, BackupError> {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(|e| io(&self.dir, e))? {
            let entry = entry.map_err(|e| io(&self.dir, e))?;
            let name = entry.file_name();
            if let Some((seq, id)) = name.to_str().and_then(parse_name) {
                files.push(BackupFile {
                    seq,
                    id,
                    path: entry.path(),
                });
            }
        }
        files.sort_by_key(|f| f.seq);
        Ok(files)
    }

    #[cfg(test)]
    /// Each backup with what a listing shows: whether it is a full copy
    /// (no backing file), the disk's size, the bytes its file takes.
    pub fn details(&self) -> Result<Vec<Detail>, BackupError> {
        self.list()?
            .into_iter()
            .map(|file| {
                let info = img::info(&file.path, true)?;
                let meta = std::fs::metadata(&file.path).map_err(|e| io(&file.path, e))?;
                Ok(Detail {
                    full: info.backing.is_none(),
                    virtual_size: info.virtual_size,
                    file_bytes: std::os::unix::fs::MetadataExt::blocks(&meta) * 512,
                    file,
                })
            })
            .collect()
    }

    /// The backup with this id.
    pub fn find(&self, id: Uuid) -> Result<BackupFile, BackupError> {
        self.list()?
            .into_iter()
            .find(|f| f.id == id)
            .ok_or(BackupError::NoSuchBackup(id))
    }

    /// The file the next backup takes, after `last`.
    pub fn next(&self, last: Option<&BackupFile>, id: Uuid) -> BackupFile {
        let seq = last.map_or(1, |l| l.seq + 1);
        BackupFile {
            seq,
            id,
            path: self.dir.join(file_name(seq, id)),
        }
    }

    /// Where a backup is written before it joins the chain.
    pub fn part(file: &BackupFile) -> PathBuf {
        let mut p = file.path.clone().into_os_string();
        p.push(PART);
        PathBuf::from(p)
    }

    /// The id of a backup that started and never finished, if any.
    pub fn pending(&self) -> Result<Option<String>, BackupError> {
        let p = self.dir.join(PENDING);
        match std::fs::read(&p) {
            Ok(b) => Ok(Some(
                String::from_utf8_lossy(&b[..b.len().min(64)])
                    .trim()
                    .to_string(),
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(&p, e)),
        }
    }

    pub fn set_pending(&self, id: Uuid) -> Result<(), BackupError> {
        let p = self.dir.join(PENDING);
        durable_fs::write_atomic(&p, format!("{id}\n").as_bytes(), 0o600).map_err(|e| io(&p, e))
    }

    pub fn clear_pending(&self) -> Result<(), BackupError> {
        let p = self.dir.join(PENDING);
        match std::fs::remove_file(&p) {
            Ok(()) => sync_dir(&self.dir),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(&p, e)),
        }
    }

    /// Publish a written `.part` as `file`: synced, renamed, dir synced.
    pub fn publish(&self, file: &BackupFile) -> Result<(), BackupError> {
        durable_fs::persist(&Chain::part(file), &file.path).map_err(|e| io(&file.path, e))
    }

    #[cfg(test)]
    /// Keep the newest `keep` backups: the oldest kept one is made
    /// standalone first (when it is an increment), then the older ones are
    /// removed oldest first. Returns the ids removed.
    pub fn retain(&self, keep: usize) -> Result<Vec<Uuid>, BackupError> {
        if keep == 0 {
            return Err(BackupError::BadKeep);
        }
        let files = self.list()?;
        if files.len() <= keep {
            return Ok(Vec::new());
        }
        let drop = files.len() - keep;
        let oldest = &files[drop];
        if img::info(&oldest.path, true)?.backing.is_some() {
            img::rebase_standalone(&oldest.path)?;
        }
        let mut removed = Vec::new();
        for f in &files[..drop] {
            std::fs::remove_file(&f.path).map_err(|e| io(&f.path, e))?;
            removed.push(f.id);
        }
        sync_dir(&self.dir)?;
        Ok(removed)
    }

    /// Remove backup `id` (gone already: nothing to do); the newest one
    /// leaves `pending` saying so (the next backup is full). The next backup,
    /// when it is an increment over this one, is first rebased (safe mode)
    /// onto the one before, or made standalone when there is none: at no
    /// point does a remaining file lack its backing. Its record
    /// (`ID.json`, backup/record.rs) goes with it.
    pub fn remove(&self, id: Uuid) -> Result<(), BackupError> {
        let files = self.list()?;
        let Some(i) = files.iter().position(|f| f.id == id) else {
            super::record::remove(&self.dir, id)?;
            return Ok(());
        };
        if let Some(next) = files.get(i + 1) {
            let backing = img::info(&next.path, true)?.backing;
            if backing.as_deref() == Some(files[i].name().as_str()) {
                match i.checked_sub(1).map(|p| &files[p]) {
                    Some(prev) => img::rebase_onto(&next.path, &prev.name())?,
                    None => img::rebase_standalone(&next.path)?,
                }
            }
        }
        let f = &files[i];
        if i + 1 == files.len() && self.pending()?.is_none() {
            // The disk's bitmap counts from this one: the next backup must
            // be full. Said before the file goes (a crash between: full).
            let p = self.dir.join(PENDING);
            durable_fs::write_atomic(&p, format!("{REMOVED}{id}\n").as_bytes(), 0o600)
                .map_err(|e| io(&p, e))?;
        }
        std::fs::remove_file(&f.path).map_err(|e| io(&f.path, e))?;
        sync_dir(&self.dir)?;
        super::record::remove(&self.dir, id)
    }

    /// The disk as it was at backup `id`, as one standalone qcow2 at `dst`
    /// (written as `dst.part`, synced, renamed).
    pub fn flatten(&self, id: Uuid, dst: &Path) -> Result<(), BackupError> {
        let src = self.find(id)?;
        let mut part = dst.as_os_str().to_owned();
        part.push(PART);
        let part = PathBuf::from(part);
        let _ = std::fs::remove_file(&part);
        img::convert(&src.path, &part)
            .and_then(|()| durable_fs::persist(&part, dst).map_err(|e| io(dst, e)))
            .inspect_err(|_| {
                let _ = std::fs::remove_file(&part);
            })
    }
}

fn sync_dir(dir: &Path) -> Result<(), BackupError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io(dir, e))
}

pub fn io(path: &Path, e: std::io::Error) -> BackupError {
    BackupError::Io(path.display().to_string(), e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back_and_strangers_are_ignored() {
        let id = Uuid::new_v4();
        assert_eq!(parse_name(&file_name(7, id)), Some((7, id)));
        assert_eq!(parse_name(&file_name(12345, id)), Some((12345, id)));
        assert_eq!(parse_name(&format!("0001-{id}.qcow2.part")), None);
        assert_eq!(parse_name("0001-notauuid.qcow2"), None);
        assert_eq!(parse_name(&format!("x1-{id}.qcow2")), None);
        assert_eq!(parse_name("pending"), None);
    }

    #[test]
    fn a_chain_is_held_by_one_and_bad_names_are_refused() {
        let root = tempfile::tempdir().unwrap();
        let c = Chain::open(root.path(), "vol-1").unwrap();
        assert!(matches!(
            Chain::open(root.path(), "vol-1"),
            Err(BackupError::Busy(_))
        ));
        drop(c);
        Chain::open(root.path(), "vol-1").unwrap();
        for bad in ["", "..", "a/b", ".hidden", "a b"] {
            assert!(
                matches!(Chain::open(root.path(), bad), Err(BackupError::BadName(_))),
                "{bad}"
            );
        }
    }
}
