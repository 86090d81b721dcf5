//! The referee: the balancer in front of the nodes, which `cm stop` and
//! `cm play` take nodes out of and put back into. HAProxy through its
//! runtime API (the default) or Apache mod_proxy_balancer through a block
//! of its config that cm owns (the seed's referee). Either is reached where
//! it runs: on this machine, or over SSH like any node.

mod apache;
mod haproxy;
pub mod lock;
pub mod runtime;

use crate::inventory::{Inventory, Node, Referee, RefereeKind};
use crate::runner::{RunError, Runner};
use crate::ssh::Transport;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum RefereeError {
    #[error(transparent)]
    Run(#[from] RunError),
    #[error("the balancer answered '{answer}' to '{request}'")]
    Refused { request: String, answer: String },
    #[error("{0}")]
    Protocol(String),
    #[error("node {0} is not a server in the balancer")]
    NotInBalancer(String),
    #[error("this would leave no server in the pool (serving now: {serving}); add --force to do it anyway")]
    EmptyPool { serving: String },
    #[error("{0}")]
    Foreign(String),
    #[error(
        "the new balancer config fails its check ({command}): {output}; the old file was put back"
    )]
    CheckFailed { command: String, output: String },
    #[error("{node} did not come up within {secs}s (state {state})")]
    NotUp {
        node: String,
        secs: u64,
        state: String,
    },
    #[error("no referee in the inventory: add a [referee] (cloudManager.ini) or [balancer] (TOML) section")]
    Missing,
    #[error("another cm stop/play on this referee held its lock ({lock} on {host}) for {secs}s; nothing was changed, try again")]
    Locked {
        lock: String,
        host: String,
        secs: u64,
    },
    #[error("{0}")]
    LockFailed(String),
}

/// A node as the balancer sees it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Member {
    pub node: String,
    /// HAProxy's status (UP, DOWN, DRAIN, MAINT, ...) or Apache's (active, stopped).
    pub state: String,
    pub weight: Option<u32>,
    /// Current connections, where the balancer counts them.
    pub conns: Option<u64>,
    /// New requests may go to it.
    pub serving: bool,
}

#[derive(Debug, Clone, Copy)]
pub struct ChangeOpts {
    /// stop: how long to wait for connections to end; play: for the node to be up.
    pub wait: Duration,
    /// Allow emptying the pool.
    pub force: bool,
}

/// Progress lines for the person watching (`B: draining`, ...).
pub type Log<'a> = &'a mut dyn FnMut(&str);

pub trait Balancer {
    /// Where the balancer runs.
    fn runner(&self) -> &Runner;
    /// The lock file that makes stops and plays on this referee take turns.
    fn lock_file(&self) -> String;
    /// Every node of the inventory the balancer knows, with its state.
    fn members(&self, inv: &Inventory) -> Result<Vec<Member>, RefereeError>;
    /// Take `nodes` out of the pool.
    fn stop(
        &self,
        inv: &Inventory,
        nodes: &[&Node],
        opts: ChangeOpts,
        log: Log,
    ) -> Result<(), RefereeError>;
    /// Put `nodes` back into the pool.
    fn play(
        &self,
        inv: &Inventory,
        nodes: &[&Node],
        opts: ChangeOpts,
        log: Log,
    ) -> Result<(), RefereeError>;
}

/// How to reach the referee: `local`/`localhost` means this machine; any
/// other address is reached over SSH, with the referee's SSH settings.
pub fn runner(r: &Referee, transport: &Transport) -> Runner {
    if r.is_local() {
        Runner::Local
    } else {
        let node = Node {
            name: "referee".into(),
            host: r.host.clone(),
            web_port: None,
            ssh: r.ssh.clone(),
            balancer_name: None,
        };
        Runner::Ssh {
            transport: Box::new(transport.clone()),
            node: Box::new(node),
            tunnel: Default::default(),
        }
    }
}

pub fn open(inv: &Inventory, transport: &Transport) -> Result<Box<dyn Balancer>, RefereeError> {
    let r = inv.referee.as_ref().ok_or(RefereeError::Missing)?;
    let runner = runner(r, transport);
    Ok(match &r.kind {
        RefereeKind::Haproxy {
            socket,
            backend,
            state_file,
        } => Box::new(haproxy::Haproxy {
            rt: runtime::HaproxyRuntime::new(runner, socket.clone()),
            backend: backend.clone(),
            state_file: state_file.as_ref().map(|p| p.display().to_string()),
        }),
        RefereeKind::Apache {
            config,
            cluster_id,
            folder,
            check_command,
            reload_command,
        } => Box::new(apache::Apache {
            runner,
            config: config.display().to_string(),
            cluster_id: cluster_id.clone(),
            folder: folder.clone(),
            check: check_command.clone(),
            reload: reload_command.clone(),
        }),
    })
}

/// Take `bal`'s lock where it runs, for one stop or play whose own
/// waits are at most `wait`: long enough to let another run's drain end.
pub fn lock(bal: &dyn Balancer, wait: Duration) -> Result<lock::Held, RefereeError> {
    let budget = (wait * 2 + Duration::from_secs(30)).max(Duration::from_secs(120));
    lock::take(bal.runner(), &bal.lock_file(), budget)
}

/// The node's server name in the balancer.
pub fn server_name(n: &Node) -> &str {
    n.balancer_name.as_deref().unwrap_or(&n.name)
}

/// Refuse (without `force`) a stop that leaves no member serving.
pub fn check_pool(members: &[Member], stopping: &[&Node], force: bool) -> Result<(), RefereeError> {
    let serving: Vec<&str> = members
        .iter()
        .filter(|m| m.serving)
        .map(|m| m.node.as_str())
        .collect();
    let left = serving
        .iter()
        .filter(|m| !stopping.iter().any(|n| n.name == **m))
        .count();
    if left == 0 && !force {
        let serving = if serving.is_empty() {
            "none".to_string()
        } else {
            serving.join(",")
        };
        return Err(RefereeError::EmptyPool { serving });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(n: &str, serving: bool) -> Member {
        Member {
            node: n.into(),
            state: if serving { "UP" } else { "MAINT" }.into(),
            weight: Some(1),
            conns: Some(0),
            serving,
        }
    }

    fn node(n: &str) -> Node {
        Node {
            name: n.into(),
            host: "h".into(),
            web_port: None,
            ssh: Default::default(),
            balancer_name: None,
        }
    }

    #[test]
    fn the_pool_is_never_emptied_without_force() {
        let m = vec![member("A", true), member("B", true), member("C", false)];
        let (a, b) = (node("A"), node("B"));
        check_pool(&m, &[&a], false).unwrap();
        let e = check_pool(&m, &[&a, &b], false).unwrap_err();
        assert_eq!(e.to_string(), "this would leave no server in the pool (serving now: A,B); add --force to do it anyway");
        check_pool(&m, &[&a, &b], true).unwrap();
    }
}
