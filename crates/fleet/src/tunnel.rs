//! A socket on the referee host made local: `ssh -N -L LOCAL:REMOTE HOST`
//! (stream-local forwarding), so cm talks to HAProxy's runtime socket on
//! another machine as if it were here. `ssh -W` cannot do this: it forwards
//! to `host:port` only, not to a unix socket path.
//!
//! One tunnel per run, opened on first use and closed when dropped. It uses
//! its own connection (`ControlPath=none`), so closing it leaves any shared
//! ControlMaster alone.

use crate::inventory::Node;
use crate::ssh::Transport;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    #[error("cannot make a directory for the tunnel's socket: {0}")]
    Dir(std::io::Error),
    #[error("cannot run ssh: {0}")]
    Spawn(std::io::Error),
    #[error("ssh -L {remote} on {host} failed: {stderr}")]
    Failed {
        remote: String,
        host: String,
        stderr: String,
    },
    #[error("ssh -L {remote} on {host}: no local socket after {secs}s")]
    Timeout {
        remote: String,
        host: String,
        secs: u64,
    },
}

#[derive(Debug)]
pub struct Tunnel {
    child: Child,
    /// Holds the local socket; removed with the tunnel.
    _dir: tempfile::TempDir,
    pub local: PathBuf,
}

impl Tunnel {
    /// Forward a local socket to `remote` (`/path` or `HOST:PORT`) as seen
    /// from `node`, and wait until it accepts connections.
    pub fn open(transport: &Transport, node: &Node, remote: &str) -> Result<Tunnel, TunnelError> {
        let dir = tempfile::Builder::new()
            .prefix("cm-fwd-")
            .tempdir()
            .map_err(TunnelError::Dir)?;
        let local = dir.path().join("s");
        let argv = transport.local_forward(node, &local.display().to_string(), remote);
        let mut child = Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(TunnelError::Spawn)?;
        let limit = transport.connect_limit();
        let start = Instant::now();
        loop {
            if std::os::unix::net::UnixStream::connect(&local).is_ok() {
                return Ok(Tunnel {
                    child,
                    _dir: dir,
                    local,
                });
            }
            if let Ok(Some(_)) = child.try_wait() {
                let mut stderr = String::new();
                if let Some(e) = child.stderr.take() {
                    let _ = e.take(64 * 1024).read_to_string(&mut stderr);
                }
                return Err(TunnelError::Failed {
                    remote: remote.into(),
                    host: node.host.clone(),
                    stderr: stderr.trim().to_string(),
                });
            }
            if start.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                return Err(TunnelError::Timeout {
                    remote: remote.into(),
                    host: node.host.clone(),
                    secs: limit.as_secs(),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
