//! HAProxy through its runtime API (the stats socket at admin level):
//! `show stat` for states and connections, `set server BE/SRV state
//! drain|maint|ready` to change them, and `show servers state` saved to the
//! `server-state-file` so a reload (`load-server-state-from-file global`)
//! keeps what cm set.

use super::runtime::{HaproxyRuntime, ServerState};
use super::*;
use std::time::Instant;

pub struct Haproxy {
    /// Its runtime socket, reached where it runs (runtime.rs).
    pub rt: HaproxyRuntime,
    pub backend: String,
    pub state_file: Option<String>,
}

/// One server line of `show stat`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerStat {
    pub name: String,
    pub status: String,
    pub weight: Option<u32>,
    pub conns: u64,
}

impl ServerStat {
    /// Takes new requests: up (or not checked) and neither draining nor in maintenance.
    pub fn serving(&self) -> bool {
        self.status.starts_with("UP") || self.status == "no check"
    }

    /// Fully up: `UP` after its checks (not `UP 1/2`, going down), or
    /// serving without checks.
    pub fn up(&self) -> bool {
        self.status == "UP" || self.status == "no check"
    }
}

/// Parse `show stat` CSV (header `# pxname,svname,...`) for one backend's servers.
pub fn parse_stat(csv: &str, backend: &str) -> Result<Vec<ServerStat>, RefereeError> {
    let mut lines = csv.lines();
    let header = lines
        .next()
        .and_then(|h| h.strip_prefix("# "))
        .ok_or_else(|| RefereeError::Protocol(format!("'show stat' answered '{}'", csv.trim())))?;
    let cols: Vec<&str> = header.split(',').collect();
    let col = |name: &str| {
        cols.iter()
            .position(|c| *c == name)
            .ok_or_else(|| RefereeError::Protocol(format!("'show stat' has no {name} column")))
    };
    let (px, sv, scur, status, weight) = (
        col("pxname")?,
        col("svname")?,
        col("scur")?,
        col("status")?,
        col("weight")?,
    );
    let mut out = Vec::new();
    for l in lines.filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = l.split(',').collect();
        let get = |i: usize| f.get(i).copied().unwrap_or("");
        if get(px) != backend || matches!(get(sv), "BACKEND" | "FRONTEND") {
            continue;
        }
        out.push(ServerStat {
            name: get(sv).to_string(),
            status: get(status).to_string(),
            weight: get(weight).parse().ok(),
            conns: get(scur).parse().unwrap_or(0),
        });
    }
    Ok(out)
}

impl Haproxy {
    fn request(&self, req: &str) -> Result<String, RefereeError> {
        self.rt.request(req)
    }

    pub fn servers(&self) -> Result<Vec<ServerStat>, RefereeError> {
        let servers = self.rt.servers(&self.backend)?;
        if servers.is_empty() {
            return Err(RefereeError::Protocol(format!(
                "HAProxy has no backend '{}' with servers",
                self.backend
            )));
        }
        Ok(servers)
    }

    fn set_state(&self, server: &str, state: ServerState) -> Result<(), RefereeError> {
        self.rt.set_state(&self.backend, server, state)
    }

    /// Save every server's state where HAProxy loads it on reload.
    fn save_state(&self) -> Result<(), RefereeError> {
        if let Some(path) = &self.state_file {
            let state = self.request("show servers state")?;
            self.rt.runner.write_file(path, state.as_bytes())?;
        }
        Ok(())
    }

    /// The backend's servers, once every one of `nodes` is known to be among them.
    fn servers_with(&self, nodes: &[&Node]) -> Result<Vec<ServerStat>, RefereeError> {
        let servers = self.servers()?;
        for n in nodes {
            Self::find(&servers, n)?;
        }
        Ok(servers)
    }

    fn find<'a>(servers: &'a [ServerStat], n: &Node) -> Result<&'a ServerStat, RefereeError> {
        servers
            .iter()
            .find(|s| s.name == server_name(n))
            .ok_or_else(|| RefereeError::NotInBalancer(n.name.clone()))
    }
}

impl Balancer for Haproxy {
    fn runner(&self) -> &Runner {
        &self.rt.runner
    }

    /// Beside the state file, else beside the runtime socket, else (a TCP
    /// socket and no state file) in /run/lock.
    fn lock_file(&self) -> String {
        let socket = &self.rt.socket;
        let unix = socket.strip_prefix("unix:").unwrap_or(socket);
        match &self.state_file {
            Some(f) => super::lock::beside(f),
            None if !unix.starts_with("tcp:") => super::lock::beside(unix),
            None => format!(
                "/run/lock/cm-haproxy-{}.lock",
                self.backend.replace('/', "_")
            ),
        }
    }

