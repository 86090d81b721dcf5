//! What the simulated hosts count, for the scale benchmark: registrations,
//! reports and how long the master took to take each. Written as JSON to
//! `--sim-stats FILE` every second (replaced atomically).

use serde::Serialize;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Report latencies are counted in 1 ms buckets up to this; longer in the last.
const MAX_MS: usize = 30_000;

pub struct Stats {
    pub hosts: u64,
    pub registered: AtomicU64,
    reports_ok: AtomicU64,
    reports_failed: AtomicU64,
    report_ms: Vec<AtomicU64>,
}

/// One snapshot, as written to the stats file.
#[derive(Debug, Serialize)]
pub struct Snapshot {
    pub hosts: u64,
    pub registered: u64,
    pub reports_ok: u64,
    pub reports_failed: u64,
    /// `[milliseconds, reports]` for every non-empty bucket.
    pub report_ms: Vec<(u64, u64)>,
}

impl Stats {
    pub fn new(hosts: u64) -> Stats {
        Stats {
            hosts,
            registered: AtomicU64::new(0),
            reports_ok: AtomicU64::new(0),
            reports_failed: AtomicU64::new(0),
            report_ms: (0..=MAX_MS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    pub fn reported(&self, ok: bool, took: Duration) {
        if ok {
            self.reports_ok.fetch_add(1, Ordering::Relaxed);
            let ms = usize::try_from(took.as_millis())
                .unwrap_or(MAX_MS)
                .min(MAX_MS);
            if let Some(b) = self.report_ms.get(ms) {
                b.fetch_add(1, Ordering::Relaxed);
            }
        } else {
            self.reports_failed.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            hosts: self.hosts,
            registered: self.registered.load(Ordering::Relaxed),
            reports_ok: self.reports_ok.load(Ordering::Relaxed),
            reports_failed: self.reports_failed.load(Ordering::Relaxed),
            report_ms: self
                .report_ms
                .iter()
                .enumerate()
                .filter_map(|(ms, n)| {
                    let n = n.load(Ordering::Relaxed);
                    (n > 0).then_some((ms as u64, n))
                })
                .collect(),
        }
    }

    /// Replace `path` with the current snapshot.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let json = serde_json::to_vec(&self.snapshot()).map_err(std::io::Error::other)?;
        durable_fs::write_atomic(path, &json, 0o644)
    }
}
