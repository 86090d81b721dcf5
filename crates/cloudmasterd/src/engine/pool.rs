//! Balancer membership of a deployable's services (`pool:` in a service):
//! what each server should be, from the snapshot alone (pure). The DPE
//! carries it out (pool_sync.rs) through a [`Balancer`] (HAProxy's runtime
//! API, pool_haproxy.rs).
//!
//! A slot's current instance, healthy, is server
//! `cm-{deployable}-{slot}-{incarnation}` at its host's `forward_addr` and
//! the forwarded port. A member that failed or whose instance is gone is
//! removed at once; one stopped on purpose (retired by a rolling update,
//! scaled down, or about to be reconfigured or replaced by a rollout) is
//! drained first: no new requests, out once it has no session left or
//! [`DRAIN_DEADLINE`] passed. Only servers the deployable's own
//! `pool_members` rows name are ever touched.

use super::ladder::SlotView;
use super::observe::Health;
use crate::store::engine::Snapshot;
use crate::store::pool::{MemberIntent, PoolMemberRow};
use crate::store::{InstanceId, Millis, SlotRow};
use cm_api::words::{EngineAction, SlotState};

/// How long a planned stop waits for a member's sessions to end.
pub const DRAIN_DEADLINE: Millis = 10_000;
/// A drain for a rollout step that did not come is given up after this
/// much more (the member serves again).
pub const DRAIN_GRACE: Millis = 5_000;

/// A server's state in its backend, as the balancer reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberState {
    Ready,
    Drain,
    Maint,
}

/// One server of a backend, as the balancer has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerView {
    pub name: String,
    pub state: MemberState,
    /// Its current sessions.
    pub conns: u64,
}

/// One server the engine puts in a backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub balancer: String,
    pub backend: String,
    pub server: String,
    /// `ip:port`.
    pub addr: String,
    pub instance: InstanceId,
    /// The slot it serves (`web-0`), for events.
    pub slot: String,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("balancer {balancer}: {message}")]
pub struct PoolError {
    pub balancer: String,
    pub message: String,
    /// It did not answer (a timeout, a socket error), as opposed to
    /// refusing a request.
    pub unreachable: bool,
}

/// A balancer's runtime API. Calls block (a unix socket); the DPE runs
/// them through `spawn_blocking` with a timeout (pool_haproxy.rs).
pub trait Balancer: Send + Sync {
    /// The servers of a backend.
    fn servers(&self, backend: &str) -> Result<Vec<ServerView>, PoolError>;
    /// Add the server, health-checked, and make it ready.
    fn add(&self, m: &Member) -> Result<(), PoolError>;
    /// Take new requests again.
    fn ready(&self, backend: &str, server: &str) -> Result<(), PoolError>;
    /// Stop sending it new requests.
    fn drain(&self, backend: &str, server: &str) -> Result<(), PoolError>;
    /// Take it out (maintenance, its sessions closed) and delete it.
    fn remove(&self, backend: &str, server: &str) -> Result<(), PoolError>;
}

/// What a member should be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Ready,
    /// Drained. `then_remove`: a planned stop, out once drained (the
    /// instance is stopped only then); else held drained while a rollout
    /// step changes it in place.
    Drain {
        then_remove: bool,
    },
    /// Out now: it failed, or its instance is gone.
    Remove,
}

/// One member and what it should be, with why (an event's reason).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub member: Member,
    pub target: Target,
    pub why: String,
}

/// The prefix of every server of this deployable.
pub fn prefix(deployable: &str) -> String {
    format!("cm-{deployable}-")
}

/// The members the pools should have now: each live slot's current
/// instance that is healthy, outside a rollout step.
pub fn desired(snap: &Snapshot, views: &[SlotView]) -> Vec<Member> {
    let mut out = Vec::new();
    for v in views {
        let s = &v.slot;
        let serving = v.health == Health::Healthy
            && s.state == SlotState::Healthy
            && s.action != Some(EngineAction::Rollout);
        if serving {
            out.extend(members_of(snap, s));
        }
    }
    out.sort_by(|a, b| a.server.cmp(&b.server));
    out
}

/// The members a slot's current instance makes, one per pool of its
/// assembly's services.
pub fn members_of(snap: &Snapshot, s: &SlotRow) -> Vec<Member> {
    let Some(inst) = s.instance_id.and_then(|i| snap.instance(i)) else {
        return vec![];
    };
    let Some(asm) = snap
        .spec
        .spec
        .assemblies
        .iter()
        .find(|a| a.name == s.assembly)
    else {
        return vec![];
    };
    let ip = snap
        .host(inst.host_id)
        .and_then(|h| h.facts.forward_addr.clone())
        .unwrap_or_else(|| "127.0.0.1".into());
    let slot = s.name();
    let server = format!("{}{slot}-{}", prefix(&snap.deployable.name), s.incarnation);
    let mut out: Vec<Member> = Vec::new();
    for svc in &asm.services {
        let Some(pool) = &svc.pool else { continue };
        let Some(guest) = asm.ports.iter().find(|p| p.name == pool.port) else {
            continue;
        };
        let Some(fwd) = inst.spec.ports.iter().find(|f| f.guest == guest.guest) else {
            continue;
        };
        if out
            .iter()
            .any(|m| m.balancer == pool.balancer && m.backend == pool.backend)
        {
            continue;
        }
        out.push(Member {
            balancer: pool.balancer.clone(),
            backend: pool.backend.clone(),
            server: server.clone(),
            addr: format!("{ip}:{}", fwd.host),
            instance: inst.id,
            slot: slot.clone(),
        });
    }
    out
}

