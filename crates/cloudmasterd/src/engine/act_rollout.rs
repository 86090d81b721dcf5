//! Carrying out rollout steps (engine/rollout.rs), each one CAS
//! transaction on its slot with its `deployable.rollout` event.

use super::act::{self, Ctx};
use super::ladder::{Act, Decision, SlotView};
use super::observe::Health;
use super::rollout::Step;
use crate::app::{self, owned};
use crate::store::engine::NewEvent;
use crate::store::engine::{Cas, OldFate, SlotKey};
use crate::store::{now_ms, DesiredChange, SlotRow};
use cm_api::agent::Power;
use cm_api::words::{DeployableState, EngineAction, EventKind, SlotState};
use std::collections::BTreeMap;

/// A slot in a rollout: its state follows its health (the ladder leaves
/// it to the rollout until it finishes or fails).
pub async fn observe(ctx: &Ctx<'_>, v: &SlotView) -> app::Result<()> {
    let healthy = v.health == Health::Healthy;
    let want = match (healthy, v.slot.state) {
        (true, SlotState::Healthy) | (false, SlotState::Booting) => return Ok(()),
        (true, _) => SlotState::Healthy,
        (false, _) => SlotState::Booting,
    };
    let mut slot = v.slot.clone();
    slot.state = want;
    slot.state_since = ctx.snap.now;
    super::act::write_slot(ctx, v, slot, None).await
}

/// How long a stateful slot's old instance may take its ACPI shutdown
/// before its host forces it off.
const STOP_TIMEOUT_SECS: u32 = 30;

/// Change the slot's instance's desired power and write the slot, in one
/// transaction guarded by its incarnation.
async fn change_instance(
    ctx: &Ctx<'_>,
    v: &SlotView,
    change: DesiredChange,
    slot: SlotRow,
    ev: NewEvent,
) -> app::Result<()> {
    let key = SlotKey::of(&v.slot);
    let expect = v.slot.incarnation;
    let done = ctx
        .app
        .db(move |s| s.change_slot_instance(&key, expect, change, &slot, &ev, now_ms()))
        .await?;
    if let Cas::Done(row, evs) = done {
        owned::acted(ctx.app, &[row.host_id], evs);
    }
    Ok(())
}

fn started(ctx: &Ctx<'_>, v: &SlotView, state: SlotState, why: &str) -> SlotRow {
    let now = ctx.snap.now;
    let mut slot = v.slot.clone();
    slot.spec_generation = ctx.snap.deployable.generation;
    slot.action = Some(EngineAction::Rollout);
    slot.action_started_at = Some(now);
    slot.action_deadline = Some(now + ctx.snap.spec.spec.update.healthy_deadline.millis());
    slot.state = state;
    slot.state_since = now;
    slot.reason = Some(format!("rollout: {why}"));
    slot
}

