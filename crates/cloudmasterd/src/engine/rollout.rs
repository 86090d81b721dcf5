//! Rolling a changed spec out, `update.max_parallel` slots at a time
//! (Nomad's `update` block): a slot whose assembly changed in a way that
//! needs a new VM (image, size, ports, stateful) is replaced, create
//! before destroy for a stateless one (the old instance stays in the
//! slot's `retiring` list until the new one has been healthy for
//! `min_healthy_time`); for a stateful one the old instance is stopped
//! first, and the new one made only once its host reports it stopped
//! (the slot keeps its old generation meanwhile, so a DPE or master
//! restarted between the two steps waits for the same stop); a
//! slot whose services, environment, checks or config changed gets a new
//! config body in place. A new instance not healthy by `healthy_deadline`
//! stops the rollout: it is deleted, the old one is the slot's again, and
//! the deployable is `rollout_failed` at that generation until the next
//! apply. Pure: `plan` decides from the snapshot, the DPE acts.

use super::ladder::SlotView;
use super::observe::Health;
use crate::store::engine::Snapshot;
use crate::store::{InstanceId, Millis};
use cm_api::deploy::{Change, ChangeKind};
use cm_api::words::{DeployableState, EngineAction, SlotState};

/// One rollout step for one slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Start: a new incarnation; the old one retired (stateless) or
    /// deleted (stateful).
    Replace {
        slot: usize,
        keep_old: bool,
        why: String,
    },
    /// Start (stateful): stop the old instance; `Replace` follows once its
    /// host reports it stopped.
    Stop { slot: usize, why: String },
    /// Start: a new config body in place.
    Reconfigure { slot: usize, why: String },
    /// Nothing to do for this slot but record the generation.
    Adopt { slot: usize },
    /// The new incarnation has been healthy long enough: done.
    Finish { slot: usize },
    /// The new incarnation missed its deadline: undo, stop the rollout.
    Fail {
        slot: usize,
        old: Option<InstanceId>,
        why: String,
    },
}

impl Step {
    /// The index of the slot it acts on.
    pub fn slot(&self) -> Option<usize> {
        match self {
            Step::Replace { slot, .. }
            | Step::Stop { slot, .. }
            | Step::Reconfigure { slot, .. }
            | Step::Adopt { slot }
            | Step::Finish { slot }
            | Step::Fail { slot, .. } => Some(*slot),
        }
    }
}

/// Whether the rollout of the generation in force stopped already.
pub fn stopped(snap: &Snapshot) -> bool {
    let d = &snap.deployable;
    d.state == DeployableState::RolloutFailed
        && d.state_reason
            .as_deref()
            .is_some_and(|r| r.starts_with(&format!("generation {}:", d.generation)))
}

/// The steps of this pass (`views` as the DPE built them, same order as
/// the snapshot's live slots).
pub fn plan(snap: &Snapshot, views: &[SlotView], now: Millis) -> Vec<Step> {
    let spec = &snap.spec.spec;
    let gen = snap.deployable.generation;
    let mut steps = Vec::new();
    let mut in_flight = 0usize;
    for (i, v) in views.iter().enumerate() {
        let s = &v.slot;
        if s.action != Some(EngineAction::Rollout) {
            // An old instance not yet removed still counts (max_parallel).
            if !s.retiring.is_empty() {
                in_flight += 1;
            }
            continue;
        }
        in_flight += 1;
        if s.spec_generation < gen {
            // A stateful slot's old instance being stopped.
            let why = "its old instance stopped".to_string();
            if old_stopped(snap, s.instance_id) {
                steps.push(Step::Replace {
                    slot: i,
                    keep_old: false,
                    why,
                });
            } else if s.action_deadline.is_some_and(|d| now >= d) {
                steps.push(Step::Fail {
                    slot: i,
                    old: None,
                    why: format!(
                        "its old instance did not stop within {}",
                        spec.update.healthy_deadline
                    ),
                });
            }
            continue;
        }
        let healthy_for = (v.health == Health::Healthy && s.state == SlotState::Healthy)
            .then(|| now - s.state_since);
        if healthy_for.is_some_and(|t| t >= spec.update.min_healthy_time.millis()) {
            steps.push(Step::Finish { slot: i });
        } else if s.action_deadline.is_some_and(|d| now >= d) {
            let why = format!(
                "not healthy within {} ({})",
                spec.update.healthy_deadline,
                s.reason.clone().unwrap_or_else(|| s.state.to_string())
            );
            steps.push(Step::Fail {
                slot: i,
                old: s.retiring.last().copied(),
                why,
            });
        }
    }
    if stopped(snap) || steps.iter().any(|s| matches!(s, Step::Fail { .. })) {
        return steps;
    }
    let room = usize::try_from(spec.update.max_parallel.max(1)).unwrap_or(1);
    for (i, v) in views.iter().enumerate() {
        if in_flight >= room {
            break;
        }
        let s = &v.slot;
        if s.spec_generation >= gen || s.incarnation == 0 || s.action.is_some() {
            continue;
        }
        // Only a healthy slot is rolled; the ladder heals the others first.
        if v.health != Health::Healthy {
            continue;
        }
        let Some(old) = snap.old_specs.get(&s.spec_generation) else {
            steps.push(Step::Adopt { slot: i });
            continue;
        };
        let change = cm_api::deploy::diff(Some(old), spec).into_iter().find(|c| {
            c.assembly == s.assembly
                && matches!(c.kind, ChangeKind::Replace | ChangeKind::Reconfigure)
        });
        match change {
            Some(Change {
                kind: ChangeKind::Replace,
                why,
                ..
            }) => {
                let stateful = spec
                    .assemblies
                    .iter()
                    .any(|a| a.name == s.assembly && a.stateful);
                steps.push(if stateful {
                    Step::Stop { slot: i, why }
                } else {
                    Step::Replace {
                        slot: i,
                        keep_old: true,
                        why,
                    }
                });
                in_flight += 1;
            }
            Some(Change { why, .. }) => {
                steps.push(Step::Reconfigure { slot: i, why });
                in_flight += 1;
            }
            None => steps.push(Step::Adopt { slot: i }),
        }
    }
    steps
}

/// Whether a stateful slot's old instance is surely not running: its host
/// reported its boot ended while it is to stay stopped, or it is gone. A
/// host that stopped reporting proves nothing (unreachable is not dead).
fn old_stopped(snap: &Snapshot, id: Option<InstanceId>) -> bool {
    let Some(row) = id.and_then(|i| snap.instance(i)) else {
        return true;
    };
    let o = &row.observed;
    row.desired.power == cm_api::agent::Power::Stopped
        && matches!(
            o.state,
            Some(cm_api::agent::ObservedState::Stopped | cm_api::agent::ObservedState::Error)
        )
}
