//! The host's requests on the agent port (docs/guest.md, "Freeze"): a
//! `freeze` before a snapshot of a disk this guest has (cm_api::boot::
//! HostRequest), answered `frozen` (with the mount points frozen) or
//! `freeze_failed`; a `thaw` after it, answered `thawed`. Every mounted
//! file system on a block device (`/dev/...`, read-write) is frozen with
//! `fsfreeze --freeze` (busybox knows only the long options), the most deeply mounted first; the guest thaws on its own
//! after `timeout_ms` (at most `MAX_FREEZE_MS`), so a host that dies
//! mid-snapshot never leaves it frozen.
//!
//! The port is one device that only one file may have open: the heartbeat
//! writer opens it read-write and hands a copy to `serve`, which reads
//! bounded lines and writes its answers on it.

use cm_api::boot::{GuestAnswer, HostRequest, MAX_FREEZE_MS};
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use uuid::Uuid;

/// The longest request line read; a longer one is skipped to its end.
pub const MAX_LINE: usize = 4096;

/// Freezes and thaws one file system (`fsfreeze`; a recorder in tests).
pub trait Freezer: Send + Sync + 'static {
    fn freeze(&self, mount: &str) -> Result<(), String>;
    fn thaw(&self, mount: &str) -> Result<(), String>;
}

/// The busybox or util-linux `fsfreeze`.
pub struct FsFreeze;

fn fsfreeze(flag: &str, mount: &str) -> Result<(), String> {
    let out = std::process::Command::new("fsfreeze")
        .args([flag, mount])
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("fsfreeze: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let err: String = String::from_utf8_lossy(&out.stderr)
        .chars()
        .take(300)
        .collect();
    Err(format!("fsfreeze {flag} {mount}: {}", err.trim()))
}

impl Freezer for FsFreeze {
    fn freeze(&self, mount: &str) -> Result<(), String> {
        fsfreeze("--freeze", mount)
    }
    fn thaw(&self, mount: &str) -> Result<(), String> {
        fsfreeze("--unfreeze", mount)
    }
}

/// The mount points to freeze, from /proc/mounts: read-write file systems
/// on block devices (not rootfs, tmpfs, proc, sysfs, devpts...), the most
/// deeply mounted first (a parent frozen first would block its child's).
pub fn freezable(proc_mounts: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in proc_mounts.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [src, dir, _fstype, opts, ..] = f[..] else {
            continue;
        };
        if !src.starts_with("/dev/") || opts.split(',').any(|o| o == "ro") {
            continue;
        }
        // /proc/mounts escapes spaces as \040: kept as is, fsfreeze gets
        // the real name.
        let dir = dir.replace("\\040", " ");
        if !out.contains(&dir) {
            out.push(dir);
        }
    }
    out.sort_by_key(|d| std::cmp::Reverse(d.matches('/').count() + usize::from(d != "/")));
    out
}

/// Splits what the port gives into lines of at most `MAX_LINE` bytes; a
/// longer line is dropped up to its end. Never holds more than `MAX_LINE`.
#[derive(Debug, Default)]
pub struct Lines {
    buf: Vec<u8>,
    skipping: bool,
}

impl Lines {
    pub fn push(&mut self, data: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        for &b in data {
            if b == b'\n' {
                if !self.skipping {
                    out.push(String::from_utf8_lossy(&self.buf).into_owned());
                }
                self.buf.clear();
                self.skipping = false;
            } else if !self.skipping {
                if self.buf.len() >= MAX_LINE {
                    self.buf.clear();
                    self.skipping = true;
                } else {
                    self.buf.push(b);
                }
            }
        }
        out
    }
}

struct Frozen {
    id: Uuid,
    mounts: Vec<String>,
    at: std::time::Instant,
}

/// What is frozen now, and how to freeze and thaw.
pub struct Freeze<F: Freezer> {
    freezer: F,
    mounts: Box<dyn Fn() -> String + Send + Sync>,
    frozen: Mutex<Option<Frozen>>,
}

