//! Running a command as a user would, with a bound: its own process group
//! (so a shell and what it started stop together), output to a file (so a
//! chatty command never blocks on a pipe), killed when the bound passes.

use std::io::{Read, Seek};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The outcome of one bounded command.
#[derive(Debug)]
pub struct Ran {
    /// None: still running when it was stopped (the bound passed, or its
    /// output showed what was awaited).
    pub code: Option<i32>,
    /// stdout and stderr, interleaved as written.
    pub output: String,
}

/// Run `cmd` until it ends or `bound` passes (then its group is killed).
pub fn run_bounded(cmd: Command, bound: Duration) -> Ran {
    run_until(cmd, bound, &[])
}

/// Like `run_bounded`, but with `want`, stop it (kill its group) as soon as
/// its output shows every one of `want`: for commands that never end.
pub fn run_until(mut cmd: Command, bound: Duration, want: &[&str]) -> Ran {
    let spawned = tempfile::tempfile().and_then(|out| {
        cmd.stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out.try_clone()?)
            .process_group(0);
        Ok((cmd.spawn()?, out))
    });
    let (mut child, mut out) = match spawned {
        Ok(v) => v,
        Err(e) => {
            return Ran {
                code: Some(-1),
                output: format!("cannot run {cmd:?}: {e}"),
            }
        }
    };
    let read = |f: &mut std::fs::File| {
        let mut s = String::new();
        let _ = f
            .seek(std::io::SeekFrom::Start(0))
            .and_then(|_| f.read_to_string(&mut s));
        s
    };
    let start = Instant::now();
    let code = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status.code(),
            Ok(None) => {}
            Err(_) => break Some(-1),
        }
        let enough = !want.is_empty() && {
            let s = read(&mut out);
            want.iter().all(|w| s.contains(w))
        };
        if enough || start.elapsed() > bound {
            // SAFETY: the process group of a child this process started.
            unsafe {
                // A pid is at most PID_MAX_LIMIT (2^22): cast_signed never wraps.
                libc::kill(-child.id().cast_signed(), libc::SIGKILL);
            }
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    Ran {
        code,
        output: read(&mut out),
    }
}

/// Command lines of live processes that mention `s`.
pub fn processes_mentioning(s: &str) -> Vec<String> {
    pids_mentioning(s).into_iter().map(|(_, c)| c).collect()
}

/// Live processes (pid, command line) whose command line mentions `s`.
pub fn pids_mentioning(s: &str) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let p = e.path();
        if let Ok(cmdline) = std::fs::read(p.join("cmdline")) {
            let c = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            let zombie = std::fs::read_to_string(p.join("stat"))
                .map(|st| {
                    st.rsplit(')')
                        .next()
                        .is_some_and(|r| r.trim_start().starts_with('Z'))
                })
                .unwrap_or(true);
            if c.contains(s) && !zombie {
                out.push((pid, c));
            }
        }
    }
    out
}

/// Nanoseconds of the current second: cheap variety for names and addresses.
pub fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0)
}
