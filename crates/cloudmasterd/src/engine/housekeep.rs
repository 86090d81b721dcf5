//! A DPE's housekeeping after its slots' decisions: retired and
//! duplicate instances deleted, scaled-down slots removed, and configs
//! rendered again where a reference changed.

use super::act::Ctx;
use crate::app::{self, owned};
use crate::store::engine::SlotKey;
use crate::store::{now_ms, InstanceId, InstanceRow};
use cm_api::words::{EngineAction, EventKind, SlotState};
use std::collections::HashSet;

/// Retiring slots (scaled down) and retired instances: delete, then drop
/// the slot once its instances are gone.
/// `held`: instances whose balancer members still drain (pool_sync.rs).
pub async fn retire(ctx: &Ctx<'_>, held: &HashSet<InstanceId>) -> app::Result<()> {
    for s in &ctx.snap.slots {
        // A rollout keeps the old instance until the new one is healthy.
        let keep = s.action == Some(EngineAction::Rollout);
        for id in s.retiring.iter().filter(|i| !keep && !held.contains(i)) {
            if let Some(row) = ctx.snap.instance(*id).filter(|r| !r.desired.deleted) {
                ctx.delete_instance(row, "retired").await?;
            }
        }
        if s.state != SlotState::Retiring {
            continue;
        }
        let name = s.name();
        let mine: Vec<&InstanceRow> = ctx
            .snap
            .instances
            .iter()
            .filter(|i| i.spec.owner.as_ref().is_some_and(|o| o.slot == name))
            .collect();
        for row in mine
            .iter()
            .filter(|r| !r.desired.deleted && !held.contains(&r.id))
        {
            ctx.delete_instance(row, "its slot is no longer in the spec")
                .await?;
        }
        if mine.is_empty() {
            let ev = ctx.event(
                EventKind::DeployableAction,
                Some(&name),
                Some("retiring"),
                "removed",
                "scaled down",
                Some(EngineAction::Delete),
            );
            let key = SlotKey::of(s);
            let done = ctx
                .app
                .db(move |st| st.remove_slot(&key, &ev, now_ms()))
                .await?;
            owned::acted(ctx.app, &[], done.into_iter().collect());
        }
    }
    Ok(())
}

/// Owned instances no slot points at (neither current nor retiring): a
/// duplicate is deleted.
pub async fn duplicates(ctx: &Ctx<'_>) -> app::Result<()> {
    let known: Vec<InstanceId> = ctx
        .snap
        .slots
        .iter()
        .flat_map(|s| s.instance_id.into_iter().chain(s.retiring.iter().copied()))
        .collect();
    for row in &ctx.snap.instances {
        let retiring_slot = ctx.snap.slots.iter().any(|s| {
            s.state == SlotState::Retiring
                && row.spec.owner.as_ref().is_some_and(|o| o.slot == s.name())
        });
        if !row.desired.deleted && !known.contains(&row.id) && !retiring_slot {
            ctx.delete_instance(row, "is a duplicate: no slot's instance")
                .await?;
        }
    }
    Ok(())
}

/// Set a new config body where the rendered one changed (a referenced
/// slot was replaced and its address moved, or an act wrote the slot but
/// died before setting its body): the guest's long-poll wakes.
pub async fn rerender(ctx: &Ctx<'_>) -> app::Result<()> {
    for s in &ctx.snap.slots {
        let Some(row) = s.instance_id.and_then(|i| ctx.snap.instance(i)) else {
            continue;
        };
        let Some(have) = ctx.snap.config_sha.get(&row.id) else {
            continue;
        };
        // A slot at an older generation gets its new body from the
        // rollout, after its balancer members are drained.
        let behind = s.spec_generation < ctx.snap.deployable.generation;
        if row.desired.deleted || s.state == SlotState::Retiring || behind {
            continue;
        }
        let body = match ctx.render(s) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!("{}: {}: {e}", ctx.snap.deployable.name, s.name());
                continue;
            }
        };
        if hex::encode(<sha2::Sha256 as sha2::Digest>::digest(body.as_bytes())) == *have {
            continue;
        }
        let req = cm_api::boot::SetConfig {
            config: Some(body),
            config_base64: None,
        };
        app::configs::set_config(ctx.app, &row.id.uuid().to_string(), req).await?;
        let ev = ctx.event(
            EventKind::DeployableAction,
            Some(&s.name()),
            None,
            s.state.as_str(),
            "its rendered config changed (a referenced slot's address or parameter moved, or a body not yet set): config set again",
            Some(EngineAction::Reconfigure),
        );
        let e = ev.clone();
        let done = ctx
            .app
            .db(move |st| {
                st.append_event_detail(e.kind, &e.target, &e.message, &e.detail, now_ms())
            })
            .await?;
        owned::acted(ctx.app, &[], vec![done]);
    }
    Ok(())
}
