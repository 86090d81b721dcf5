//! What the scale benchmark measures: latencies (percentiles), a process's
//! CPU time and memory from /proc, and the simulator's counters.

use std::path::Path;
use std::time::Duration;

/// Latencies of one kind of request, in microseconds.
#[derive(Default, Clone)]
pub struct Latencies {
    pub us: Vec<u64>,
    pub errors: u64,
}

impl Latencies {
    pub fn add(&mut self, took: Duration, ok: bool) {
        if ok {
            self.us
                .push(u64::try_from(took.as_micros()).unwrap_or(u64::MAX));
        } else {
            self.errors += 1;
        }
    }

    pub fn merge(&mut self, other: Latencies) {
        self.us.extend(other.us);
        self.errors += other.errors;
    }

    /// The `p`th percentile in milliseconds (0 when nothing was measured).
    pub fn pct_ms(&self, p: f64) -> f64 {
        let mut v = self.us.clone();
        v.sort_unstable();
        pct(&v, p) as f64 / 1000.0
    }
}

fn pct(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    // p is 0..=100: the rounded index is in 0..len, a whole non-negative number.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let i = ((sorted.len() - 1) as f64 * p / 100.0).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// CPU seconds (user + system) a process has used, and its memory.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcStat {
    pub cpu_secs: f64,
    pub rss_mib: f64,
    pub peak_rss_mib: f64,
}

pub fn proc_stat(pid: u32) -> ProcStat {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // utime and stime are fields 14 and 15: 12 and 13 after the name.
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    ProcStat {
        cpu_secs: (ticks(11) + ticks(12)) as f64 / hz,
        rss_mib: kib("VmRSS:") / 1024.0,
        peak_rss_mib: kib("VmHWM:") / 1024.0,
    }
}

/// The simulator's counters (`cloudhostd --sim-stats FILE`), as it writes
/// them; all zero until the file is there.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(default)]
pub struct SimStats {
    pub registered: u64,
    pub reports_ok: u64,
    pub reports_failed: u64,
    /// Reports by milliseconds the master took to answer.
    pub report_ms: Vec<(u64, u64)>,
}

pub fn sim_stats(path: &Path) -> SimStats {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

impl SimStats {
    /// The reports between `before` and `self`: count, failures, p50 and p99 ms.
    pub fn since(&self, before: &SimStats) -> (u64, u64, u64, u64) {
        let old: std::collections::HashMap<u64, u64> = before.report_ms.iter().copied().collect();
        let mut hist: Vec<(u64, u64)> = self
            .report_ms
            .iter()
            .map(|(ms, n)| (*ms, n.saturating_sub(old.get(ms).copied().unwrap_or(0))))
            .filter(|(_, n)| *n > 0)
            .collect();
        hist.sort_unstable();
        let total: u64 = hist.iter().map(|(_, n)| n).sum();
        let at = |p: f64| {
            // p is 0..=100: 1..=total, a whole non-negative number.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let want = ((total as f64) * p / 100.0).ceil().max(1.0) as u64;
            let mut seen = 0;
            for (ms, n) in &hist {
                seen += n;
                if seen >= want {
                    return *ms;
                }
            }
            0
        };
        (
            self.reports_ok.saturating_sub(before.reports_ok),
            self.reports_failed.saturating_sub(before.reports_failed),
            at(50.0),
            at(99.0),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_latencies_and_of_the_report_histogram() {
        let mut l = Latencies::default();
        for ms in 1..=100 {
            l.add(Duration::from_millis(ms), true);
        }
        l.add(Duration::from_secs(9), false);
        assert_eq!((l.pct_ms(50.0), l.pct_ms(99.0), l.errors), (51.0, 99.0, 1));
        let before = SimStats {
            reports_ok: 10,
            report_ms: vec![(1, 10)],
            ..Default::default()
        };
        let after = SimStats {
            reports_ok: 110,
            report_ms: vec![(1, 60), (2, 49), (30, 1)],
            ..Default::default()
        };
        assert_eq!(after.since(&before), (100, 0, 1, 2));
    }

    #[test]
    fn this_process_has_cpu_time_and_memory() {
        let s = proc_stat(std::process::id());
        assert!(s.rss_mib > 0.0 && s.peak_rss_mib >= s.rss_mib);
    }
}
