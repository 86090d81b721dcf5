//! Balancer membership of a deployable's services (`pool:` in a service).
//! The members a pool should have are the slots whose current incarnation
//! is healthy (not retiring, not in a rollout that has not finished),
//! each as server `cm-{deployable}-{slot}-{incarnation}` at its host's
//! `forward_addr` and forwarded port. `plan` compares that with what the
//! balancer holds and touches only servers named `cm-{deployable}-`:
//! add the missing (ready once added), drain then remove the rest.
//!
//! [`Balancer`] is what a balancer's runtime API offers; HAProxy's (over
//! its admin socket) implements it in the fleet crate. Until a balancer
//! is configured on the master (`--balancer NAME=unix:PATH`), no DPE has
//! one and this is not called.
#![allow(dead_code)] // Wired to the DPE with the HAProxy runtime (fleet).

use super::observe::Health;
use crate::store::engine::Snapshot;
use cm_api::words::{EngineAction, SlotState};

/// A server's state in its backend, as the balancer reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberState {
    Ready,
    Drain,
    Maint,
}

/// One server of a backend.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Member {
    pub balancer: String,
    pub backend: String,
    pub server: String,
    pub addr: String,
}

#[derive(Debug, thiserror::Error)]
#[error("balancer {balancer}: {message}")]
pub struct PoolError {
    pub balancer: String,
    pub message: String,
}

/// A balancer's runtime API. Calls block (a unix socket); the DPE runs
/// them through `spawn_blocking` with a timeout, and an unreachable
/// balancer is a `pool.member` event and a retry next pass.
pub trait Balancer: Send + Sync {
    /// Add the server (checked, then ready).
    fn add(&self, m: &Member) -> Result<(), PoolError>;
    /// Stop sending it new connections.
    fn drain(&self, backend: &str, server: &str) -> Result<(), PoolError>;
    /// Remove it (after maint).
    fn remove(&self, backend: &str, server: &str) -> Result<(), PoolError>;
    /// The servers of a backend and their states.
    fn state(&self, backend: &str) -> Result<Vec<(String, MemberState)>, PoolError>;
}

/// What to do to one server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PoolOp {
    Add(Member),
    Drain { backend: String, server: String },
    Remove { backend: String, server: String },
}

impl PoolOp {
    pub fn action(&self) -> EngineAction {
        match self {
            PoolOp::Add(_) => EngineAction::PoolAdd,
            PoolOp::Drain { .. } => EngineAction::PoolDrain,
            PoolOp::Remove { .. } => EngineAction::PoolRemove,
        }
    }
}

/// The prefix of every server of this deployable.
pub fn prefix(deployable: &str) -> String {
    format!("cm-{deployable}-")
}

/// The members the pools should have now, from the snapshot and each
/// slot's health (`health[i]` of the snapshot's `slots[i]`).
pub fn desired(snap: &Snapshot, health: &[Health]) -> Vec<Member> {
    let mut out = Vec::new();
    for (s, h) in snap.slots.iter().zip(health) {
        let serving = *h == Health::Healthy
            && s.state == SlotState::Healthy
            && s.action != Some(EngineAction::Rollout);
        if !serving {
            continue;
        }
        let Some(inst) = s.instance_id.and_then(|i| snap.instance(i)) else {
            continue;
        };
        let Some(asm) = snap
            .spec
            .spec
            .assemblies
            .iter()
            .find(|a| a.name == s.assembly)
        else {
            continue;
        };
        let addr = snap
            .host(inst.host_id)
            .and_then(|h| h.facts.forward_addr.clone())
            .unwrap_or_else(|| "127.0.0.1".into());
        for svc in &asm.services {
            let Some(pool) = &svc.pool else { continue };
            let Some(guest) = asm.ports.iter().find(|p| p.name == pool.port) else {
                continue;
            };
            let Some(fwd) = inst.spec.ports.iter().find(|f| f.guest == guest.guest) else {
                continue;
            };
            out.push(Member {
                balancer: pool.balancer.clone(),
                backend: pool.backend.clone(),
                server: format!(
                    "{}{}-{}",
                    prefix(&snap.deployable.name),
                    s.name(),
                    s.incarnation
                ),
                addr: format!("{addr}:{}", fwd.host),
            });
        }
    }
    out.sort();
    out
}

/// The operations on one backend of one balancer: `present` is what it
/// holds (every server; only ours are touched).
pub fn plan(
    deployable: &str,
    want: &[Member],
    backend: &str,
    present: &[(String, MemberState)],
) -> Vec<PoolOp> {
    let ours = prefix(deployable);
    let mut ops = Vec::new();
    for m in want.iter().filter(|m| m.backend == backend) {
        if !present.iter().any(|(s, _)| *s == m.server) {
            ops.push(PoolOp::Add(m.clone()));
        }
    }
    for (server, state) in present.iter().filter(|(s, _)| s.starts_with(&ours)) {
        if want
            .iter()
            .any(|m| m.backend == backend && m.server == *server)
        {
            continue;
        }
        let (backend, server) = (backend.to_string(), server.clone());
        ops.push(match state {
            MemberState::Ready => PoolOp::Drain { backend, server },
            MemberState::Drain | MemberState::Maint => PoolOp::Remove { backend, server },
        });
    }
    ops
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(server: &str) -> Member {
        Member {
            balancer: "edge".into(),
            backend: "web".into(),
            server: server.into(),
            addr: "127.0.0.1:30000".into(),
        }
    }

    #[test]
    fn adds_the_missing_drains_then_removes_ours_and_leaves_others_alone() {
        let want = [m("cm-app-web-0-2"), m("cm-app-web-1-1")];
        let present = [
            ("cm-app-web-0-1".to_string(), MemberState::Ready),
            ("cm-app-web-1-1".to_string(), MemberState::Ready),
            ("cm-app-web-2-1".to_string(), MemberState::Drain),
            ("static-1".to_string(), MemberState::Ready),
            ("cm-other-web-0-1".to_string(), MemberState::Ready),
        ];
        let ops = plan("app", &want, "web", &present);
        assert_eq!(
            ops,
            vec![
                PoolOp::Add(m("cm-app-web-0-2")),
                PoolOp::Drain {
                    backend: "web".into(),
                    server: "cm-app-web-0-1".into()
                },
                PoolOp::Remove {
                    backend: "web".into(),
                    server: "cm-app-web-2-1".into()
                },
            ]
        );
        assert_eq!(ops[0].action(), EngineAction::PoolAdd);
        // Converged: nothing to do.
        let present: Vec<_> = want
            .iter()
            .map(|m| (m.server.clone(), MemberState::Ready))
            .collect();
        assert!(plan("app", &want, "web", &present).is_empty());
    }
}
