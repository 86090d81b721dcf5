//! HAProxy's runtime API (the stats socket at admin level), one request a
//! connection: what `cm stop`/`cm play` (haproxy.rs) and a deployable's pool
//! (the master's policy engine) ask of it.
//!
//! Pool membership uses dynamic servers (`add server`, `del server`), which
//! HAProxy 2.6 (Debian 12) has without `experimental-mode`. A dynamic server
//! inherits no `default-server` line and starts in maintenance with its
//! checks off, so the order is: `add_server` (its check options given in
//! full), `enable_health`, `set_state(Ready)`; and out: `set_state(Drain)`,
//! wait for `conns` to reach 0, `set_state(Maint)`, `del_server` (HAProxy
//! refuses to delete a server that is not in maintenance or still has
//! connections). docs/fleet.md, "The runtime layer".
//!
//! Names and addresses are checked before they are written into a request:
//! the runtime API takes several commands on one line separated by `;`.

use super::haproxy::parse_stat;
pub use super::haproxy::ServerStat;
use super::RefereeError;
use crate::runner::Runner;
use std::net::SocketAddr;
use std::time::Duration;

/// A balancer's runtime socket: `unix:/path`, a path, or `tcp:HOST:PORT`,
/// reached where `runner` runs.
#[derive(Debug, Clone)]
pub struct HaproxyRuntime {
    pub runner: Runner,
    pub socket: String,
}

/// A server's administrative state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerState {
    /// Takes new requests (once its checks pass).
    Ready,
    /// Keeps its connections, takes no new ones.
    Drain,
    /// Out of the pool.
    Maint,
}

impl ServerState {
    pub fn as_str(self) -> &'static str {
        match self {
            ServerState::Ready => "ready",
            ServerState::Drain => "drain",
            ServerState::Maint => "maint",
        }
    }
}

/// A dynamic server's health checks (a TCP connect, or the backend's
/// `option httpchk`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckOpts {
    /// None: no checks (the server counts as up while ready).
    pub inter: Option<Duration>,
    /// Checks passed in a row to be up.
    pub rise: u32,
    /// Checks failed in a row to be down.
    pub fall: u32,
}

impl Default for CheckOpts {
    /// Every 100 ms; up after one pass, down after two failures: a pool
    /// member that dies leaves the pool within about 200 ms.
    fn default() -> CheckOpts {
        CheckOpts {
            inter: Some(Duration::from_millis(100)),
            rise: 1,
            fall: 2,
        }
    }
}

/// Whether `name` may name a backend or a server in a request: HAProxy's
/// own identifier characters, nothing that ends or splits a command.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
}

fn check_names(backend: &str, server: &str) -> Result<String, RefereeError> {
    for n in [backend, server] {
        if !valid_name(n) {
            return Err(RefereeError::Protocol(format!(
                "'{}' cannot name a backend or server (letters, digits, - _ . : only)",
                n.escape_debug()
            )));
        }
    }
    Ok(format!("{backend}/{server}"))
}

/// The `add server` request for one server.
pub fn add_request(
    backend: &str,
    server: &str,
    addr: SocketAddr,
    check: &CheckOpts,
) -> Result<String, RefereeError> {
    let target = check_names(backend, server)?;
    let mut req = format!("add server {target} {addr}");
    if let Some(inter) = check.inter {
        req.push_str(&format!(
            " check inter {}ms rise {} fall {}",
            inter.as_millis().max(1),
            check.rise.max(1),
            check.fall.max(1)
        ));
    }
    Ok(req)
}

impl HaproxyRuntime {
    pub fn new(runner: Runner, socket: impl Into<String>) -> HaproxyRuntime {
        HaproxyRuntime {
            runner,
            socket: socket.into(),
        }
    }

    /// One request, its whole answer.
    pub fn request(&self, req: &str) -> Result<String, RefereeError> {
        Ok(self.runner.socket_request(&self.socket, req)?)
    }

    /// A request whose answer must be empty (HAProxy's "done").
    fn quiet(&self, request: String) -> Result<(), RefereeError> {
        let answer = self.request(&request)?;
        if !answer.trim().is_empty() {
            return Err(RefereeError::Refused {
                request,
                answer: answer.trim().to_string(),
            });
        }
        Ok(())
    }

    /// A request whose answer must contain `ok`.
    fn expect(&self, request: String, ok: &str) -> Result<(), RefereeError> {
        let answer = self.request(&request)?;
        if !answer.contains(ok) {
            return Err(RefereeError::Refused {
                request,
                answer: answer.trim().to_string(),
            });
        }
        Ok(())
    }

    /// The servers of `backend` (`show stat`): none for an empty backend.
    pub fn servers(&self, backend: &str) -> Result<Vec<ServerStat>, RefereeError> {
        parse_stat(&self.request("show stat")?, backend)
    }