    fn members(&self, inv: &Inventory) -> Result<Vec<Member>, RefereeError> {
        let servers = self.servers()?;
        Ok(inv
            .nodes
            .iter()
            .filter_map(|n| {
                servers
                    .iter()
                    .find(|s| s.name == server_name(n))
                    .map(|s| Member {
                        node: n.name.clone(),
                        state: s.status.clone(),
                        weight: s.weight,
                        conns: Some(s.conns),
                        serving: s.serving(),
                    })
            })
            .collect())
    }

    fn stop(
        &self,
        inv: &Inventory,
        nodes: &[&Node],
        opts: ChangeOpts,
        log: Log,
    ) -> Result<(), RefereeError> {
        self.servers_with(nodes)?;
        check_pool(&self.members(inv)?, nodes, opts.force)?;
        for n in nodes {
            self.set_state(server_name(n), ServerState::Drain)?;
            log(&format!("{}: draining", n.name));
        }
        let deadline = Instant::now() + opts.wait;
        loop {
            let servers = self.servers()?;
            let busy: Vec<(&Node, u64)> = nodes
                .iter()
                .filter_map(|n| {
                    Self::find(&servers, n)
                        .ok()
                        .filter(|s| s.conns > 0)
                        .map(|s| (*n, s.conns))
                })
                .collect();
            if busy.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                for (n, c) in busy {
                    log(&format!(
                        "{}: {c} connection(s) still open after {}s; stopping anyway",
                        n.name,
                        opts.wait.as_secs()
                    ));
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        for n in nodes {
            self.set_state(server_name(n), ServerState::Maint)?;
            log(&format!("{}: stopped (maintenance)", n.name));
        }
        self.save_state()
    }

    fn play(
        &self,
        _inv: &Inventory,
        nodes: &[&Node],
        opts: ChangeOpts,
        log: Log,
    ) -> Result<(), RefereeError> {
        self.servers_with(nodes)?;
        for n in nodes {
            // Ready but down until its health checks pass again: while in
            // maintenance HAProxy keeps the old check result, and a node
            // whose service died meanwhile must not get requests (nor be
            // reported up) before a check has seen it. Refused, harmlessly,
            // for a server without checks.
            if let Err(RefereeError::Run(e)) = self.rt.health_down(&self.backend, server_name(n)) {
                return Err(e.into());
            }
            self.set_state(server_name(n), ServerState::Ready)?;
        }
        self.save_state()?;
        let deadline = Instant::now() + opts.wait;
        let mut waiting: Vec<&Node> = nodes.to_vec();
        loop {
            let servers = self.servers()?;
            let mut still = Vec::new();
            for n in waiting {
                let s = Self::find(&servers, n)?;
                if s.up() {
                    log(&format!("{}: up ({})", n.name, s.status));
                } else {
                    still.push((n, s.status.clone()));
                }
            }
            let Some((n, state)) = still.first() else {
                return Ok(());
            };
            if Instant::now() >= deadline {
                return Err(RefereeError::NotUp {
                    node: n.name.clone(),
                    secs: opts.wait.as_secs(),
                    state: state.clone(),
                });
            }
            waiting = still.into_iter().map(|(n, _)| n).collect();
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,weight,act,bck\n\
fe,FRONTEND,,,3,5,2000,10,0,0,0,0,0,,,,,OPEN,,,\n\
web,A,0,0,2,3,,40,0,0,,0,,0,0,0,0,UP,1,1,0\n\
web,B,0,0,0,1,,20,0,0,,0,,0,0,0,0,MAINT,1,1,0\n\
web,C,0,0,1,1,,20,0,0,,0,,0,0,0,0,DRAIN,0,1,0\n\
web,BACKEND,0,0,3,5,200,80,0,0,0,0,,0,0,0,0,UP,2,2,0\n";

    #[test]
    fn show_stat_reads_by_column_name() {
        let s = parse_stat(STAT, "web").unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(
            s[0],
            ServerStat {
                name: "A".into(),
                status: "UP".into(),
                weight: Some(1),
                conns: 2
            }
        );
        assert!(s[0].serving() && !s[1].serving() && !s[2].serving());
        assert!(parse_stat(STAT, "other").unwrap().is_empty());
        parse_stat("Unknown command\n", "web").unwrap_err();
    }
}
