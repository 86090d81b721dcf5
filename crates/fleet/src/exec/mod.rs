//! Running one job per node, many at once: a `JoinSet` of tasks and a
//! `Semaphore` for the fan-out (DESIGN.md §10). A job is a process (ssh,
//! scp, rsync) in its own process group, so a timeout kills it and
//! everything it started, or, when the node has a control master, a
//! session asked of that master directly (`master.rs`). Output is read line
//! by line and handed on whole.

mod master;

use serde::Serialize;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// One node's job: the node's name and the command line to run for it.
#[derive(Debug, Clone)]
pub struct Job {
    pub node: String,
    pub argv: Vec<String>,
    /// A control socket and a remote command: tried first, through the
    /// master there; `argv` runs only when no master takes the session.
    pub via_master: Option<(PathBuf, String)>,
}

impl Job {
    pub fn process(node: &str, argv: Vec<String>) -> Job {
        Job {
            node: node.to_string(),
            argv,
            via_master: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// Called with every whole line as it arrives.
pub type OnLine = Arc<dyn Fn(&str, Stream, &str) + Send + Sync>;

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct NodeResult {
    pub node: String,
    /// The exit code; None when it was killed or never ran.
    pub rc: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    /// Seconds.
    pub duration: f64,
    /// ssh could not connect (exit 255) or the program could not start.
    pub unreachable: bool,
    pub timed_out: bool,
}

impl NodeResult {
    pub fn ok(&self) -> bool {
        self.rc == Some(0)
    }
}

/// Read `r` line by line into `acc`, calling `on` with each line.
pub(crate) async fn pump<R: AsyncRead + Unpin>(
    r: R,
    node: String,
    stream: Stream,
    on: Option<OnLine>,
    acc: Arc<Mutex<String>>,
) {
    let mut reader = BufReader::new(r);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let line = String::from_utf8_lossy(&buf);
                let line = line.strip_suffix('\n').unwrap_or(&line);
                let line = line.strip_suffix('\r').unwrap_or(line);
                if let Some(f) = &on {
                    f(&node, stream, line);
                }
                let mut acc = acc.lock().unwrap_or_else(|p| p.into_inner());
                acc.push_str(line);
                acc.push('\n');
            }
        }
    }
}

/// Wait for a pump to reach the end of its stream, or only `grace` after a
/// kill: a multiplexed ssh hands our pipe to its ControlMaster, which keeps
/// it open until the remote command ends, however long that is.
async fn finish(
    h: tokio::task::JoinHandle<()>,
    grace: Option<Duration>,
    acc: &Mutex<String>,
) -> String {
    match grace {
        None => {
            let _ = h.await;
        }
        Some(g) => {
            let abort = h.abort_handle();
            if tokio::time::timeout(g, h).await.is_err() {
                abort.abort();
            }
        }
    }
    std::mem::take(&mut *acc.lock().unwrap_or_else(|p| p.into_inner()))
}

/// How an exit code of the transport counts: ssh says 255 when it could
/// not connect (scp and rsync report ssh's failures as 255 or with these words).
fn looks_unreachable(rc: Option<i32>, stderr: &str) -> bool {
    rc == Some(255)
        || [
            "Connection refused",
            "Connection timed out",
            "No route to host",
            "Could not resolve hostname",
            "Permission denied (publickey",
            "Host key verification failed",
            "connection unexpectedly closed",
        ]
        .iter()
        .any(|p| stderr.contains(p))
}

async fn run_one(job: Job, timeout: Option<Duration>, on: Option<OnLine>) -> NodeResult {
    let start = Instant::now();
    if let Some((socket, command)) = &job.via_master {
        if let Some(r) = master::run(&job.node, socket, command, timeout, on.clone()).await {
            return r;
        }
    }
    let timeout = timeout.map(|t| t.saturating_sub(start.elapsed()));
    let mut res = NodeResult {
        node: job.node.clone(),
        ..Default::default()
    };
    let Some((prog, args)) = job.argv.split_first() else {
        res.unreachable = true;
        res.stderr = "empty command line".into();
        return res;
    };
    let child = tokio::process::Command::new(prog)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            res.unreachable = true;
            res.stderr = format!("cannot run {prog}: {e}\n");
            res.duration = start.elapsed().as_secs_f64();
            return res;
        }
    };
    let pid = child.id();
    let (out_acc, err_acc) = (Arc::default(), Arc::default());
    let out = child.stdout.take().map(|o| {
        let p = pump(
            o,
            job.node.clone(),
            Stream::Stdout,
            on.clone(),
            Arc::clone(&out_acc),
        );
        tokio::spawn(p)
    });
    let err = child.stderr.take().map(|e| {
        let p = pump(
            e,
            job.node.clone(),
            Stream::Stderr,
            on.clone(),
            Arc::clone(&err_acc),
        );
        tokio::spawn(p)
    });
    let waited = match timeout {
        Some(t) => tokio::time::timeout(t, child.wait()).await.ok(),
        None => Some(child.wait().await),
    };
    match waited {
        Some(Ok(st)) => res.rc = st.code(),
        Some(Err(e)) => res.stderr.push_str(&format!("waiting: {e}\n")),
        None => {
            res.timed_out = true;
            if let Some(p) = pid {
                // SAFETY: signalling the process group of the child we started.
                unsafe {
                    // A pid is at most PID_MAX_LIMIT (2^22): cast_signed never wraps.
                    libc::kill(-p.cast_signed(), libc::SIGKILL);
                }
            }
            let _ = child.wait().await;
        }
    }
    let grace = res.timed_out.then_some(Duration::from_millis(300));
    if let Some(h) = out {
        res.stdout = finish(h, grace, &out_acc).await;
    }
    if let Some(h) = err {
        let e = finish(h, grace, &err_acc).await;
        res.stderr = e + &res.stderr;
    }
    res.unreachable = !res.timed_out && looks_unreachable(res.rc, &res.stderr);
    res.duration = start.elapsed().as_secs_f64();
    res
}

