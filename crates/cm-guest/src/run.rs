//! Running a program to its end with bounded output: its stdin fed, its
//! stdout and stderr read, all at once in one `poll` loop (so a program
//! that writes more than a pipe holds never blocks on us), keeping only a
//! bounded part of each; killed with its whole process group at a deadline.

use rustix::event::{PollFd, PollFlags};
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// What part of an output is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// The first `n` bytes.
    Head(usize),
    /// The last `n` bytes.
    Tail(usize),
}

/// A bounded capture of one output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Captured {
    pub bytes: Vec<u8>,
    /// Whether more was written than kept.
    pub truncated: bool,
}

impl Captured {
    fn new() -> Captured {
        Captured {
            bytes: Vec::new(),
            truncated: false,
        }
    }

    fn push(&mut self, data: &[u8], keep: Keep) {
        match keep {
            Keep::Head(n) => {
                let room = n.saturating_sub(self.bytes.len());
                self.bytes.extend_from_slice(&data[..room.min(data.len())]);
                self.truncated |= data.len() > room;
            }
            Keep::Tail(n) => {
                self.bytes.extend_from_slice(data);
                if self.bytes.len() > n {
                    let cut = self.bytes.len() - n;
                    self.bytes.drain(..cut);
                    self.truncated = true;
                }
            }
        }
    }

    /// The last non-empty line, trimmed.
    pub fn last_line(&self) -> String {
        String::from_utf8_lossy(&self.bytes)
            .lines()
            .map(str::trim)
            .rfind(|l| !l.is_empty())
            .unwrap_or("")
            .to_string()
    }
}

#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: Captured,
    pub stderr: Captured,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Spawn(std::io::Error),
    #[error("timed out after {}s", .0.as_secs())]
    TimedOut(Duration),
    /// Its `cancel` flag was raised: killed with its group.
    #[error("cancelled")]
    Cancelled,
    #[error("{0}")]
    Wait(std::io::Error),
}

/// How to run one program.
pub struct Job<'a> {
    pub cmd: Command,
    pub stdin: Option<&'a [u8]>,
    pub stdout: Keep,
    pub stderr: Keep,
    pub timeout: Duration,
    /// When this becomes true, the program is killed (with its group) and
    /// `run` returns `Cancelled` within about 20 ms.
    pub cancel: Option<&'a AtomicBool>,
}

/// After the program exits, how long its output may still be drained (a
/// daemon it started may hold the pipes open for ever).
const DRAIN: Duration = Duration::from_millis(200);

fn kill_group(child: &mut std::process::Child) {
    // SAFETY: signalling the process group of a child we started in its own group.
    unsafe {
        // A pid is at most PID_MAX_LIMIT (2^22): cast_signed never wraps.
        libc::kill(-child.id().cast_signed(), libc::SIGKILL);
    }
    let _ = child.wait();
}

