//! A small QMP client: line-delimited JSON over the VM's unix socket.
//!
//! One connection per call keeps it simple and robust: QEMU's monitor takes
//! one client at a time, a dead QEMU is just a failed connect, and nothing is
//! held across agent restarts. Runs blocking I/O; call it from
//! `spawn_blocking`. (The `qapi` crate panics on an early EOF and its schema
//! is newer than Debian 12's QEMU 7.2, so raw JSON it is; see docs/host.md.)

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    #[error("QMP socket {0}: {1}")]
    Io(String, std::io::Error),
    #[error("QMP: {0}")]
    Protocol(String),
    #[error("QEMU refused {command}: {desc}")]
    Command { command: String, desc: String },
}

/// The longest line read from QEMU (its answers here are a few KiB).
const MAX_LINE: u64 = 1 << 20;
/// Events kept while waiting for an answer (the rest are dropped).
const MAX_EVENTS: usize = 64;

pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    path: String,
    /// Events that arrived before the answers of `execute`, oldest first.
    events: Vec<Value>,
}

impl Qmp {
    /// Connect and leave capabilities negotiation mode.
    pub fn connect(path: &Path, timeout: Duration) -> Result<Qmp, QmpError> {
        let p = path.display().to_string();
        let io = |e| QmpError::Io(p.clone(), e);
        let stream = UnixStream::connect(path).map_err(io)?;
        stream.set_read_timeout(Some(timeout)).map_err(io)?;
        stream.set_write_timeout(Some(timeout)).map_err(io)?;
        let writer = stream.try_clone().map_err(io)?;
        let mut qmp = Qmp {
            reader: BufReader::new(stream),
            writer,
            path: p.clone(),
            events: Vec::new(),
        };
        let greeting = qmp.read()?;
        if greeting.get("QMP").is_none() {
            return Err(QmpError::Protocol(format!(
                "unexpected greeting: {greeting}"
            )));
        }
        qmp.execute("qmp_capabilities", None)?;
        Ok(qmp)
    }

    fn read(&mut self) -> Result<Value, QmpError> {
        let mut line = String::new();
        let n = std::io::Read::take(&mut self.reader, MAX_LINE)
            .read_line(&mut line)
            .map_err(|e| QmpError::Io(self.path.clone(), e))?;
        if n == 0 {
            return Err(QmpError::Protocol("QEMU closed the monitor".into()));
        }
        if !line.ends_with('\n') {
            return Err(QmpError::Protocol(format!(
                "a line from QEMU longer than {MAX_LINE} bytes"
            )));
        }
        serde_json::from_str(&line)
            .map_err(|e| QmpError::Protocol(format!("bad JSON from QEMU: {e}")))
    }

    /// Run a command; events that arrive before the answer are skipped.
    pub fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value, QmpError> {
        let mut msg = json!({ "execute": command });
        if let Some(a) = arguments {
            msg["arguments"] = a;
        }
        let mut line = msg.to_string();
        line.push('\n');
        self.writer
            .write_all(line.as_bytes())
            .map_err(|e| QmpError::Io(self.path.clone(), e))?;
        loop {
            let v = self.read()?;
            if let Some(r) = v.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = v.get("error") {
                return Err(QmpError::Command {
                    command: command.to_string(),
                    desc: e["desc"].as_str().unwrap_or("unknown error").to_string(),
                });
            }
            // An event: {"event": ...}; kept, and read on for our answer.
            if v.get("event").is_some() && self.events.len() < MAX_EVENTS {
                self.events.push(v);
            }
        }
    }

    /// Wait up to `timeout` for an event that `wanted` accepts (also one
    /// that came while a command ran); false when none came in time.
    pub fn wait_event(
        &mut self,
        timeout: Duration,
        wanted: impl Fn(&Value) -> bool,
    ) -> Result<bool, QmpError> {
        if self.events.iter().any(&wanted) {
            return Ok(true);
        }
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Ok(false);
            }
            let io = |e| QmpError::Io(self.path.clone(), e);
            self.writer.set_read_timeout(Some(left)).map_err(io)?;
            match self.read() {
                Ok(v) if wanted(&v) => return Ok(true),
                Ok(_) => {}
                Err(QmpError::Io(_, e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(false)
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// One command on a fresh connection.
pub fn call(path: &Path, command: &str, arguments: Option<Value>) -> Result<Value, QmpError> {
    Qmp::connect(path, Duration::from_secs(5))?.execute(command, arguments)
}

/// QEMU's run state: `running`, `shutdown` (the guest powered off; QEMU
/// waits because of `-no-shutdown`), `paused`, `prelaunch`, ...
pub fn status(path: &Path) -> Result<String, QmpError> {
    let v = call(path, "query-status", None)?;
    Ok(v["status"].as_str().unwrap_or("unknown").to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::net::UnixListener;

    /// A scripted monitor: greets, then answers each line from `answers`.
    fn fake_qemu(
        answers: Vec<&'static str>,
    ) -> (
        tempfile::TempDir,
        std::path::PathBuf,
        std::thread::JoinHandle<Vec<String>>,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qmp.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let h = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            s.write_all(b"{\"QMP\": {\"version\": {}, \"capabilities\": []}}\n")
                .unwrap();
            let mut got = Vec::new();
            let mut r = BufReader::new(s.try_clone().unwrap());
            for a in answers {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap() == 0 {
                    break;
                }
                got.push(line.trim().to_string());
                s.write_all(a.as_bytes()).unwrap();
            }
            let mut rest = String::new();
            let _ = r.read_to_string(&mut rest);
            got
        });
        (dir, path, h)
    }

    #[test]
    fn negotiates_and_skips_events() {
        let (_d, path, h) = fake_qemu(vec![
            "{\"return\": {}}\n",
            "{\"event\": \"RESET\"}\n{\"return\": {\"status\": \"shutdown\", \"running\": false}}\n",
        ]);
        assert_eq!(status(&path).unwrap(), "shutdown");
        let got = h.join().unwrap();
        assert!(got[0].contains("qmp_capabilities"));
        assert!(got[1].contains("query-status"));
    }

    #[test]
    fn errors_are_reported_not_panicked() {
        let (_d, path, _h) = fake_qemu(vec![
            "{\"return\": {}}\n",
            "{\"error\": {\"class\": \"GenericError\", \"desc\": \"nope\"}}\n",
        ]);
        let e = call(&path, "system_reset", None).unwrap_err();
        assert!(e.to_string().contains("nope"), "{e}");
        // A closed monitor is an error too.
        let (_d2, path2, _h2) = fake_qemu(vec![]);
        call(&path2, "query-status", None).unwrap_err();
        call(Path::new("/nonexistent/qmp.sock"), "query-status", None).unwrap_err();
    }
}
