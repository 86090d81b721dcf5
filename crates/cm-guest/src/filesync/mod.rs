//! `[[sync]]`: keep a directory copied to another (usually an attached
//! volume) within seconds of each change, the seed's "rsync + inotify"
//! method (seed 002, 2.1.2 and 2.1.3; docs/guest.md). One thread per sync
//! watches its source (watch.rs), waits for the changes to settle, and runs
//! rsync (rsync.rs), never two at once; a change during a run brings one
//! more run after it. Each sync is reported in the heartbeats as the
//! service `sync:SOURCE`.

pub mod rsync;
pub mod spec;
mod watch;

use cm_api::boot::ServiceState;
use cm_api::words::KnownServiceStatus as S;
use rsync::RsyncError;
use spec::{under, SyncSpec};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use watch::Watcher;

/// The back-off after a failed run: 1 s doubling to this.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// How often a tree with directories inotify could not watch is synced in
/// full anyway.
const UNWATCHED_EVERY: Duration = Duration::from_secs(60);
/// How often a thread looks at its stop flag while nothing happens.
const TICK: Duration = Duration::from_millis(100);

/// The longest detail a heartbeat carries for a sync (a heartbeat is one
/// line, which the host reads up to 64 KiB).
const MAX_DETAIL: usize = 512;

/// `s` cut to at most `MAX_DETAIL` bytes, on a character boundary.
fn short(s: &str) -> String {
    if s.len() <= MAX_DETAIL {
        return s.to_string();
    }
    let mut end = MAX_DETAIL - 3;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// A sync's state as the heartbeats say it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub state: S,
    pub detail: Option<String>,
    /// rsync runs that ended (in success or failure).
    pub runs: u64,
}