pub async fn step(ctx: &Ctx<'_>, views: &[SlotView], step: Step) -> app::Result<()> {
    let gen = ctx.snap.deployable.generation;
    let rollout_event = |v: &SlotView, from: &str, to: &str, why: &str| {
        ctx.event(
            EventKind::DeployableRollout,
            Some(&v.slot.name()),
            Some(from),
            to,
            &format!("generation {gen}: {why}"),
            Some(EngineAction::Rollout),
        )
    };
    match step {
        Step::Adopt { slot } => {
            let v = &views[slot];
            let mut s = v.slot.clone();
            s.spec_generation = gen;
            super::act::write_slot(ctx, v, s, None).await
        }
        Step::Replace {
            slot,
            keep_old,
            why,
        } => {
            let v = &views[slot];
            let d = Decision {
                slot: started(ctx, v, SlotState::Creating, &why),
                act: Act::Replace { avoid: None },
                action: Some(EngineAction::Rollout),
                reason: Some(why.clone()),
                counters: BTreeMap::new(),
            };
            let ev = rollout_event(
                v,
                v.slot.state.as_str(),
                "replacing",
                &format!("{why} changed"),
            );
            let fate = if keep_old {
                OldFate::Retire
            } else {
                OldFate::Delete
            };
            act::create(ctx, v, d, Some(ev), fate).await
        }
        Step::Stop { slot, why } => {
            let v = &views[slot];
            let mut s = started(
                ctx,
                v,
                SlotState::Acting,
                &format!("stopping the old instance first ({why} changed)"),
            );
            // Still the old generation: the new one is made after the stop.
            s.spec_generation = v.slot.spec_generation;
            let ev = rollout_event(
                v,
                v.slot.state.as_str(),
                "stopping",
                &format!(
                    "{why} changed; stateful: its old instance is stopped before a new one is made"
                ),
            );
            change_instance(
                ctx,
                v,
                DesiredChange::Stop {
                    timeout_secs: STOP_TIMEOUT_SECS,
                },
                s,
                ev,
            )
            .await
        }
        Step::Reconfigure { slot, why } => {
            let v = &views[slot];
            let Some(row) = v.slot.instance_id.and_then(|i| ctx.snap.instance(i)) else {
                return Ok(());
            };
            let s = started(ctx, v, SlotState::Booting, &why);
            if let Err(e) = ctx.set_body(row, &s).await? {
                // Not started: the slot says why and the rollout waits.
                let mut w = v.slot.clone();
                w.reason = Some(format!("rollout: {e}"));
                let ev = (v.slot.reason != w.reason)
                    .then(|| rollout_event(v, v.slot.state.as_str(), "waiting", &e.to_string()));
                return super::act::write_slot(ctx, v, w, ev).await;
            }
            let ev = rollout_event(
                v,
                v.slot.state.as_str(),
                "reconfiguring",
                &format!("{why} changed"),
            );
            super::act::write_slot(ctx, v, s, Some(ev)).await
        }
        Step::Finish { slot } => {
            let v = &views[slot];
            let mut s = v.slot.clone();
            s.action = None;
            s.action_started_at = None;
            s.action_deadline = None;
            s.reason = None;
            let ev = rollout_event(v, "rolling", "done", "healthy at the new generation");
            super::act::write_slot(ctx, v, s, Some(ev)).await
        }
        Step::Fail { slot, old, why } => {
            let v = &views[slot];
            let back = ctx
                .snap
                .deployable
                .rollout_from
                .filter(|g| *g < gen)
                .or_else(|| {
                    ctx.snap
                        .slots
                        .iter()
                        .map(|s| s.spec_generation)
                        .filter(|g| *g < gen)
                        .max()
                })
                .unwrap_or_else(|| gen.saturating_sub(1));
            let ev = rollout_event(v, "rolling", "failed", &why);
            match old {
                Some(old) => {
                    let key = SlotKey::of(&v.slot);
                    let expect = v.slot.incarnation;
                    let host = v.host;
                    let e = ev.clone();
                    let done = ctx
                        .app
                        .db(move |s| s.revert_slot(&key, expect, old, back, &e, now_ms()))
                        .await?;
                    if let Cas::Done(_, evs) = done {
                        owned::acted(ctx.app, &host.into_iter().collect::<Vec<_>>(), evs);
                    }
                }
                None => {
                    // A reconfigure: the slot goes back to the old
                    // generation and its guest gets the old body again
                    // (housekeep::rerender keeps it so after).
                    let mut s = v.slot.clone();
                    s.action = None;
                    s.action_deadline = None;
                    s.action_started_at = None;
                    s.spec_generation = back;
                    s.reason = Some("rollout reverted".into());
                    let stopped = v
                        .slot
                        .instance_id
                        .and_then(|i| ctx.snap.instance(i))
                        .is_some_and(|r| r.desired.power == Power::Stopped);
                    if stopped {
                        // A stateful slot whose old instance was stopped
                        // for its replacement: started again.
                        change_instance(ctx, v, DesiredChange::Start, s.clone(), ev).await?;
                    } else {
                        super::act::write_slot(ctx, v, s.clone(), Some(ev)).await?;
                    }
                    if let Some(row) = v.slot.instance_id.and_then(|i| ctx.snap.instance(i)) {
                        if let Err(e) = ctx.set_body(row, &s).await? {
                            tracing::warn!("{}: {}: {e}", ctx.snap.deployable.name, s.name());
                        }
                    }
                }
            }
            let reason = format!("generation {gen}: {} {why}", v.slot.name());
            let dev = ctx.event(
                EventKind::DeployableRollout,
                None,
                Some(ctx.snap.deployable.state.as_str()),
                "rollout_failed",
                &reason,
                Some(EngineAction::Rollout),
            );
            ctx.set_state(DeployableState::RolloutFailed, Some(reason), dev)
                .await
        }
    }
}