impl<F: Freezer> Freeze<F> {
    /// `mounts` reads /proc/mounts (a fixed text in tests).
    pub fn new(freezer: F, mounts: Box<dyn Fn() -> String + Send + Sync>) -> Arc<Self> {
        Arc::new(Freeze {
            freezer,
            mounts,
            frozen: Mutex::new(None),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Frozen>> {
        match self.frozen.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// The answer to one request line (None: not a request, ignored).
    pub fn handle(self: &Arc<Self>, line: &str) -> Option<GuestAnswer> {
        let req: HostRequest = serde_json::from_str(line.trim()).ok()?;
        Some(match req {
            HostRequest::Freeze { id, timeout_ms } => self.freeze(id, timeout_ms),
            HostRequest::Thaw { id } => {
                self.thaw(id);
                GuestAnswer::Thawed { id }
            }
        })
    }

    fn freeze(self: &Arc<Self>, id: Uuid, timeout_ms: u64) -> GuestAnswer {
        // A new freeze while frozen: the old one ends first.
        if let Some(old) = self.lock().take() {
            self.thaw_all(&old);
        }
        let mut done = Vec::new();
        for m in freezable(&(self.mounts)()) {
            if let Err(error) = self.freezer.freeze(&m) {
                self.thaw_all(&Frozen {
                    id,
                    mounts: done,
                    at: std::time::Instant::now(),
                });
                println!("cm-guest: freeze {id} failed: {error}");
                return GuestAnswer::FreezeFailed { id, error };
            }
            done.push(m);
        }
        // Nothing is printed while frozen: stdout may be a file on a frozen
        // file system (the thaw says it all).
        *self.lock() = Some(Frozen {
            id,
            mounts: done.clone(),
            at: std::time::Instant::now(),
        });
        // Thawed on its own if no thaw comes in time.
        let me = self.clone();
        let wait = Duration::from_millis(timeout_ms.clamp(1, MAX_FREEZE_MS));
        std::thread::spawn(move || {
            std::thread::sleep(wait);
            if me.thaw(id) {
                println!("cm-guest: no thaw from the host in time: thawed {id}");
            }
        });
        GuestAnswer::Frozen { id, mounts: done }
    }

    /// Thaw freeze `id` if it is the one in force; true if it was.
    pub fn thaw(&self, id: Uuid) -> bool {
        let mut g = self.lock();
        if g.as_ref().is_none_or(|f| f.id != id) {
            return false;
        }
        if let Some(f) = g.take() {
            drop(g);
            self.thaw_all(&f);
            println!(
                "cm-guest: froze {:?} for the host ({id}) for {} ms, thawed",
                f.mounts,
                f.at.elapsed().as_millis()
            );
        }
        true
    }

    fn thaw_all(&self, f: &Frozen) {
        for m in f.mounts.iter().rev() {
            if let Err(e) = self.freezer.thaw(m) {
                println!("cm-guest: {e}");
            }
        }
    }
}

/// Serve the host's requests read from `port` (a copy of the heartbeats'
/// open port, non-blocking) until `open` turns false. Answers are written
/// on the same port.
pub fn serve<F: Freezer>(mut port: std::fs::File, open: Arc<AtomicBool>, freeze: Arc<Freeze<F>>) {
    let mut lines = Lines::default();
    let mut chunk = [0u8; 1024];
    while open.load(Ordering::SeqCst) {
        match port.read(&mut chunk) {
            Ok(0) => std::thread::sleep(Duration::from_millis(500)),
            Ok(n) => {
                for line in lines.push(&chunk[..n]) {
                    let Some(answer) = freeze.handle(&line) else {
                        continue;
                    };
                    let Ok(mut out) = serde_json::to_vec(&answer) else {
                        continue;
                    };
                    out.push(b'\n');
                    if let Err(e) = port.write_all(&out) {
                        println!("cm-guest: answering the host: {e}");
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            // Nothing to read (non-blocking), or the host end away.
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

#[cfg(test)]
#[path = "freeze_tests.rs"]
mod tests;
