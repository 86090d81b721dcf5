//! One run of `rsync -a [--delete] [--exclude=P]... SOURCE/ TARGET/`: argv,
//! no shell, its output read bounded (run.rs), its `--stats` read for how
//! much it did.

use super::spec::{under, SyncSpec};
use crate::run::{self, Job, Keep, RunError};
use std::ffi::OsString;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

/// How much of rsync's stdout (its `--stats`) and stderr is kept.
const OUTPUT_TAIL: usize = 8 * 1024;
/// A run that takes longer is killed and counted as failed (and retried).
pub const RUN_LIMIT: Duration = Duration::from_secs(3600);
/// rsync's "some files vanished before they could be transferred": the
/// tree changed during the run, which inotify reports too; not a failure.
const VANISHED: i32 = 24;

/// What one run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Done {
    pub files: u64,
    pub deleted: u64,
    pub took: Duration,
}

impl std::fmt::Display for Done {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = if self.files == 1 { "" } else { "s" };
        write!(f, "{} file{s}", self.files)?;
        if self.deleted > 0 {
            write!(f, ", {} deleted", self.deleted)?;
        }
        write!(f, " in {:.2}s", self.took.as_secs_f64())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RsyncError {
    #[error("cannot run rsync: {0}")]
    Spawn(String),
    #[error("rsync failed ({status}){reason}")]
    Failed { status: String, reason: String },
    #[error("rsync timed out after {}s", .0.as_secs())]
    TimedOut(Duration),
    #[error("rsync stopped")]
    Cancelled,
}

/// rsync's arguments for `spec`, its paths under `root`.
pub fn args(root: &Path, spec: &SyncSpec) -> Vec<OsString> {
    let mut a: Vec<OsString> = vec!["-a".into(), "--stats".into()];
    if spec.delete {
        a.push("--delete".into());
    }
    for p in &spec.exclude {
        a.push(format!("--exclude={p}").into());
    }
    // The trailing `/`: the source's content, into the target itself.
    for p in [&spec.source, &spec.target] {
        let mut s = under(root, p).into_os_string();
        s.push("/");
        a.push(s);
    }
    a
}

/// A number from a `--stats` line `NAME: N` (`N (reg: ...)`, `1,234`).
fn stat(stats: &str, names: &[&str]) -> u64 {
    stats
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            names.contains(&k.trim()).then_some(v)?;
            let n: String = v
                .trim()
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == ',' || *c == '.')
                .filter(char::is_ascii_digit)
                .collect();
            n.parse().ok()
        })
        .unwrap_or(0)
}

/// Why rsync failed: its last specific complaint (`rsync: mkdir "/x"
/// failed: ...`), not the summary after it (`rsync error: ... (code 11)`).
fn reason(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    lines
        .iter()
        .rfind(|l| !l.starts_with("rsync error:"))
        .or_else(|| lines.last())
        .map(|l| l.to_string())
        .unwrap_or_default()
}