/// A drained member of a slot whose rollout step has not finished: kept
/// drained (the step acts once it is drained, pool_sync::hold).
fn held_for_step(snap: &Snapshot, s: &SlotRow, r: &PoolMemberRow, now: Millis) -> bool {
    r.state == MemberIntent::Drain
        && (s.action == Some(EngineAction::Rollout)
            || (s.spec_generation < snap.deployable.generation
                && now - r.updated_at < DRAIN_DEADLINE + DRAIN_GRACE))
}

fn of_row(snap: &Snapshot, r: &PoolMemberRow) -> Member {
    let slot = snap
        .instance(r.instance_id)
        .and_then(|i| i.spec.owner.as_ref().map(|o| o.slot.clone()))
        .unwrap_or_else(|| r.server.clone());
    Member {
        balancer: r.balancer.clone(),
        backend: r.backend.clone(),
        server: r.server.clone(),
        addr: r.addr.clone(),
        instance: r.instance_id,
        slot,
    }
}

/// Every member the deployable wants or has, and what it should be now.
pub fn plan(
    snap: &Snapshot,
    views: &[SlotView],
    rows: &[PoolMemberRow],
    now: Millis,
) -> Vec<Planned> {
    let row_of = |m: &Member| {
        rows.iter()
            .find(|r| r.balancer == m.balancer && r.backend == m.backend && r.server == m.server)
    };
    let mut out = Vec::new();
    let want = desired(snap, views);
    for m in &want {
        let slot = snap
            .slots
            .iter()
            .find(|s| s.instance_id == Some(m.instance));
        let held = match (row_of(m), slot) {
            (Some(r), Some(s)) => held_for_step(snap, s, r, now),
            _ => false,
        };
        out.push(Planned {
            member: m.clone(),
            target: if held {
                Target::Drain { then_remove: false }
            } else {
                Target::Ready
            },
            why: if held {
                "drained for a rollout step".into()
            } else {
                "healthy".into()
            },
        });
    }
    for r in rows {
        if want
            .iter()
            .any(|m| m.balancer == r.balancer && m.backend == r.backend && m.server == r.server)
        {
            continue;
        }
        let (target, why) = row_target(snap, views, r, now);
        out.push(Planned {
            member: of_row(snap, r),
            target,
            why,
        });
    }
    out
}

fn row_target(
    snap: &Snapshot,
    views: &[SlotView],
    r: &PoolMemberRow,
    now: Millis,
) -> (Target, String) {
    let i = r.instance_id;
    let Some(inst) = snap.instance(i).filter(|x| !x.desired.deleted) else {
        return (Target::Remove, "its instance is gone".into());
    };
    let draining = r.state == MemberIntent::Drain;
    if let Some(s) = snap.slots.iter().find(|s| s.instance_id == Some(i)) {
        if s.state == SlotState::Retiring {
            return (
                Target::Drain { then_remove: true },
                "its slot is scaled down".into(),
            );
        }
        if held_for_step(snap, s, r, now) {
            return (
                Target::Drain { then_remove: false },
                "drained for a rollout step".into(),
            );
        }
        let health = views
            .iter()
            .find(|v| v.slot.assembly == s.assembly && v.slot.idx == s.idx)
            .map(|v| &v.health);
        return match health {
            // One late beat is watched, not acted on (as the ladder does).
            Some(Health::Healthy | Health::Suspect) => (Target::Ready, "healthy".into()),
            Some(h) => (Target::Remove, format!("{} is {}", inst.name, word(h))),
            None => (Target::Remove, format!("{} has no slot", inst.name)),
        };
    }
    if let Some(s) = snap.slots.iter().find(|s| s.retiring.contains(&i)) {
        if s.action == Some(EngineAction::Rollout) {
            // The old instance serves until the new one is done.
            return if draining {
                (Target::Drain { then_remove: false }, "rolling".into())
            } else {
                (
                    Target::Ready,
                    "serving until its replacement is healthy".into(),
                )
            };
        }
        return (
            Target::Drain { then_remove: true },
            "replaced by a rolling update".into(),
        );
    }
    (
        Target::Remove,
        format!("{} is no slot's instance", inst.name),
    )
}

fn word(h: &Health) -> String {
    match h {
        Health::Missing => "missing".into(),
        Health::Booting => "booting".into(),
        Health::Healthy => "healthy".into(),
        Health::Degraded { services, .. } => format!("degraded ({})", services.join(", ")),
        Health::Suspect => "suspect".into(),
        Health::Silent => "silent".into(),
        Health::Down { why } => format!("down ({why})"),
        Health::Unreachable { .. } => "unreachable".into(),
    }
}

/// Whether a drain is over: no session left, or the deadline passed.
pub fn drained(conns: Option<u64>, since: Millis, now: Millis) -> bool {
    conns.is_none_or(|c| c == 0) || now - since >= DRAIN_DEADLINE
}

#[cfg(test)]
#[path = "pool_tests.rs"]
mod tests;
