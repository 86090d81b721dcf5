//! One deployable's policy engine (DPE): a level-triggered loop. Each pass
//! reads the deployable's snapshot from the store, decides every slot
//! (the ladder) and the freeze rule, acts through the app layer, and
//! sleeps until its next timer or a wake. It keeps nothing between passes
//! but its notify: a DPE restarted by the CPE, or by a restarted master,
//! decides from the same rows, and the CAS of each action makes a repeat
//! `Stale`.

use super::act::{self, Ctx};
use super::act_rollout;
use super::freeze::{freeze_reason, Hosts};
use super::housekeep;
use super::ladder::{decide, SlotView};
use super::moves;
use super::observe;
use super::pool_hold;
use super::pool_sync;
use super::rollout;
use crate::app;
use crate::state::App;
use crate::store::engine::{NewEvent, Snapshot};
use crate::store::{now_ms, Millis, StoreError};
use cm_api::host::HostState;
use cm_api::ids::DeployableId;
use cm_api::words::{DeployableState, EngineAction, EventKind, SlotState};
use std::sync::Arc;
use std::time::Duration;

/// How a DPE ended: only once its deployable is torn down and purged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Done,
}

/// The longest a DPE sleeps without a wake (a safety net: every timer it
/// needs is in the store, and it re-reads them).
const MAX_SLEEP: Duration = Duration::from_secs(1);

enum Step {
    Done,
    Sleep(Duration),
}