    /// Add a dynamic server at `addr`, in maintenance, checks off.
    pub fn add_server(
        &self,
        backend: &str,
        server: &str,
        addr: SocketAddr,
        check: &CheckOpts,
    ) -> Result<(), RefereeError> {
        self.expect(
            add_request(backend, server, addr, check)?,
            "New server registered",
        )
    }

    /// Start a server's health checks (a dynamic server starts without).
    pub fn enable_health(&self, backend: &str, server: &str) -> Result<(), RefereeError> {
        self.quiet(format!("enable health {}", check_names(backend, server)?))
    }

    pub fn set_state(
        &self,
        backend: &str,
        server: &str,
        state: ServerState,
    ) -> Result<(), RefereeError> {
        self.quiet(format!(
            "set server {} state {}",
            check_names(backend, server)?,
            state.as_str()
        ))
    }

    /// Mark a server's checks failed, so that it is down until a check
    /// passes again. An error for a server without checks (ignored by the
    /// callers that do not care).
    pub fn health_down(&self, backend: &str, server: &str) -> Result<(), RefereeError> {
        self.quiet(format!(
            "set server {} health down",
            check_names(backend, server)?
        ))
    }

    /// Remove a dynamic server; it must be in maintenance with no
    /// connection left.
    pub fn del_server(&self, backend: &str, server: &str) -> Result<(), RefereeError> {
        self.expect(
            format!("del server {}", check_names(backend, server)?),
            "Server deleted",
        )
    }

    /// Close every session still on a server (a dead member's, before
    /// it is deleted).
    pub fn shutdown_sessions(&self, backend: &str, server: &str) -> Result<(), RefereeError> {
        self.quiet(format!(
            "shutdown sessions server {}",
            check_names(backend, server)?
        ))
    }

    /// A server's current connections (None: no such server).
    pub fn conns(&self, backend: &str, server: &str) -> Result<Option<u64>, RefereeError> {
        Ok(self
            .servers(backend)?
            .into_iter()
            .find(|s| s.name == server)
            .map(|s| s.conns))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::UnixListener;

    #[test]
    fn requests_are_spelled_as_haproxy_reads_them() {
        let addr: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        assert_eq!(
            add_request("web", "cm-shop-web-0-1", addr, &CheckOpts::default()).unwrap(),
            "add server web/cm-shop-web-0-1 127.0.0.1:8080 check inter 100ms rise 1 fall 2"
        );
        let none = CheckOpts {
            inter: None,
            ..CheckOpts::default()
        };
        assert_eq!(
            add_request("web", "s1", addr, &none).unwrap(),
            "add server web/s1 127.0.0.1:8080"
        );
        for bad in ["", "a;shutdown sessions", "a b", "a\nb", "a/b"] {
            add_request("web", bad, addr, &none).unwrap_err();
            add_request(bad, "s1", addr, &none).unwrap_err();
        }
    }

    /// A fake runtime socket: answers each request from `answers` in turn
    /// and hands back what it was asked.
    fn fake(answers: Vec<&'static str>) -> (HaproxyRuntime, std::thread::JoinHandle<Vec<String>>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.sock");
        let l = UnixListener::bind(&path).unwrap();
        let t = std::thread::spawn(move || {
            let _keep = dir;
            let mut asked = vec![];
            for a in answers {
                let (s, _) = l.accept().unwrap();
                let mut line = String::new();
                BufReader::new(&s).read_line(&mut line).unwrap();
                asked.push(line.trim_end().to_string());
                (&s).write_all(a.as_bytes()).unwrap();
            }
            asked
        });
        let rt = HaproxyRuntime::new(Runner::Local, format!("unix:{}", path.display()));
        (rt, t)
    }

    #[test]
    fn each_call_is_one_request_and_refusals_are_errors() {
        let stat = "# pxname,svname,scur,status,weight\nweb,s1,3,UP,1\nweb,BACKEND,3,UP,1\n";
        let (rt, asked) = fake(vec![
            "New server registered.\n",
            "\n",
            "\n",
            stat,
            "Server still has connections attached to it, cannot remove it.\n",
            "No such server.\n",
        ]);
        let addr: SocketAddr = "127.0.0.1:9000".parse().unwrap();
        rt.add_server("web", "s1", addr, &CheckOpts::default())
            .unwrap();
        rt.enable_health("web", "s1").unwrap();
        rt.set_state("web", "s1", ServerState::Drain).unwrap();
        assert_eq!(rt.conns("web", "s1").unwrap(), Some(3));
        let e = rt.del_server("web", "s1").unwrap_err();
        assert!(e.to_string().contains("still has connections"), "{e}");
        rt.set_state("web", "s1", ServerState::Maint).unwrap_err();
        assert_eq!(
            asked.join().unwrap(),
            [
                "add server web/s1 127.0.0.1:9000 check inter 100ms rise 1 fall 2",
                "enable health web/s1",
                "set server web/s1 state drain",
                "show stat",
                "del server web/s1",
                "set server web/s1 state maint",
            ]
        );
    }
}
