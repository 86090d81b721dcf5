//! Watching a directory tree with inotify (rustix's bindings): a watch on
//! every directory, new subdirectories watched as they appear, and a queue
//! overflow (`IN_Q_OVERFLOW`) reported so the caller syncs in full.

use rustix::event::{PollFd, PollFlags};
use rustix::fs::inotify::{self, CreateFlags, ReadFlags, WatchFlags};
use rustix::io::Errno;
use std::collections::HashMap;
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What a change to the tree is, for inotify.
fn mask() -> WatchFlags {
    WatchFlags::CREATE
        | WatchFlags::DELETE
        | WatchFlags::MODIFY
        | WatchFlags::CLOSE_WRITE
        | WatchFlags::ATTRIB
        | WatchFlags::MOVED_FROM
        | WatchFlags::MOVED_TO
        | WatchFlags::DELETE_SELF
        | WatchFlags::MOVE_SELF
        | WatchFlags::ONLYDIR
        | WatchFlags::DONT_FOLLOW
}

/// The most events one `wait` takes (a tree that changes faster than
/// they are read cannot keep it reading for ever).
const MAX_EVENTS: usize = 32 * 1024;

/// What one `wait` saw.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    /// Events about the tree's content.
    pub changes: usize,
    /// The kernel's queue overflowed: events were lost.
    pub overflow: bool,
}

pub struct Watcher {
    fd: OwnedFd,
    root: PathBuf,
    /// Each watch's directory.
    dirs: HashMap<i32, PathBuf>,
    root_wd: Option<i32>,
    /// Why some directory could not be watched (the last reason), if one could not.
    pub unwatched: Option<String>,
}

impl Watcher {
    /// Watch `root` and every directory below it (symbolic links are not
    /// followed). Fails only when `root` itself cannot be watched.
    pub fn new(root: &Path) -> Result<Watcher, String> {
        let fd = inotify::init(CreateFlags::CLOEXEC | CreateFlags::NONBLOCK)
            .map_err(|e| format!("inotify: {e}"))?;
        let mut w = Watcher {
            fd,
            root: root.to_path_buf(),
            dirs: HashMap::new(),
            root_wd: None,
            unwatched: None,
        };
        w.add_tree(root);
        match w.root_wd {
            Some(_) => Ok(w),
            None => Err(w
                .unwatched
                .take()
                .unwrap_or_else(|| format!("cannot watch {}", root.display()))),
        }
    }

    /// How many directories are watched.
    #[cfg(test)]
    pub fn watched(&self) -> usize {
        self.dirs.len()
    }

    /// Whether the root is still watched (not deleted or moved away).
    #[cfg(test)]
    pub fn root_watched(&self) -> bool {
        self.root_wd.is_some()
    }

