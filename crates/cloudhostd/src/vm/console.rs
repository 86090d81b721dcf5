//! The serial console's log, capped per VM.
//!
//! QEMU writes `console.log` itself (the chardev's `logfile`, opened with
//! `O_APPEND` so that it lasts across boots) and cannot cap it. The agent
//! does: when `console.log` holds more than half the cap, its last half
//! goes to `console.log.1` (written beside it, renamed over the old one)
//! and `console.log` is emptied in place. QEMU's next write lands at the
//! new end, offset 0, because of `O_APPEND`. The two files together hold
//! the latest output, at most the cap plus what the guest writes between
//! two looks (`CHECK_EVERY`). Bytes written in the few microseconds between
//! the last copy and the truncation are lost, as with logrotate's
//! `copytruncate`. While the agent is stopped nothing trims the log; the
//! first look after its start does.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

/// How often each VM's log is looked at.
pub const CHECK_EVERY: Duration = Duration::from_millis(250);

/// Held while files move, so a reader of the tail sees them whole.
static ROTATING: Mutex<()> = Mutex::new(());

fn rotating() -> std::sync::MutexGuard<'static, ()> {
    match ROTATING.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// One VM's console log files.
#[derive(Debug, Clone)]
pub struct ConsoleFiles {
    /// What QEMU appends to.
    pub live: PathBuf,
    /// The older half.
    pub old: PathBuf,
}

impl ConsoleFiles {
    pub fn new(live: PathBuf) -> ConsoleFiles {
        let mut old = live.clone().into_os_string();
        old.push(".1");
        ConsoleFiles {
            live,
            old: PathBuf::from(old),
        }
    }

    /// Rotate if the live file holds more than half of `max` bytes.
    /// Returns whether it did.
    pub fn enforce(&self, max: u64) -> io::Result<bool> {
        let half = max / 2;
        let len = match std::fs::metadata(&self.live) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        if len <= half {
            return Ok(false);
        }
        let _g = rotating();
        let mut src = File::open(&self.live)?;
        let mode = src.metadata()?.permissions().mode() & 0o7777;
        // The old half replaced whole: a crash keeps the previous one.
        let mut old = durable_fs::AtomicFile::create(&self.old, mode)?;
        let dst = old.file();
        let mut end = len;
        src.seek(SeekFrom::Start(end.saturating_sub(half)))?;
        io::copy(
            &mut (&mut src).take(end - end.saturating_sub(half)),
            &mut *dst,
        )?;
        // Catch up with what came meanwhile, so that the window in which a
        // write can be lost is as short as the last of these rounds.
        for _ in 0..3 {
            let now = src.metadata()?.len();
            if now <= end {
                break;
            }
            src.seek(SeekFrom::Start(end))?;
            io::copy(&mut (&mut src).take(now - end), &mut *dst)?;
            end = now;
        }
        old.commit()?;
        OpenOptions::new()
            .write(true)
            .open(&self.live)?
            .set_len(0)?;
        Ok(true)
    }