pub async fn run(app: Arc<App>, id: DeployableId) -> Exit {
    let notify = app.engines.notify_of(id);
    loop {
        if app.engines.take_poison(id) {
            panic!("debug: asked to panic");
        }
        let wait = match pass(&app, id).await {
            Ok(Step::Done) => return Exit::Done,
            Ok(Step::Sleep(d)) => d,
            Err(e) => {
                tracing::warn!("deployable {id}: engine pass: {e}");
                MAX_SLEEP
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = notify.notified() => {}
        }
    }
}

async fn snapshot(app: &App, id: DeployableId) -> app::Result<Option<Snapshot>> {
    app.db(move |s| match s.deploy_snapshot(id, now_ms()) {
        Ok(snap) => Ok(Some(snap)),
        Err(StoreError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    })
    .await
}

/// Whether the slots match the spec in force (every slot it asks for
/// exists; every other one is retiring).
fn slots_match(snap: &Snapshot) -> bool {
    let spec = &snap.spec.spec;
    let wanted = |a: &str, idx: u32| spec.assemblies.iter().any(|x| x.name == a && idx < x.count);
    spec.assemblies.iter().all(|a| {
        (0..a.count).all(|i| {
            snap.slots
                .iter()
                .any(|s| s.assembly == a.name && s.idx == i)
        })
    }) && snap
        .slots
        .iter()
        .all(|s| wanted(&s.assembly, s.idx) || s.state == SlotState::Retiring)
}

async fn pass(app: &Arc<App>, id: DeployableId) -> app::Result<Step> {
    let Some(mut snap) = snapshot(app, id).await? else {
        return Ok(Step::Done);
    };
    if snap.deployable.deleted {
        return teardown(app, &snap).await;
    }
    if !slots_match(&snap) {
        app.db(move |s| s.ensure_slots(id, now_ms())).await?;
        let Some(again) = snapshot(app, id).await? else {
            return Ok(Step::Done);
        };
        snap = again;
    }
    let now = snap.now;
    let ctx = Ctx::new(app, &snap);
    let views = views(app, &snap);
    let frozen = freeze(&ctx, &snap, &views).await?;
    // The move rung (engine/moves.rs): one transfer, then a fresh read.
    if !frozen && moves::step(&ctx).await? {
        return Ok(Step::Sleep(Duration::from_millis(20)));
    }
    let mut wake: Option<Millis> = None;
    let mut states = Vec::new();
    // Rollout first: its slots are its own until they finish or fail.
    let steps = if frozen {
        vec![]
    } else {
        rollout::plan(&snap, &views, now)
    };
    let mut rolled = vec![false; views.len()];
    for st in &steps {
        if let Some(i) = st.slot() {
            rolled[i] = true;
        }
    }
    for st in steps {
        // A planned stop drains the slot's balancer members first.
        if pool_hold::hold(&ctx, &views, &st).await? {
            continue;
        }
        act_rollout::step(&ctx, &views, st).await?;
    }
    for (i, v) in views.iter().enumerate() {
        let in_rollout = v.slot.action == Some(EngineAction::Rollout);
        if rolled[i] || in_rollout {
            if in_rollout && !rolled[i] {
                act_rollout::observe(&ctx, v).await?;
            }
            states.push((v.slot.assembly.clone(), v.slot.state));
            wake = [wake, Some(now + 200)].into_iter().flatten().min();
            continue;
        }
        let policy = ctx.policy(&v.slot, frozen);
        let d = decide(v, &policy, now);
        wake = [wake, d.next_wake()]
            .into_iter()
            .flatten()
            .min_by_key(|t| (*t <= now, *t));
        states.push((v.slot.assembly.clone(), d.slot.state));
        act::execute(&ctx, v, d).await?;
    }
    let pool = pool_sync::sync(&ctx, &views).await?;
    wake = [wake, pool.wake].into_iter().flatten().min();
    housekeep::retire(&ctx, &pool.held).await?;
    housekeep::duplicates(&ctx).await?;
    housekeep::rerender(&ctx).await?;
    overall(&ctx, &snap, frozen, &states).await?;
    Ok(Step::Sleep(sleep_for(wake, now, now_ms())))
}

/// How long to sleep for the earliest timer `wake` (read at `at`, now
/// `now`): a timer already past when read (a back-off that expired) wakes
/// nothing; at least 20 ms, at most [`MAX_SLEEP`].
pub fn sleep_for(wake: Option<Millis>, at: Millis, now: Millis) -> Duration {
    let until = wake
        .filter(|t| *t > at)
        .map(|t| t - now)
        .unwrap_or(i64::MAX);
    Duration::from_millis(u64::try_from(until.max(20)).unwrap_or(0)).min(MAX_SLEEP)
}

/// Each live slot with its instance's health.
fn views(app: &App, snap: &Snapshot) -> Vec<SlotView> {
    let down_after = app.settings.host_down_after;
    snap.slots
        .iter()
        .filter(|s| s.state != SlotState::Retiring)
        .map(|s| {
            let inst = s.instance_id.and_then(|i| snap.instance(i));
            let host = inst.and_then(|i| snap.host(i.host_id));
            let expected: Vec<String> = match &s.services {
                Some(list) => list.clone(),
                None => snap
                    .spec
                    .spec
                    .assemblies
                    .iter()
                    .find(|a| a.name == s.assembly)
                    .map(|a| a.services.iter().map(|x| x.name.clone()).collect())
                    .unwrap_or_default(),
            };
            SlotView {
                slot: s.clone(),
                health: observe::health(inst, host, &expected, snap.now, down_after),
                boot_gen: inst.map(|i| i.desired.boot_gen).unwrap_or(0),
                host: inst.map(|i| i.host_id),
                host_name: inst.map(|i| i.host_name.clone()),
            }
        })
        .collect()
}

/// The partition rule: freeze or thaw the deployable; whether it is frozen.
async fn freeze(ctx: &Ctx<'_>, snap: &Snapshot, views: &[SlotView]) -> app::Result<bool> {
    let down_after = ctx.app.settings.host_down_after;
    let enabled: Vec<_> = snap.hosts.iter().filter(|h| h.enabled).collect();
    let hosts = Hosts {
        enabled: enabled.len(),
        enabled_down: enabled
            .iter()
            .filter(|h| crate::view::host_state(h, snap.now, down_after) == HostState::Down)
            .count(),
    };
    let timeout = snap.spec.spec.policy.heartbeat_timeout.millis();
    let reason = freeze_reason(views, hosts, timeout, snap.now);
    let d = &snap.deployable;
    let frozen = d.state == DeployableState::Frozen;
    match (reason, frozen) {
        (Some(why), false) => {
            let ev = ctx.event(
                EventKind::DeployableFrozen,
                None,
                Some(d.state.as_str()),
                "frozen",
                &why,
                Some(EngineAction::Freeze),
            );
            ctx.set_state(DeployableState::Frozen, Some(why), ev)
                .await?;
            Ok(true)
        }
        (None, true) if d.frozen_since.is_some_and(|t| snap.now - t >= timeout) => {
            let why = "fewer than half of its slots are silent".to_string();
            let ev = ctx.event(
                EventKind::DeployableThawed,
                None,
                Some("frozen"),
                "converging",
                &why,
                Some(EngineAction::Thaw),
            );
            ctx.set_state(DeployableState::Converging, Some(why), ev)
                .await?;
            Ok(false)
        }
        (_, f) => Ok(f),
    }
}

/// The deployable's state from its slots' (frozen wins).
async fn overall(
    ctx: &Ctx<'_>,
    snap: &Snapshot,
    frozen: bool,
    states: &[(String, SlotState)],
) -> app::Result<()> {
    if frozen || rollout::stopped(snap) {
        return Ok(());
    }
    let gen = snap.deployable.generation;
    let rolling = snap.slots.iter().any(|s| {
        s.action == Some(EngineAction::Rollout)
            || (s.incarnation > 0 && s.spec_generation < gen && s.state != SlotState::Retiring)
    });
    let all_failed = snap.spec.spec.assemblies.iter().any(|a| {
        let of: Vec<_> = states.iter().filter(|(n, _)| *n == a.name).collect();
        !of.is_empty() && of.iter().all(|(_, s)| *s == SlotState::Failed)
    });
    let state = if rolling {
        DeployableState::Rolling
    } else if states.iter().all(|(_, s)| *s == SlotState::Healthy) {
        DeployableState::Healthy
    } else if all_failed {
        DeployableState::Failed
    } else if states.iter().any(|(_, s)| {
        matches!(
            s,
            SlotState::Failed | SlotState::Down | SlotState::Degraded | SlotState::Unreachable
        )
    }) {
        DeployableState::Degraded
    } else {
        DeployableState::Converging
    };
    let d = &snap.deployable;
    if d.state == state {
        return Ok(());
    }
    let n_ok = states
        .iter()
        .filter(|(_, s)| *s == SlotState::Healthy)
        .count();
    let why = format!("{n_ok} of {} slots healthy", states.len());
    let ev = ctx.event(
        EventKind::DeployableState,
        None,
        Some(d.state.as_str()),
        state.as_str(),
        &why,
        None,
    );
    ctx.set_state(state, Some(why), ev).await
}

/// A deleted deployable: delete its instances, wait until their hosts
/// removed them, then purge its rows.
async fn teardown(app: &Arc<App>, snap: &Snapshot) -> app::Result<Step> {
    let ctx = Ctx::new(app, snap);
    if snap.deployable.state != DeployableState::Deleting {
        let ev = ctx.event(
            EventKind::DeployableState,
            None,
            Some(snap.deployable.state.as_str()),
            "deleting",
            "deleted: removing its instances",
            Some(EngineAction::Delete),
        );
        ctx.set_state(DeployableState::Deleting, None, ev).await?;
    }
    for i in snap.instances.iter().filter(|i| !i.desired.deleted) {
        ctx.delete_instance(i, "its deployable is deleted").await?;
    }
    let pool_clear = pool_sync::clear(&ctx).await?;
    if !snap.instances.is_empty() || !pool_clear {
        return Ok(Step::Sleep(MAX_SLEEP));
    }
    let id = snap.deployable.id;
    let ev: NewEvent = ctx.event(
        EventKind::DeployableDeleted,
        None,
        Some("deleting"),
        "deleted",
        "every instance is gone",
        None,
    );
    let purged = app
        .db(move |s| s.purge_deployable(id, &ev, now_ms()))
        .await?;
    match purged {
        Some(ev) => {
            app::owned::publish(app, ev);
            app.engines.forget(id);
            Ok(Step::Done)
        }
        None => Ok(Step::Sleep(MAX_SLEEP)),
    }
}
