//! A `qemu-storage-daemon` started for one offline incremental backup: the
//! source disk opened as a `--blockdev` node, QMP on a unix socket in a
//! private temporary directory. It is asked to `quit` when the backup is
//! done (so the disk's persistent bitmap is written back, marked clean),
//! and killed and reaped on every other way out.

use super::BackupError;
use crate::vm::qmp;
use serde_json::json;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long the daemon has to open its socket, and to exit on `quit`.
const START: Duration = Duration::from_secs(10);
const QUIT: Duration = Duration::from_secs(30);
/// The most of its log kept for a message.
const MAX_LOG: u64 = 4 << 10;

pub struct Daemon {
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl Daemon {
    /// Start one with `file` (qcow2) as node `node`.
    pub fn start(file: &Path, node: &str) -> Result<Daemon, BackupError> {
        let dir = tempfile::Builder::new()
            .prefix("cmbk")
            .tempdir()
            .map_err(|e| BackupError::Io("temporary dir".into(), e))?;
        let sock = dir.path().join("qmp.sock");
        let log_path = dir.path().join("log");
        let log = std::fs::File::create(&log_path).map_err(|e| super::chain::io(&log_path, e))?;
        let blockdev = json!({
            "driver": "qcow2",
            "node-name": node,
            "file": { "driver": "file", "filename": file.display().to_string() },
        });
        let mut cmd = Command::new("qemu-storage-daemon");
        // SAFETY: prctl is async-signal-safe and touches no memory of ours.
        // The daemon dies with the thread that runs the backup (an agent
        // that dies must not leave the disk held).
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .arg("--blockdev")
            .arg(blockdev.to_string())
            .arg("--chardev")
            .arg(format!(
                "socket,id=qmp,path={},server=on,wait=off",
                sock.display()
            ))
            .arg("--monitor")
            .arg("chardev=qmp")
            .stdin(Stdio::null())
            .stdout(
                log.try_clone()
                    .map_err(|e| super::chain::io(&log_path, e))?,
            )
            .stderr(log)
            .spawn()
            .map_err(|e| BackupError::Spawn("qemu-storage-daemon", e))?;
        let mut d = Daemon {
            child: Some(child),
            dir,
        };
        let deadline = Instant::now() + START;
        loop {
            if let Some(c) = d.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    d.child = None;
                    return Err(BackupError::Daemon(format!(
                        "exited ({status}): {}",
                        d.log()
                    )));
                }
            }
            if qmp::call(&d.socket(), "query-version", None).is_ok() {
                return Ok(d);
            }
            if Instant::now() > deadline {
                return Err(BackupError::Daemon(format!(
                    "no monitor after {START:?}: {}",
                    d.log()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("qmp.sock")
    }

    fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(f) = std::fs::File::open(self.dir.path().join("log")) {
            let _ = f.take(MAX_LOG).read_to_string(&mut s);
        }
        s.trim().to_string()
    }

    /// Close cleanly: `quit`, then wait (bounded) for the exit.
    pub fn quit(mut self) -> Result<(), BackupError> {
        let sent = super::job::call(&self.socket(), "quit", None);
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let deadline = Instant::now() + QUIT;
        loop {
            match child.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(()),
                Ok(Some(status)) => {
                    return Err(BackupError::Daemon(format!(
                        "exited ({status}): {}",
                        self.log()
                    )))
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                other => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(BackupError::Daemon(format!(
                        "did not quit ({sent:?}, {other:?}): killed"
                    )));
                }
            }
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