    /// The last `max_bytes` of the log (older half, then live), the size
    /// of both, and whether the tail is less than what they hold. None when
    /// there is no log at all.
    pub fn tail(&self, max_bytes: u64) -> io::Result<Option<Tail>> {
        let _g = rotating();
        let open = |p: &Path| match File::open(p) {
            Ok(f) => Ok(Some(f)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        };
        let (old, live) = (open(&self.old)?, open(&self.live)?);
        if old.is_none() && live.is_none() {
            return Ok(None);
        }
        let len = |f: &Option<File>| -> io::Result<u64> {
            Ok(match f {
                Some(f) => f.metadata()?.len(),
                None => 0,
            })
        };
        let (old_len, live_len) = (len(&old)?, len(&live)?);
        let mut buf = Vec::new();
        let from_live = live_len.min(max_bytes);
        let from_old = old_len.min(max_bytes - from_live);
        for (f, flen, take) in [(old, old_len, from_old), (live, live_len, from_live)] {
            if let (Some(mut f), true) = (f, take > 0) {
                f.seek(SeekFrom::Start(flen - take))?;
                f.take(take).read_to_end(&mut buf)?;
            }
        }
        Ok(Some(Tail {
            size: old_len + live_len,
            truncated: from_old + from_live < old_len + live_len,
            bytes: buf,
        }))
    }
}

#[derive(Debug)]
pub struct Tail {
    pub bytes: Vec<u8>,
    /// What the log holds on the host, both files.
    pub size: u64,
    pub truncated: bool,
}

/// Keep a VM's log under `max` for as long as its directory exists.
pub async fn keep_bounded(files: ConsoleFiles, max: u64) {
    let mut warned = false;
    loop {
        if !files.live.parent().map(Path::exists).unwrap_or(false) {
            return;
        }
        let f = files.clone();
        match tokio::task::spawn_blocking(move || f.enforce(max)).await {
            Ok(Err(e)) if !warned => {
                tracing::warn!("{}: cannot trim: {e}", files.live.display());
                warned = true;
            }
            Ok(Ok(_)) => warned = false,
            _ => {}
        }
        tokio::time::sleep(CHECK_EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn append(p: &Path, data: &[u8]) {
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .unwrap();
        f.write_all(data).unwrap();
    }

    #[test]
    fn the_log_keeps_its_latest_output_under_the_cap() {
        let d = tempfile::tempdir().unwrap();
        let files = ConsoleFiles::new(d.path().join("console.log"));
        assert!(files.tail(100).unwrap().is_none());
        // A writer that keeps its file open with O_APPEND, as QEMU does.
        let mut qemu = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&files.live)
            .unwrap();
        let max = 1000;
        let mut written = Vec::new();
        for i in 0..500 {
            let line = format!("line {i:05}\n");
            qemu.write_all(line.as_bytes()).unwrap();
            written.extend_from_slice(line.as_bytes());
            files.enforce(max).unwrap();
            let size = std::fs::metadata(&files.live).unwrap().len()
                + std::fs::metadata(&files.old).map(|m| m.len()).unwrap_or(0);
            assert!(size <= max + 11, "{size} bytes kept after line {i}");
        }
        let tail = files.tail(u64::MAX).unwrap().unwrap();
        assert!(!tail.truncated);
        assert!(tail.size >= max / 2 && tail.size <= max);
        assert!(
            written.ends_with(&tail.bytes),
            "the kept log is the end of what was written, in order"
        );
        // A short tail comes from the live file, a longer one spans both.
        let short = files.tail(11).unwrap().unwrap();
        assert_eq!(short.bytes, b"line 00499\n");
        assert!(short.truncated);
        let live_len = std::fs::metadata(&files.live).unwrap().len();
        let both = files.tail(live_len + 11).unwrap().unwrap();
        assert!(written.ends_with(&both.bytes));
        assert_eq!(both.bytes.len() as u64, live_len + 11);
        // Nothing but the two logs: no temporary file left by the rotations.
        let mut names: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        assert_eq!(names, ["console.log", "console.log.1"]);
    }

    #[test]
    fn a_log_grown_while_the_agent_was_away_is_cut_to_its_last_half() {
        let d = tempfile::tempdir().unwrap();
        let files = ConsoleFiles::new(d.path().join("console.log"));
        append(&files.live, &vec![b'a'; 10_000]);
        append(&files.live, b"the end\n");
        assert!(files.enforce(1000).unwrap());
        assert_eq!(std::fs::metadata(&files.live).unwrap().len(), 0);
        let old = std::fs::read(&files.old).unwrap();
        assert_eq!(old.len(), 500);
        assert!(old.ends_with(b"the end\n"));
        assert!(!files.enforce(1000).unwrap(), "nothing more to do");
        append(&files.live, b"after\n");
        let t = files.tail(1000).unwrap().unwrap();
        assert!(t.bytes.ends_with(b"the end\nafter\n"));
        assert_eq!(t.size, 506);
    }
}
