//! One `cm stop`/`cm play` at a time per referee: an exclusive `flock(1)`
//! on a lock file where the referee runs, held from before the pool is
//! read until the last change is saved. Two runs at once could otherwise
//! both see one other server serving and together empty the pool, or both
//! read Apache's file and each write back its own edit only.
//!
//! The lock is taken on the referee's host itself, by a shell there that
//! opens the file, waits for the lock (`flock -w`), says `locked` and then
//! holds it until its stdin ends. Over SSH that shell is a session like any
//! other; on this machine, a local `sh`. When cm ends, or dies, its end of
//! the pipe closes and the lock goes with the shell, so a crash never
//! leaves the referee locked (while the connection lives, at worst until
//! sshd sees it is gone).

use super::RefereeError;
use crate::runner::Runner;
use crate::ssh::quote;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// Exit code of the lock shell when `flock -w` gave up.
const BUSY: i32 = 75;
/// What is read of the lock shell's output (banners, errors) at most.
const MAX_LOCK_CHATTER: u64 = 64 * 1024;

/// The lock file for a referee whose state lives in `file`: beside it, in
/// the directory cm must be able to write to anyway, hidden and empty (an
/// Apache `Include dir/*` that picked it up would read nothing).
pub fn beside(file: &str) -> String {
    let (dir, name) = match file.rsplit_once('/') {
        Some((d, n)) => (if d.is_empty() { "/" } else { d }, n),
        None => (".", file),
    };
    format!("{}/.{name}.cm-lock", dir.trim_end_matches('/'))
}

/// The lock, held until dropped.
#[derive(Debug)]
pub struct Held {
    child: Child,
}

impl Drop for Held {
    fn drop(&mut self) {
        // Closing its stdin ends the shell, and the lock with it.
        drop(self.child.stdin.take());
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Take the lock at `path` where `runner` runs, waiting at most `wait`.
pub fn take(runner: &Runner, path: &str, wait: Duration) -> Result<Held, RefereeError> {
    let q = quote(path);
    let script = format!(
        "exec 9>>{q} || exit 2; flock -w {secs} 9 || exit {BUSY}; echo locked; exec cat >/dev/null",
        secs = wait.as_secs().max(1)
    );
    let mut cmd = runner.command(&script);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| RefereeError::LockFailed(format!("cannot run the lock shell: {e}")))?;
    // The remote side says "locked" once it holds the lock; a login banner
    // or a chatty rc file may come first, so look a few short lines ahead.
    let mut locked = false;
    if let Some(out) = child.stdout.take() {
        let mut out = BufReader::new(out.take(MAX_LOCK_CHATTER));
        let mut line = String::new();
        while matches!(out.read_line(&mut line), Ok(n) if n > 0) {
            if line.trim() == "locked" {
                locked = true;
                break;
            }
            line.clear();
        }
    }
    if locked {
        return Ok(Held { child });
    }
    // Not locked: end the remote `cat` (if it got that far) so stderr ends.
    drop(child.stdin.take());
    let mut stderr = String::new();
    if let Some(e) = child.stderr.take() {
        let _ = e.take(MAX_LOCK_CHATTER).read_to_string(&mut stderr);
    }
    let rc = child.wait().ok().and_then(|s| s.code());
    Err(match rc {
        Some(BUSY) => RefereeError::Locked {
            lock: path.to_string(),
            host: runner.host(),
            secs: wait.as_secs(),
        },
        _ => RefereeError::LockFailed(format!(
            "taking the lock {path} on {} failed (exit {}): {}",
            runner.host(),
            rc.map(|c| c.to_string())
                .unwrap_or_else(|| "by a signal".into()),
            stderr.trim()
        )),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_file_is_hidden_beside_the_state() {
        assert_eq!(
            beside("/etc/apache2/includes/proxybalancer"),
            "/etc/apache2/includes/.proxybalancer.cm-lock"
        );
        assert_eq!(beside("/state"), "/.state.cm-lock");
        assert_eq!(beside("state"), "./.state.cm-lock");
    }

    #[test]
    fn a_second_taker_waits_and_gives_up_with_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l").display().to_string();
        let first = take(&Runner::Local, &path, Duration::from_secs(5)).unwrap();
        let t = Instant::now();
        let e = take(&Runner::Local, &path, Duration::from_secs(1)).unwrap_err();
        assert!(matches!(e, RefereeError::Locked { .. }), "{e}");
        assert!(t.elapsed() >= Duration::from_millis(900));
        drop(first);
        // Released with the first holder: taken at once.
        let again = take(&Runner::Local, &path, Duration::from_secs(5)).unwrap();
        drop(again);
    }
}
