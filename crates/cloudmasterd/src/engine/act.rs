//! What a DPE does with its decisions: each through one store transaction
//! guarded by the slot's incarnation, with its event, then the hosts and
//! followers are told (app::owned::acted).

use super::ladder::{Act, Decision, Policy, SlotView};
use super::render;
use crate::app::{self, owned};
use crate::state::App;
use crate::store::engine::{Cas, NewEvent, OldFate, SlotCreate, SlotKey, Snapshot};
use crate::store::{new_operation, now_ms, HostId, InstanceRow, SlotRow};
use cm_api::deploy::{AssemblySpec, Budget};
use cm_api::event::EventDetail;
use cm_api::words::{DeployableState, EngineAction, EventKind, OperationKind};
use std::collections::BTreeMap;
use std::sync::Arc;

/// A pass's context: the app and the snapshot it decides from.
pub struct Ctx<'a> {
    pub app: &'a Arc<App>,
    pub snap: &'a Snapshot,
    /// Instances placed during this pass (assembly, host): the snapshot
    /// does not have them, and `spread` must count them.
    placed: std::sync::Mutex<Vec<(String, HostId)>>,
}

impl<'a> Ctx<'a> {
    pub fn new(app: &'a Arc<App>, snap: &'a Snapshot) -> Ctx<'a> {
        Ctx {
            app,
            snap,
            placed: Default::default(),
        }
    }

    pub(super) fn assembly(&self, name: &str) -> Option<&'a AssemblySpec> {
        self.snap
            .spec
            .spec
            .assemblies
            .iter()
            .find(|a| a.name == name)
    }

    /// The ladder's policy of a slot, from the spec in force.
    pub fn policy(&self, slot: &SlotRow, frozen: bool) -> Policy {
        let spec = &self.snap.spec.spec;
        let asm = self.assembly(&slot.assembly);
        let default = spec.policy.escalation;
        let services: BTreeMap<String, Budget> = asm
            .map(|a| {
                a.services
                    .iter()
                    .map(|s| (s.name.clone(), s.escalation.unwrap_or(default)))
                    .collect()
            })
            .unwrap_or_default();
        Policy {
            stateful: asm.is_some_and(|a| a.stateful),
            assembly: asm.and_then(|a| a.escalation).unwrap_or(default),
            replace: default,
            services,
            backoff: spec.policy.restart_backoff,
            heartbeat_timeout: spec.policy.heartbeat_timeout.millis(),
            healthy_deadline: spec.update.healthy_deadline.millis(),
            frozen,
        }
    }

    /// An event of this deployable, its message a complete sentence.
    pub fn event(
        &self,
        kind: EventKind,
        object: Option<&str>,
        from: Option<&str>,
        to: &str,
        reason: &str,
        action: Option<EngineAction>,
    ) -> NewEvent {
        let d = &self.snap.deployable;
        let subject = object.unwrap_or("deployable");
        let change = match from {
            Some(f) if f != to => format!("{f} → {to}"),
            _ => to.to_string(),
        };
        let act = action.map(|a| format!(" [{a}]")).unwrap_or_default();
        NewEvent {
            kind,
            target: d.name.clone(),
            message: format!("{subject}: {change}: {reason}{act}"),
            detail: EventDetail {
                deployable: Some(d.name.clone()),
                generation: Some(d.generation),
                object: object.map(str::to_string),
                from: from.map(str::to_string),
                to: Some(to.to_string()),
                reason: Some(reason.to_string()),
                action,
                counters: BTreeMap::new(),
            },
        }
    }

    pub async fn set_state(
        &self,
        state: DeployableState,
        reason: Option<String>,
        ev: NewEvent,
    ) -> app::Result<()> {
        let id = self.snap.deployable.id;
        let done = self
            .app
            .db(move |s| s.set_deployable_state(id, state, reason.as_deref(), &ev, now_ms()))
            .await?;
        owned::acted(self.app, &[], done.into_iter().collect());
        Ok(())
    }

    pub async fn delete_instance(&self, row: &InstanceRow, why: &str) -> app::Result<()> {
        let id = self.snap.deployable.id;
        let slot = row.spec.owner.as_ref().map(|o| o.slot.as_str());
        let ev = self.event(
            EventKind::DeployableAction,
            slot,
            None,
            "deleted",
            &format!("{} {why}", row.name),
            Some(EngineAction::Delete),
        );
        let inst = row.id;
        let done = self
            .app
            .db(move |s| s.delete_owned(id, inst, &ev, now_ms()))
            .await?;
        owned::acted(self.app, &[row.host_id], done.into_iter().collect());
        Ok(())
    }

    /// The rendered config of a slot, from the spec of its generation (a
    /// slot a rollout has not reached, or reverted, keeps its old config),
    /// with references resolved now.
    pub(super) fn render(&self, slot: &SlotRow) -> Result<String, render::RenderError> {
        let spec = match self.snap.old_specs.get(&slot.spec_generation) {
            Some(old) if slot.spec_generation != self.snap.deployable.generation => old,
            _ => &self.snap.spec.spec,
        };
        let hb = spec.policy.heartbeat_interval.as_millis();
        // Services moved here are rendered from their own assembly's spec,
        // their references resolved as for their own slot.
        let moved: Vec<(String, &cm_api::deploy::ServiceSpec)> = slot
            .services
            .iter()
            .flatten()
            .filter_map(|n| {
                let (_, asm, svc) = render::split_moved(n)?;
                let a = spec.assemblies.iter().find(|a| a.name == asm)?;
                let s = a.services.iter().find(|s| s.name == svc)?;
                Some((n.clone(), s))
            })
            .collect();
        let part = render::SlotPart {
            services: slot.services.as_deref(),
            restart_gens: Some(&slot.restart_gens),
            moved: &moved,
        };
        match spec.assemblies.iter().find(|a| a.name == slot.assembly) {
            Some(a) => render::render(a, hb, part, &|r| render::resolve(self.snap, r)),
            None => Ok(String::new()),
        }
    }

    /// Set a slot's instance's config body to its render now; the guest's
    /// long-poll wakes. An error to render leaves the body as it was.
    pub(super) async fn set_body(
        &self,
        row: &InstanceRow,
        slot: &SlotRow,
    ) -> app::Result<Result<(), render::RenderError>> {
        let body = match self.render(slot) {
            Ok(b) => b,
            Err(e) => return Ok(Err(e)),
        };
        let req = cm_api::boot::SetConfig {
            config: Some(body),
            config_base64: None,
        };
        app::configs::set_config(self.app, &row.id.uuid().to_string(), req).await?;
        Ok(Ok(()))
    }
}