/// Run every job, at most `fanout` at a time; results in the jobs' order.
pub async fn run_all(
    jobs: Vec<Job>,
    fanout: usize,
    timeout: Option<Duration>,
    on: Option<OnLine>,
) -> Vec<NodeResult> {
    let sem = Arc::new(Semaphore::new(fanout.max(1)));
    let order: Vec<String> = jobs.iter().map(|j| j.node.clone()).collect();
    let mut set = JoinSet::new();
    for job in jobs {
        let (sem, on) = (sem.clone(), on.clone());
        set.spawn(async move {
            let _permit = sem.acquire_owned().await;
            run_one(job, timeout, on).await
        });
    }
    let mut results = Vec::new();
    while let Some(r) = set.join_next().await {
        if let Ok(r) = r {
            results.push(r);
        }
    }
    results.sort_by_key(|r| {
        order
            .iter()
            .position(|n| *n == r.node)
            .unwrap_or(usize::MAX)
    });
    results
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(node: &str, script: &str) -> Job {
        Job::process(node, vec!["/bin/sh".into(), "-c".into(), script.into()])
    }

    #[tokio::test]
    async fn results_come_back_in_order_with_codes_and_output() {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let l = lines.clone();
        let on: OnLine = Arc::new(move |n, s, line| {
            l.lock().unwrap().push((n.to_string(), s, line.to_string()))
        });
        let jobs = vec![
            sh("a", "sleep 0.2; echo one; echo two"),
            sh("b", "echo oops >&2; exit 3"),
            sh("c", "exit 255"),
        ];
        let r = run_all(jobs, 32, None, Some(on)).await;
        assert_eq!(
            r.iter().map(|r| r.node.as_str()).collect::<Vec<_>>(),
            ["a", "b", "c"]
        );
        assert_eq!((r[0].rc, r[0].stdout.as_str()), (Some(0), "one\ntwo\n"));
        assert_eq!(
            (r[1].rc, r[1].stderr.as_str(), r[1].unreachable),
            (Some(3), "oops\n", false)
        );
        assert!(r[2].unreachable);
        let seen = lines.lock().unwrap().clone();
        assert!(seen.contains(&("a".into(), Stream::Stdout, "two".into())));
        assert!(seen.contains(&("b".into(), Stream::Stderr, "oops".into())));
    }

    #[tokio::test]
    async fn a_hung_node_is_cut_at_the_timeout_and_holds_up_nobody() {
        let t = Instant::now();
        let jobs = vec![sh("hung", "sleep 60 & sleep 60"), sh("quick", "echo fine")];
        let r = run_all(jobs, 32, Some(Duration::from_millis(500)), None).await;
        assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
        assert!(r[0].timed_out && r[0].rc.is_none() && !r[0].unreachable);
        assert!(r[1].ok());
    }

    #[tokio::test]
    async fn the_fanout_bounds_how_many_run_at_once() {
        let t = Instant::now();
        let jobs: Vec<Job> = (0..4).map(|i| sh(&format!("n{i}"), "sleep 0.3")).collect();
        let r = run_all(jobs, 2, None, None).await;
        assert!(r.iter().all(NodeResult::ok));
        assert!(
            t.elapsed() >= Duration::from_millis(550),
            "{:?}",
            t.elapsed()
        );
    }

    #[tokio::test]
    async fn a_missing_program_is_unreachable() {
        let r = run_all(
            vec![Job::process("x", vec!["/nonexistent/ssh".into()])],
            1,
            None,
            None,
        )
        .await;
        assert!(r[0].unreachable && r[0].stderr.contains("cannot run"));
    }
}