    /// Watch `top` and the directories below it. Watching a directory
    /// watched already gives its watch again (its path is updated).
    fn add_tree(&mut self, top: &Path) {
        let mut todo = vec![top.to_path_buf()];
        while let Some(dir) = todo.pop() {
            match inotify::add_watch(&self.fd, &dir, mask()) {
                Ok(wd) => {
                    if dir == self.root {
                        self.root_wd = Some(wd);
                    }
                    self.dirs.insert(wd, dir.clone());
                }
                // Gone already (or not a directory any more): nothing to watch.
                Err(Errno::NOENT | Errno::NOTDIR) => continue,
                Err(e) => {
                    let why = if e == Errno::NOSPC {
                        "the inotify watch limit (fs.inotify.max_user_watches) is reached".into()
                    } else {
                        e.to_string()
                    };
                    self.unwatched = Some(format!("cannot watch {}: {why}", dir.display()));
                    continue;
                }
            }
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                // The entry's own type: a link to a directory is not followed.
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    todo.push(e.path());
                }
            }
        }
    }

    /// Stop watching `dir` and everything below it (moved out of the tree).
    fn forget_tree(&mut self, dir: &Path) {
        let gone: Vec<i32> = self
            .dirs
            .iter()
            .filter(|(_, p)| p.starts_with(dir))
            .map(|(wd, _)| *wd)
            .collect();
        for wd in gone {
            self.dirs.remove(&wd);
            let _ = inotify::remove_watch(&self.fd, wd);
        }
    }

    /// The events queued now (at most `MAX_EVENTS`; the rest wait for
    /// the next call): watch, what, the name in the directory.
    #[allow(clippy::type_complexity)]
    fn read_events(&self) -> Result<Vec<(i32, ReadFlags, Option<Vec<u8>>)>, String> {
        let mut out = Vec::new();
        // Room for many events, whatever their names' length (NAME_MAX is 255).
        let mut buf = vec![MaybeUninit::<u8>::uninit(); 64 * 1024];
        let mut reader = inotify::Reader::new(&self.fd, &mut buf);
        // Whole reads only: what the kernel handed over is never dropped.
        while out.len() < MAX_EVENTS || !reader.is_buffer_empty() {
            match reader.next() {
                Ok(ev) => out.push((
                    ev.wd(),
                    ev.events(),
                    ev.file_name().map(|n| n.to_bytes().to_vec()),
                )),
                Err(Errno::AGAIN | Errno::INTR) => break,
                Err(e) => return Err(format!("inotify read: {e}")),
            }
        }
        Ok(out)
    }

    /// Wait up to `timeout` for events and take those queued.
    pub fn wait(&mut self, timeout: Duration) -> Result<Seen, String> {
        let mut seen = Seen::default();
        if self.root_wd.is_none() {
            // The root went away: watch it again once it is back.
            let root = self.root.clone();
            self.add_tree(&root);
            if self.root_wd.is_some() {
                seen.changes += 1;
            }
        }
        let ts = rustix::event::Timespec {
            tv_sec: i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX),
            tv_nsec: i64::from(timeout.subsec_nanos()),
        };
        let mut fds = [PollFd::new(&self.fd, PollFlags::IN)];
        match rustix::event::poll(&mut fds, Some(&ts)) {
            Ok(_) | Err(Errno::INTR) => {}
            Err(e) => return Err(format!("poll: {e}")),
        }
        let mut added = Vec::new();
        for (wd, flags, name) in self.read_events()? {
            if flags.contains(ReadFlags::QUEUE_OVERFLOW) {
                seen.overflow = true;
                continue;
            }
            if flags.contains(ReadFlags::IGNORED) {
                self.dirs.remove(&wd);
                if Some(wd) == self.root_wd {
                    self.root_wd = None;
                }
                continue;
            }
            seen.changes += 1;
            let (Some(dir), Some(name)) = (self.dirs.get(&wd), name) else {
                continue;
            };
            if !flags.contains(ReadFlags::ISDIR) {
                continue;
            }
            let path = dir.join(std::ffi::OsStr::from_bytes(&name));
            if flags.intersects(ReadFlags::CREATE | ReadFlags::MOVED_TO) {
                added.push(path);
            } else if flags.contains(ReadFlags::MOVED_FROM) {
                self.forget_tree(&path);
            }
        }
        for dir in added {
            self.add_tree(&dir);
        }
        if seen.overflow {
            // Directories made while events were lost are not watched yet.
            let root = self.root.clone();
            self.add_tree(&root);
        }
        Ok(seen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Wait until `wait` has seen something (or 5 s).
    fn seen(w: &mut Watcher) -> Seen {
        let mut all = Seen::default();
        for _ in 0..50 {
            let s = w.wait(Duration::from_millis(100)).unwrap();
            all.changes += s.changes;
            all.overflow |= s.overflow;
            if all.changes > 0 || all.overflow {
                break;
            }
        }
        all
    }

    #[test]
    fn new_subdirectories_are_watched_and_links_not_followed() {
        let d = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("a/b")).unwrap();
        std::os::unix::fs::symlink(outside.path(), d.path().join("link")).unwrap();
        let mut w = Watcher::new(d.path()).unwrap();
        assert_eq!(w.watched(), 3, "root, a, a/b; not the link");
        std::fs::create_dir_all(d.path().join("new/deep")).unwrap();
        assert!(seen(&mut w).changes > 0);
        // Drain, then a write deep in the new tree is seen through its own watch.
        while w.wait(Duration::from_millis(200)).unwrap().changes > 0 {}
        std::fs::write(d.path().join("new/deep/f"), "x").unwrap();
        assert!(seen(&mut w).changes > 0, "a write in a new subdirectory");
        // Nothing through the link.
        while w.wait(Duration::from_millis(200)).unwrap().changes > 0 {}
        std::fs::write(outside.path().join("g"), "x").unwrap();
        assert_eq!(w.wait(Duration::from_millis(300)).unwrap().changes, 0);
        // A directory moved away is forgotten.
        std::fs::rename(d.path().join("new"), outside.path().join("moved")).unwrap();
        assert!(seen(&mut w).changes > 0);
        assert_eq!(w.watched(), 3);
    }

    #[test]
    fn a_lost_event_queue_is_reported_as_an_overflow() {
        let limit: usize = std::fs::read_to_string("/proc/sys/fs/inotify/max_queued_events")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(16384);
        if limit > 200_000 {
            eprintln!("max_queued_events is {limit}: too many events to make here");
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let mut w = Watcher::new(d.path()).unwrap();
        // Each new file is CREATE, MODIFY, CLOSE_WRITE: distinct events
        // (the kernel merges only repeats of the last one).
        for i in 0..limit / 2 {
            std::fs::write(d.path().join(i.to_string()), "x").unwrap();
        }
        assert!(seen(&mut w).overflow);
    }

    #[test]
    fn the_root_going_away_and_coming_back_is_seen() {
        let top = tempfile::tempdir().unwrap();
        let root = top.path().join("src");
        std::fs::create_dir(&root).unwrap();
        let mut w = Watcher::new(&root).unwrap();
        std::fs::remove_dir(&root).unwrap();
        seen(&mut w);
        for _ in 0..20 {
            if !w.root_watched() {
                break;
            }
            w.wait(Duration::from_millis(50)).unwrap();
        }
        assert!(!w.root_watched());
        std::fs::create_dir(&root).unwrap();
        assert!(seen(&mut w).changes > 0);
        assert!(w.root_watched());
        assert!(Watcher::new(&top.path().join("missing")).is_err());
    }
}