/// Carry out one slot's decision.
pub async fn execute(ctx: &Ctx<'_>, v: &SlotView, d: Decision) -> app::Result<()> {
    if !d.changes(&v.slot) {
        return Ok(());
    }
    let key = SlotKey::of(&v.slot);
    let expect = v.slot.incarnation;
    let name = v.slot.name();
    let mut ev = (d.action.is_some() || d.slot.state != v.slot.state).then(|| {
        let kind = if d.action.is_some() {
            EventKind::DeployableAction
        } else {
            EventKind::DeployableObserved
        };
        let reason = d
            .reason
            .clone()
            .or_else(|| d.slot.reason.clone())
            .unwrap_or_else(|| d.slot.state.as_str().to_string());
        ctx.event(
            kind,
            Some(&name),
            Some(v.slot.state.as_str()),
            d.slot.state.as_str(),
            &reason,
            d.action,
        )
    });
    if let Some(e) = ev.as_mut() {
        e.detail.counters = d.counters.clone();
    }
    match d.act {
        Act::None => write_slot(ctx, v, d.slot.clone(), ev).await,
        Act::RestartAssembly { expected_boot_gen } => {
            let Some(row) = v.slot.instance_id.and_then(|i| ctx.snap.instance(i)) else {
                return Ok(());
            };
            let op = new_operation(OperationKind::InstanceStart, &row.name, row.id, "restart");
            let (slot, host) = (d.slot.clone(), row.host_id);
            let ev = ev.unwrap_or_else(|| {
                ctx.event(
                    EventKind::DeployableAction,
                    Some(&name),
                    None,
                    "acting",
                    "restart",
                    d.action,
                )
            });
            let done = ctx
                .app
                .db(move |s| {
                    s.restart_slot(&key, expect, expected_boot_gen, &op, &slot, &ev, now_ms())
                })
                .await?;
            if let Cas::Done(_, evs) = done {
                owned::acted(ctx.app, &[host], evs);
            }
            Ok(())
        }
        Act::RestartService { .. } => {
            let Some(row) = v.slot.instance_id.and_then(|i| ctx.snap.instance(i)) else {
                return Ok(());
            };
            // The slot (with the raised restart_gens) first: if the master
            // dies before the body is set, the next pass's re-render
            // (housekeep::rerender) sets it from the slot.
            let slot = d.slot.clone();
            write_slot(ctx, v, slot.clone(), ev).await?;
            if let Err(e) = ctx.set_body(row, &slot).await? {
                tracing::warn!("{}: {name}: {e}", ctx.snap.deployable.name);
            }
            Ok(())
        }
        Act::Create | Act::Replace { .. } => create(ctx, v, d, ev, OldFate::Delete).await,
    }
}

/// Write a slot's state (and its event), guarded by its incarnation.
pub(super) async fn write_slot(
    ctx: &Ctx<'_>,
    v: &SlotView,
    slot: SlotRow,
    ev: Option<NewEvent>,
) -> app::Result<()> {
    let key = SlotKey::of(&v.slot);
    let expect = v.slot.incarnation;
    let done = ctx
        .app
        .db(move |s| s.set_slot_state(&key, expect, &slot, ev.as_ref(), now_ms()))
        .await?;
    if let Cas::Done(_, evs) = done {
        owned::acted(ctx.app, &[], evs);
    }
    Ok(())
}