/// Run rsync once (`rsync` found on PATH) for `spec`; `cancel` kills it.
pub fn run(
    rsync: &Path,
    root: &Path,
    spec: &SyncSpec,
    cancel: &AtomicBool,
) -> Result<Done, RsyncError> {
    let mut cmd = Command::new(rsync);
    cmd.args(args(root, spec)).env("LC_ALL", "C");
    let t = Instant::now();
    let f = run::run(Job {
        cmd,
        stdin: None,
        stdout: Keep::Tail(OUTPUT_TAIL),
        stderr: Keep::Tail(OUTPUT_TAIL),
        timeout: RUN_LIMIT,
        cancel: Some(cancel),
    })
    .map_err(|e| match e {
        RunError::Spawn(e) => RsyncError::Spawn(e.to_string()),
        RunError::TimedOut(d) => RsyncError::TimedOut(d),
        RunError::Cancelled => RsyncError::Cancelled,
        RunError::Wait(e) => RsyncError::Spawn(e.to_string()),
    })?;
    if !f.status.success() && f.status.code() != Some(VANISHED) {
        let last = reason(&String::from_utf8_lossy(&f.stderr.bytes));
        return Err(RsyncError::Failed {
            status: f.status.to_string(),
            reason: if last.is_empty() {
                String::new()
            } else {
                format!(": {last}")
            },
        });
    }
    let stats = String::from_utf8_lossy(&f.stdout.bytes);
    Ok(Done {
        // rsync 3.1 and later, then older ones.
        files: stat(
            &stats,
            &[
                "Number of regular files transferred",
                "Number of files transferred",
            ],
        ),
        deleted: stat(&stats, &["Number of deleted files"]),
        took: t.elapsed(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(src: &Path, dst: &Path) -> SyncSpec {
        SyncSpec {
            source: src.to_string_lossy().into_owned(),
            target: dst.to_string_lossy().into_owned(),
            delay_ms: 500,
            exclude: vec!["*.tmp".into(), "--delete-excluded".into()],
            delete: true,
        }
    }

    #[test]
    fn args_are_argv_with_trailing_slashes() {
        let s = spec(Path::new("/srv/data"), Path::new("/mnt/copy"));
        let a: Vec<String> = args(Path::new("/"), &s)
            .into_iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        // A pattern that looks like an option stays a pattern.
        assert_eq!(
            a,
            [
                "-a",
                "--stats",
                "--delete",
                "--exclude=*.tmp",
                "--exclude=--delete-excluded",
                "/srv/data/",
                "/mnt/copy/"
            ]
        );
        let a = args(Path::new("/guest"), &SyncSpec { delete: false, ..s });
        assert!(!a.iter().any(|x| x == "--delete"));
        assert_eq!(a[a.len() - 2], "/guest/srv/data/");
    }

    #[test]
    fn the_reason_is_the_complaint_not_the_summary() {
        let e = "rsync: [Receiver] mkdir \"/x/y\" failed: No such file or directory (2)\n\
                 rsync error: error in file IO (code 11) at main.c(808) [Receiver=3.5.0]\n";
        assert!(
            reason(e).starts_with("rsync: [Receiver] mkdir"),
            "{}",
            reason(e)
        );
        assert_eq!(reason("rsync error: x\n"), "rsync error: x");
        assert_eq!(reason(""), "");
    }

    #[test]
    fn stats_are_read_from_old_and_new_rsyncs() {
        let new = "Number of files: 4 (reg: 2, dir: 2)\nNumber of deleted files: 1 (reg: 1)\n\
                   Number of regular files transferred: 1,234\n";
        assert_eq!(stat(new, &["Number of regular files transferred"]), 1234);
        assert_eq!(stat(new, &["Number of deleted files"]), 1);
        let old = "Number of files: 3\nNumber of files transferred: 2\n";
        assert_eq!(
            stat(
                old,
                &[
                    "Number of regular files transferred",
                    "Number of files transferred"
                ]
            ),
            2
        );
        assert_eq!(stat("garbage", &["Number of deleted files"]), 0);
    }

    #[test]
    fn a_run_copies_counts_and_fails_with_rsyncs_reason() {
        let (src, dst) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        std::fs::create_dir(src.path().join("sub")).unwrap();
        std::fs::write(src.path().join("sub/a"), "a").unwrap();
        std::fs::write(src.path().join("b.tmp"), "b").unwrap();
        std::fs::write(dst.path().join("stale"), "old").unwrap();
        let s = spec(src.path(), dst.path());
        let no = AtomicBool::new(false);
        let done = run(Path::new("rsync"), Path::new("/"), &s, &no).unwrap();
        assert_eq!((done.files, done.deleted), (1, 1), "{done}");
        assert!(dst.path().join("sub/a").exists());
        assert!(!dst.path().join("b.tmp").exists() && !dst.path().join("stale").exists());
        // A target whose parent is missing: rsync's own words.
        let s = spec(src.path(), &dst.path().join("no/such/dir"));
        let e = run(Path::new("rsync"), Path::new("/"), &s, &no).unwrap_err();
        assert!(
            matches!(&e, RsyncError::Failed { reason, .. } if reason.contains("No such file")),
            "{e}"
        );
        let e = run(Path::new("/nonexistent/rsync"), Path::new("/"), &s, &no).unwrap_err();
        assert!(matches!(e, RsyncError::Spawn(_)), "{e}");
    }
}
