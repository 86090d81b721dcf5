//! The drain before a planned rollout step (engine/rollout.rs): the DPE
//! asks [`hold`] before it carries out each step.

use super::act::Ctx;
use super::ladder::SlotView;
use super::pool::{self, Member, Planned, Target};
use super::pool_haproxy::call;
use super::pool_sync::{failed, one, put, Outcome};
use super::rollout::Step;
use crate::app;
use crate::store::pool::{MemberIntent, PoolMemberRow};
use crate::store::{now_ms, InstanceId, Millis};

/// Before a rollout step stops or changes a slot's instance in place
/// (a reconfigure, or the replacement of a stateful one), its members are
/// drained: true while the step must wait (sessions left, within
/// [`pool::DRAIN_DEADLINE`]). The DPE calls it before each step.
pub async fn hold(ctx: &Ctx<'_>, views: &[SlotView], step: &Step) -> app::Result<bool> {
    let slot = match step {
        Step::Reconfigure { slot, .. } => *slot,
        Step::Replace {
            slot,
            keep_old: false,
            ..
        } => *slot,
        _ => return Ok(false),
    };
    let Some(inst) = views.get(slot).and_then(|v| v.slot.instance_id) else {
        return Ok(false);
    };
    let id = ctx.snap.deployable.id;
    let rows = ctx.app.db(move |s| s.pool_members(id)).await?;
    if another_draining(&rows, inst, now_ms()) {
        // One member out of a backend at a time: the slot done before
        // this one is made ready again first (later in this pass).
        return Ok(true);
    }
    let mut wait = false;
    for r in rows.iter().filter(|r| r.instance_id == inst) {
        let configured = &ctx.app.settings.balancers;
        let Some(h) = ctx.app.engines.balancers().get(&r.balancer, configured) else {
            continue;
        };
        let m = Member {
            balancer: r.balancer.clone(),
            backend: r.backend.clone(),
            server: r.server.clone(),
            addr: r.addr.clone(),
            instance: r.instance_id,
            slot: views[slot].slot.name(),
        };
        let p = Planned {
            member: m,
            target: Target::Drain { then_remove: false },
            why: format!(
                "before a rollout step (generation {})",
                ctx.snap.deployable.generation
            ),
        };
        let be = r.backend.clone();
        let servers = match call(&h, move |b| b.servers(&be)).await {
            Ok(s) => s,
            Err(e) => {
                // It cannot be drained: wait out the deadline from the
                // intent, then go on.
                let mut out = Outcome::default();
                failed(ctx, &e, std::slice::from_ref(&p), &mut out).await?;
                if r.state != MemberIntent::Drain {
                    put(ctx, &p.member, MemberIntent::Drain, now_ms()).await?;
                    wait = true;
                } else if !pool::drained(Some(1), r.updated_at, now_ms()) {
                    wait = true;
                }
                continue;
            }
        };
        let present = servers.iter().find(|s| s.name == r.server);
        let mut out = Outcome::default();
        if let Err(e) = one(ctx, &h, &p, Some(r), present, &mut out).await? {
            failed(ctx, &e, std::slice::from_ref(&p), &mut out).await?;
        }
        let since = if r.state == MemberIntent::Drain {
            r.updated_at
        } else {
            now_ms()
        };
        let conns = present.map(|s| s.conns);
        if r.state != MemberIntent::Drain || !pool::drained(conns, since, now_ms()) {
            wait = true;
        }
    }
    Ok(wait)
}

/// Whether another member of a backend `inst` is still ready in is
/// drained (recently: a drain left over is not waited for).
fn another_draining(rows: &[PoolMemberRow], inst: InstanceId, now: Millis) -> bool {
    rows.iter()
        .filter(|m| m.instance_id == inst && m.state == MemberIntent::Ready)
        .any(|m| {
            rows.iter().any(|r| {
                r.instance_id != inst
                    && r.balancer == m.balancer
                    && r.backend == m.backend
                    && r.state == MemberIntent::Drain
                    && now - r.updated_at < pool::DRAIN_DEADLINE + pool::DRAIN_GRACE
            })
        })
}