/// A new incarnation for the slot: its first, one in place of a vanished
/// one, or a replacement (the old one deleted in the same transaction).
pub(super) async fn create(
    ctx: &Ctx<'_>,
    v: &SlotView,
    d: Decision,
    ev: Option<NewEvent>,
    fate: OldFate,
) -> app::Result<()> {
    let Some(asm) = ctx.assembly(&v.slot.assembly) else {
        return Ok(());
    };
    let name = v.slot.name();
    let spec = &ctx.snap.spec.spec;
    // A new instance is made from the spec in force.
    let mut fresh = v.slot.clone();
    fresh.spec_generation = ctx.snap.deployable.generation;
    let config = match ctx.render(&fresh) {
        Ok(c) => c,
        Err(e) => return not_created(ctx, v, &d, &e.to_string()).await,
    };
    let o = owned::OwnedSpec {
        deployable: ctx.snap.deployable.id,
        name: &ctx.snap.deployable.name,
        assembly: asm,
        policy: &spec.policy,
        slot: name.clone(),
        incarnation: v.slot.incarnation + 1,
        config,
    };
    let avoid = match d.act {
        Act::Replace { avoid } => avoid,
        _ => None,
    };
    let siblings: Vec<HostId> = ctx
        .snap
        .slots
        .iter()
        .filter(|s| s.assembly == v.slot.assembly && s.idx != v.slot.idx)
        .filter_map(|s| s.instance_id.and_then(|i| ctx.snap.instance(i)))
        .map(|i| i.host_id)
        .chain(
            ctx.placed
                .lock()
                .map(|p| p.clone())
                .unwrap_or_default()
                .into_iter()
                .filter(|(a, _)| *a == v.slot.assembly)
                .map(|(_, h)| h),
        )
        .collect();
    let built = owned::new_owned(ctx.app, &o).await;
    let (mut new, config) = match built {
        Ok(x) => x,
        Err(e) => return not_created(ctx, v, &d, &e.to_string()).await,
    };
    // Services moved here (or away): the new instance expects its list.
    if let (Some(h), Some(_)) = (new.health.as_mut(), &fresh.services) {
        h.services = super::moves::expected(spec, &fresh);
    }
    let req = owned::request(ctx.app, &new, avoid, siblings, asm.spread);
    let op = new_operation(
        OperationKind::InstanceCreate,
        &new.name,
        new.id,
        "placed; waiting for the host",
    );
    let key = SlotKey::of(&v.slot);
    let expect = v.slot.incarnation;
    // A new instance is made from the spec in force.
    let mut slot = d.slot.clone();
    slot.spec_generation = ctx.snap.deployable.generation;
    let replace = matches!(d.act, Act::Replace { .. });
    let mut ev = ev.unwrap_or_else(|| {
        ctx.event(
            EventKind::DeployableAction,
            Some(&name),
            None,
            "acting",
            "create",
            d.action,
        )
    });
    ev.detail
        .counters
        .insert("incarnation".into(), (expect + 1).to_string());
    let res = ctx
        .app
        .db(move |s| {
            let create = SlotCreate {
                new: &new,
                config: Some(&config),
                place: &|caps| crate::scheduler::place(&req, caps),
                op: &op,
            };
            let now = now_ms();
            if replace {
                s.replace_slot(&key, expect, create, fate, &slot, &ev, now)
                    .map(|c| match c {
                        Cas::Done(r, evs) => Some((r.new, r.old.map(|o| o.host_id), evs)),
                        Cas::Stale => None,
                    })
            } else {
                s.create_slot_instance(&key, expect, create, &slot, &ev, now)
                    .map(|c| match c {
                        Cas::Done(r, evs) => Some((r, None, evs)),
                        Cas::Stale => None,
                    })
            }
        })
        .await;
    match res {
        Ok(Some((row, old_host, evs))) => {
            if let Ok(mut p) = ctx.placed.lock() {
                p.push((v.slot.assembly.clone(), row.host_id));
            }
            let hosts: Vec<HostId> = [Some(row.host_id), old_host]
                .into_iter()
                .flatten()
                .collect();
            owned::acted(ctx.app, &hosts, evs);
            Ok(())
        }
        Ok(None) => Ok(()),
        Err(e) => not_created(ctx, v, &d, &e.to_string()).await,
    }
}

/// A create that could not be placed, built or rendered: the slot says
/// why and tries again after the back-off; a `waiting` event only when the
/// reason changed, not at every back-off step.
async fn not_created(ctx: &Ctx<'_>, v: &SlotView, d: &Decision, why: &str) -> app::Result<()> {
    let reason = format!("cannot create its instance: {why}");
    let mut slot = v.slot.clone();
    let said = slot.reason.as_deref() == Some(reason.as_str());
    slot.reason = Some(reason.clone());
    slot.next_action_at = d.slot.next_action_at;
    slot.backoff_step = d.slot.backoff_step;
    let name = v.slot.name();
    let ev = (!said).then(|| {
        ctx.event(
            EventKind::DeployableAction,
            Some(&name),
            Some(v.slot.state.as_str()),
            v.slot.state.as_str(),
            &reason,
            Some(EngineAction::Wait),
        )
    });
    write_slot(ctx, v, slot, ev).await
}