/// Run `job` to its end (or its deadline).
pub fn run(job: Job<'_>) -> Result<Finished, RunError> {
    let mut cmd = job.cmd;
    cmd.stdin(if job.stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .process_group(0);
    let mut child = cmd.spawn().map_err(RunError::Spawn)?;
    let mut stdin = child.stdin.take();
    let mut outp = child.stdout.take();
    let mut errs = child.stderr.take();
    let (mut out, mut err) = (Captured::new(), Captured::new());
    let mut input = job.stdin.unwrap_or(&[]);
    let deadline = Instant::now() + job.timeout;
    let mut exited: Option<(ExitStatus, Instant)> = None;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if input.is_empty() {
            // All written (or nothing to write): EOF for the program.
            stdin = None;
        }
        let now = Instant::now();
        if let Some((status, at)) = exited {
            if (outp.is_none() && errs.is_none()) || now >= at + DRAIN {
                return Ok(Finished {
                    status,
                    stdout: out,
                    stderr: err,
                });
            }
        } else if now >= deadline {
            kill_group(&mut child);
            return Err(RunError::TimedOut(job.timeout));
        } else if job.cancel.is_some_and(|c| c.load(Ordering::SeqCst)) {
            kill_group(&mut child);
            return Err(RunError::Cancelled);
        }
        // Wake at least every 20 ms to see whether the program exited.
        let wait = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: 20_000_000,
        };
        let mut fds = Vec::with_capacity(3);
        let mut which = Vec::with_capacity(3);
        if let Some(s) = &stdin {
            fds.push(PollFd::new(s, PollFlags::OUT));
            which.push(0);
        }
        if let Some(o) = &outp {
            fds.push(PollFd::new(o, PollFlags::IN));
            which.push(1);
        }
        if let Some(e) = &errs {
            fds.push(PollFd::new(e, PollFlags::IN));
            which.push(2);
        }
        if fds.is_empty() {
            std::thread::sleep(Duration::from_millis(20));
        } else {
            match rustix::event::poll(&mut fds, Some(&wait)) {
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(e) => {
                    kill_group(&mut child);
                    return Err(RunError::Wait(e.into()));
                }
            }
        }
        let ready: Vec<(usize, PollFlags)> = fds
            .iter()
            .zip(&which)
            .map(|(f, w)| (*w, f.revents()))
            .filter(|(_, r)| !r.is_empty())
            .collect();
        drop(fds);
        for (w, _) in ready {
            match w {
                0 => {
                    if let Some(s) = stdin.as_mut() {
                        // The pipe has room: this writes at least one byte.
                        let chunk = &input[..input.len().min(4096)];
                        match s.write(chunk) {
                            Ok(n) => input = &input[n..],
                            // The program closed its stdin: not our error.
                            Err(_) => input = &[],
                        }
                    }
                }
                1 => {
                    if let Some(o) = outp.as_mut() {
                        match o.read(&mut buf) {
                            Ok(0) | Err(_) => outp = None,
                            Ok(n) => out.push(&buf[..n], job.stdout),
                        }
                    }
                }
                _ => {
                    if let Some(e) = errs.as_mut() {
                        match e.read(&mut buf) {
                            Ok(0) | Err(_) => errs = None,
                            Ok(n) => err.push(&buf[..n], job.stderr),
                        }
                    }
                }
            }
        }
        if exited.is_none() {
            match child.try_wait() {
                Ok(Some(st)) => exited = Some((st, Instant::now())),
                Ok(None) => {}
                Err(e) => {
                    kill_group(&mut child);
                    return Err(RunError::Wait(e));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str, timeout: u64) -> Job<'static> {
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c").arg(script);
        Job {
            cmd,
            stdin: None,
            stdout: Keep::Tail(4096),
            stderr: Keep::Tail(4096),
            timeout: Duration::from_secs(timeout),
            cancel: None,
        }
    }

    #[test]
    fn megabytes_of_output_do_not_block_and_only_the_tail_is_kept() {
        // 1 MiB to stdout and 1 MiB to stderr, far more than a pipe holds.
        let t = Instant::now();
        let f = run(sh(
            "head -c 1048576 /dev/zero | tr '\\0' o; echo; echo last-out; \
             head -c 1048576 /dev/zero | tr '\\0' e >&2; echo >&2; echo last-err >&2",
            60,
        ))
        .unwrap();
        assert!(f.status.success());
        assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());
        assert_eq!(f.stdout.bytes.len(), 4096);
        assert!(f.stdout.truncated && f.stderr.truncated);
        assert_eq!(f.stdout.last_line(), "last-out");
        assert_eq!(f.stderr.last_line(), "last-err");
    }

    #[test]
    fn stdin_is_fed_while_output_is_read() {
        // A program that echoes its input back before it has read all of it:
        // writing all of stdin first would deadlock.
        let input = vec![b'x'; 1 << 20];
        let mut cmd = Command::new("/bin/cat");
        cmd.arg("-");
        let f = run(Job {
            cmd,
            stdin: Some(&input),
            stdout: Keep::Head(100),
            stderr: Keep::Tail(100),
            timeout: Duration::from_secs(60),
            cancel: None,
        })
        .unwrap();
        assert!(f.status.success());
        assert_eq!(f.stdout.bytes, vec![b'x'; 100]);
        assert!(f.stdout.truncated);
    }

    #[test]
    fn the_deadline_kills_the_whole_group_and_daemons_do_not_hold_us() {
        let t = Instant::now();
        let e = run(sh("sleep 30 & sleep 30", 1)).unwrap_err();
        assert!(matches!(e, RunError::TimedOut(_)), "{e}");
        assert!(t.elapsed() < Duration::from_secs(10));
        // A program that leaves a child holding its stdout: we return once it exits.
        let t = Instant::now();
        let f = run(sh("(sleep 20; echo late) & echo early", 60)).unwrap();
        assert!(f.status.success());
        assert_eq!(f.stdout.last_line(), "early");
        assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    }

    #[test]
    fn a_raised_cancel_flag_kills_the_group_at_once() {
        let flag = AtomicBool::new(false);
        let t = Instant::now();
        std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(300));
                flag.store(true, Ordering::SeqCst);
            });
            let mut job = sh("sleep 30 & sleep 30", 60);
            job.cancel = Some(&flag);
            let e = run(job).unwrap_err();
            assert!(matches!(e, RunError::Cancelled), "{e}");
        });
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    }

    #[test]
    fn head_and_tail_keep_what_they_say() {
        let mut c = Captured::new();
        c.push(b"abcdef", Keep::Head(4));
        c.push(b"gh", Keep::Head(4));
        assert_eq!((c.bytes.as_slice(), c.truncated), (&b"abcd"[..], true));
        let mut c = Captured::new();
        c.push(b"abc", Keep::Tail(4));
        c.push(b"def", Keep::Tail(4));
        assert_eq!((c.bytes.as_slice(), c.truncated), (&b"cdef"[..], true));
    }
}
