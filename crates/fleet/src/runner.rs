//! Running a command where the referee lives: on this machine, or on the
//! referee host over SSH like any node. Used for the balancer (reading and
//! writing its config, talking to its runtime socket, reloading it).

use crate::inventory::Node;
use crate::ssh::Transport;
use crate::tunnel::{Tunnel, TunnelError};
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot run {0}: {1}")]
    Spawn(String, std::io::Error),
    #[error("{what} on {host} failed (exit {rc}): {stderr}")]
    Failed {
        what: String,
        host: String,
        rc: i32,
        stderr: String,
    },
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error(transparent)]
    Tunnel(#[from] TunnelError),
}

/// What a command printed, and how it ended.
#[derive(Debug, Clone, Default)]
pub struct Output {
    pub rc: i32,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

/// How long a runtime socket may take to take a request or to answer
/// (each read and write): a balancer that hangs is an error, not a hang.
pub const SOCKET_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// The most of an answer read from a runtime socket (`show stat` of a
/// large configuration is well under this).
pub const SOCKET_ANSWER_MAX: u64 = 16 << 20;

/// Write one request line, read the answer to its end (at most
/// [`SOCKET_ANSWER_MAX`]; a longer one is an error).
fn exchange<S: Read + Write>(mut s: S, line: &str) -> std::io::Result<String> {
    s.write_all(line.as_bytes())?;
    let mut answer = Vec::new();
    (&mut s)
        .take(SOCKET_ANSWER_MAX + 1)
        .read_to_end(&mut answer)?;
    if answer.len() as u64 > SOCKET_ANSWER_MAX {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("an answer longer than {SOCKET_ANSWER_MAX} bytes"),
        ));
    }
    String::from_utf8(answer).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

#[derive(Debug, Clone)]
pub enum Runner {
    Local,
    /// Boxed: a transport and a node are large beside `Local`.
    Ssh {
        transport: Box<Transport>,
        node: Box<Node>,
        /// The open tunnel to a socket there (its remote address with it).
        tunnel: Arc<Mutex<Option<(String, Tunnel)>>>,
    },
}

impl Runner {
    pub fn host(&self) -> String {
        match self {
            Runner::Local => "this machine".into(),
            Runner::Ssh { node, .. } => node.host.clone(),
        }
    }

    /// `script` run by a shell where the referee runs.
    pub(crate) fn command(&self, script: &str) -> Command {
        match self {
            Runner::Local => {
                let mut c = Command::new("/bin/sh");
                c.arg("-c").arg(script);
                c
            }
            Runner::Ssh {
                transport, node, ..
            } => {
                let argv = transport.ssh(node, script);
                let mut c = Command::new(&argv[0]);
                c.args(&argv[1..]);
                c
            }
        }
    }

    /// Run a shell command, feeding it `stdin`; any exit code is returned.
    pub fn sh(&self, script: &str, stdin: Option<&[u8]>) -> Result<Output, RunError> {
        let mut cmd = self.command(script);
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| RunError::Spawn(script.into(), e))?;
        if let (Some(data), Some(mut w)) = (stdin, child.stdin.take()) {
            w.write_all(data)
                .map_err(|e| RunError::Io(format!("writing to {script}"), e))?;
        }
        let out = child
            .wait_with_output()
            .map_err(|e| RunError::Io(script.into(), e))?;
        Ok(Output {
            rc: out.status.code().unwrap_or(-1),
            stdout: out.stdout,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }

    /// Like [`Runner::sh`], but a non-zero exit is an error.
    pub fn sh_ok(
        &self,
        what: &str,
        script: &str,
        stdin: Option<&[u8]>,
    ) -> Result<Output, RunError> {
        let out = self.sh(script, stdin)?;
        if out.rc != 0 {
            return Err(RunError::Failed {
                what: what.into(),
                host: self.host(),
                rc: out.rc,
                stderr: out.stderr,
            });
        }
        Ok(out)
    }

    /// Send one request line to a stream socket where the referee runs and
    /// read the answer to the end: `unix:/path` (or a bare path) or
    /// `tcp:HOST:PORT`. Over SSH, through a [`Tunnel`] (`ssh -L`) kept open
    /// for the rest of the run.
    pub fn socket_request(&self, socket: &str, request: &str) -> Result<String, RunError> {
        let target = socket.strip_prefix("unix:").unwrap_or(socket);
        let line = format!("{}\n", request.trim_end());
        match self {
            Runner::Local => {
                let io = |e| RunError::Io(format!("socket {socket}"), e);
                if let Some(addr) = target.strip_prefix("tcp:") {
                    let s = std::net::TcpStream::connect(addr).map_err(io)?;
                    s.set_read_timeout(Some(SOCKET_TIMEOUT)).map_err(io)?;
                    s.set_write_timeout(Some(SOCKET_TIMEOUT)).map_err(io)?;
                    exchange(s, &line).map_err(io)
                } else {
                    let s = std::os::unix::net::UnixStream::connect(target).map_err(io)?;
                    s.set_read_timeout(Some(SOCKET_TIMEOUT)).map_err(io)?;
                    s.set_write_timeout(Some(SOCKET_TIMEOUT)).map_err(io)?;
                    exchange(s, &line).map_err(io)
                }
            }
            Runner::Ssh {
                transport,
                node,
                tunnel,
            } => {
                let remote = target.strip_prefix("tcp:").unwrap_or(target);
                let mut t = tunnel.lock().unwrap_or_else(|p| p.into_inner());
                let local = match t.as_ref() {
                    Some((r, tun)) if r == remote => tun.local.clone(),
                    _ => {
                        *t = None;
                        let opened = Tunnel::open(transport, node, remote)?;
                        let local = opened.local.clone();
                        *t = Some((remote.to_string(), opened));
                        local
                    }
                };
                let io = |e| RunError::Io(format!("socket {socket} on {}", node.host), e);
                let s = std::os::unix::net::UnixStream::connect(&local).map_err(io)?;
                s.set_read_timeout(Some(SOCKET_TIMEOUT)).map_err(io)?;
                s.set_write_timeout(Some(SOCKET_TIMEOUT)).map_err(io)?;
                exchange(s, &line).map_err(io)
            }
        }
    }

    /// The file's content, or None when it does not exist.
    pub fn read_file(&self, path: &str) -> Result<Option<Vec<u8>>, RunError> {
        let q = crate::ssh::quote(path);
        let out = self.sh(
            &format!("if [ -e {q} ]; then cat {q}; else exit 3; fi"),
            None,
        )?;
        match out.rc {
            0 => Ok(Some(out.stdout)),
            3 => Ok(None),
            rc => Err(RunError::Failed {
                what: format!("reading {path}"),
                host: self.host(),
                rc,
                stderr: out.stderr,
            }),
        }
    }

    /// Replace the file in one rename, keeping its mode when it existed.
    pub fn write_file(&self, path: &str, data: &[u8]) -> Result<(), RunError> {
        let q = crate::ssh::quote(path);
        let tmp = crate::ssh::quote(&format!("{path}.cm-new"));
        let script = format!(
            "cat > {tmp} && {{ [ ! -e {q} ] || chmod --reference={q} {tmp}; }} && mv -f {tmp} {q}"
        );
        self.sh_ok(&format!("writing {path}"), &script, Some(data))
            .map(|_| ())
    }
}