struct Running {
    spec: SyncSpec,
    status: Arc<Mutex<Status>>,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

/// Every sync of the applied config.
pub struct Syncer {
    root: PathBuf,
    rsync: PathBuf,
    syncs: Mutex<BTreeMap<String, Running>>,
}

fn say(line: &str) {
    println!("cm-guest: {line}");
}

fn update(status: &Mutex<Status>, f: impl FnOnce(&mut Status)) {
    let mut s = match status.lock() {
        Ok(s) => s,
        Err(p) => p.into_inner(),
    };
    f(&mut s);
}

/// Longest a change waits for quiet before it is synced anyway, so a tree
/// that never stops changing is still copied.
fn max_wait(delay: Duration) -> Duration {
    (delay * 4).max(Duration::from_secs(2))
}

/// One sync's life, until `stop`.
fn worker(
    root: PathBuf,
    rsync: PathBuf,
    spec: SyncSpec,
    status: Arc<Mutex<Status>>,
    stop: Arc<AtomicBool>,
) {
    let label = format!("sync {} -> {}", spec.source, spec.target);
    let delay = Duration::from_millis(spec.delay_ms);
    let src = under(&root, &spec.source);
    let mut backoff = Duration::from_secs(1);
    let mut watcher: Option<Watcher> = None;
    // Unsynced changes: since when, and when they will have been quiet
    // for `delay`. The first full sync is due at once.
    let mut dirty: Option<(Instant, Instant)> = Some((Instant::now(), Instant::now()));
    let mut retry_at = Instant::now();
    let mut last_run = Instant::now();
    let mut first = true;
    let due = |dirty: Option<(Instant, Instant)>, retry_at: Instant| {
        dirty.map(|(since, quiet)| quiet.min(since + max_wait(delay)).max(retry_at))
    };
    while !stop.load(Ordering::SeqCst) {
        if watcher.is_none() {
            match Watcher::new(&src) {
                Ok(w) => watcher = Some(w),
                Err(e) => {
                    let why = format!("{e}; trying again in {}s", backoff.as_secs());
                    fail(&status, &label, &why);
                    sleep_unless(&stop, backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            }
        }
        let Some(w) = watcher.as_mut() else { continue };
        let wait = due(dirty, retry_at).map_or(TICK, |d| {
            d.saturating_duration_since(Instant::now()).min(TICK)
        });
        match w.wait(wait) {
            Ok(seen) if seen.changes > 0 || seen.overflow => {
                let now = Instant::now();
                dirty = Some((dirty.map_or(now, |(since, _)| since), now + delay));
            }
            // Some directory is not watched (the watch limit): its changes
            // are copied by a full run every `UNWATCHED_EVERY`.
            Ok(_) if w.unwatched.is_some() && dirty.is_none() => {
                if last_run.elapsed() >= UNWATCHED_EVERY {
                    let now = Instant::now();
                    dirty = Some((now, now));
                }
            }
            Ok(_) => {}
            Err(e) => {
                // The watch itself broke: start it again, and sync in full.
                say(&format!("{label}: {e}; watching again"));
                watcher = None;
                dirty = Some((Instant::now(), Instant::now()));
                continue;
            }
        }
        if due(dirty, retry_at).is_none_or(|d| Instant::now() < d) {
            continue;
        }
        // Changes from here on are news for the next run.
        dirty = None;
        let unwatched = w.unwatched.clone();
        let ran = rsync::run(&rsync, &root, &spec, &stop);
        last_run = Instant::now();
        match ran {
            Ok(done) => {
                backoff = Duration::from_secs(1);
                if first || done.files > 0 || done.deleted > 0 {
                    say(&format!("{label}: {done}"));
                }
                first = false;
                update(&status, |s| {
                    s.state = S::Running;
                    s.runs += 1;
                    s.detail = Some(match &unwatched {
                        None => format!("last run: {done}"),
                        Some(why) => format!("last run: {done}; {why}"),
                    });
                });
            }
            Err(RsyncError::Cancelled) => break,
            Err(e) => {
                let why = format!("{e}; retrying in {}s", backoff.as_secs());
                fail(&status, &label, &why);
                update(&status, |s| s.runs += 1);
                let now = Instant::now();
                dirty = Some((now, now));
                retry_at = now + backoff;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
    update(&status, |s| {
        s.state = S::Stopped;
        s.detail = None;
    });
}

fn fail(status: &Mutex<Status>, label: &str, why: &str) {
    say(&format!("{label}: {why}"));
    update(status, |s| {
        s.state = S::Failed;
        s.detail = Some(why.to_string());
    });
}

/// Sleep `d` unless `stop` comes first.
fn sleep_unless(stop: &AtomicBool, d: Duration) {
    let until = Instant::now() + d;
    while Instant::now() < until && !stop.load(Ordering::SeqCst) {
        std::thread::sleep((until - Instant::now()).min(TICK));
    }
}

impl Syncer {
    /// Syncs of a guest whose `/` is `root`, with `rsync` (a name on PATH or a path).
    pub fn new(root: &Path, rsync: &Path) -> Syncer {
        Syncer {
            root: root.to_path_buf(),
            rsync: rsync.to_path_buf(),
            syncs: Mutex::new(BTreeMap::new()),
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Running>> {
        match self.syncs.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        }
    }

    /// Run exactly `wanted` (checked by `spec::check`): stop the syncs that
    /// are gone or changed (an rsync under way is killed), start new ones.
    pub fn reconcile(&self, wanted: &[SyncSpec]) {
        let mut map = self.map();
        let stale: Vec<String> = map
            .iter()
            .filter(|(src, r)| !wanted.iter().any(|w| &w.source == *src && w == &r.spec))
            .map(|(src, _)| src.clone())
            .collect();
        let stopping: Vec<Running> = stale.iter().filter_map(|s| map.remove(s)).collect();
        for r in &stopping {
            r.stop.store(true, Ordering::SeqCst);
        }
        for r in stopping {
            let _ = r.thread.join();
            say(&format!(
                "sync {} -> {}: stopped",
                r.spec.source, r.spec.target
            ));
        }
        let new: Vec<&SyncSpec> = wanted
            .iter()
            .filter(|w| !map.contains_key(&w.source))
            .collect();
        for spec in new {
            let status = Arc::new(Mutex::new(Status {
                state: S::Starting,
                detail: None,
                runs: 0,
            }));
            let stop = Arc::new(AtomicBool::new(false));
            let (root, rsync, s, st, sp) = (
                self.root.clone(),
                self.rsync.clone(),
                spec.clone(),
                status.clone(),
                stop.clone(),
            );
            let thread = std::thread::spawn(move || worker(root, rsync, s, st, sp));
            map.insert(
                spec.source.clone(),
                Running {
                    spec: spec.clone(),
                    status,
                    stop,
                    thread,
                },
            );
        }
    }

    /// Each sync's state, by source.
    pub fn statuses(&self) -> BTreeMap<String, Status> {
        self.map()
            .iter()
            .map(|(src, r)| {
                let s = match r.status.lock() {
                    Ok(s) => s.clone(),
                    Err(p) => p.into_inner().clone(),
                };
                (src.clone(), s)
            })
            .collect()
    }

    /// The syncs as services of the heartbeats: `sync:SOURCE`.
    pub fn states(&self) -> Vec<ServiceState> {
        let specs: Vec<SyncSpec> = self.map().values().map(|r| r.spec.clone()).collect();
        let statuses = self.statuses();
        specs
            .into_iter()
            .filter_map(|spec| {
                let s = statuses.get(&spec.source)?;
                Some(ServiceState {
                    name: spec.service_name(),
                    state: s.state.into(),
                    detail: s.detail.as_deref().map(short),
                })
            })
            .collect()
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        self.reconcile(&[]);
    }
}

#[cfg(test)]
mod tests;
