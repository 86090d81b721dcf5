//! `cm deploy repair NAME [SLOT]` (docs/deployables.md "The way out of
//! failed"): a failed slot never runs the ladder again by itself; its
//! owner, having fixed the cause, clears its counters and back-off, as
//! pacemaker's `crm_resource --cleanup` does. The slot goes back to `down`
//! and its DPE is woken: it restarts or replaces it as for any down slot,
//! and once it is healthy takes its moved services back (engine/moves.rs).

use super::{Error, Result};
use crate::state::App;
use crate::store::engine::NewEvent;
use crate::store::now_ms;
use cm_api::deploy::{RepairAnswer, RepairRequest};
use cm_api::event::EventDetail;
use cm_api::words::{EngineAction, EventKind};

/// `POST /v1/deployables/{name}/repair`. Safe to retry: a slot that is no
/// longer failed is left alone (the answer lists none).
pub async fn repair(app: &App, name: &str, req: RepairRequest) -> Result<RepairAnswer> {
    let n = name.to_string();
    let row = app.db(move |s| s.get_deployable(&n)).await?;
    if row.deleted {
        return Err(Error::conflict(format!(
            "deployable '{}' is being deleted",
            row.name
        )));
    }
    let spec = app
        .db({
            let (id, g) = (row.id, row.generation);
            move |s| s.deployable_spec(id, g)
        })
        .await?
        .spec;
    let slot = match &req.slot {
        None => None,
        Some(text) => {
            let known = text
                .rsplit_once('-')
                .and_then(|(a, i)| Some((a.to_string(), i.parse::<u32>().ok()?)))
                .filter(|(a, i)| spec.assemblies.iter().any(|x| x.name == *a && *i < x.count));
            match known {
                Some(k) => Some(k),
                None => {
                    return Err(Error::invalid(
                        "slot",
                        format!(
                            "'{}' is not a slot of deployable '{}' (ASSEMBLY-INDEX, as cm deploy show lists them)",
                            cm_api::validate::printable(text),
                            row.name
                        ),
                    ))
                }
            }
        }
    };
    let (id, dname, generation) = (row.id, row.name.clone(), row.generation);
    let done = app
        .db(move |s| {
            let event = |slot: &crate::store::SlotRow| {
                let object = slot.name();
                let reason =
                    "repaired: its counters and back-off are cleared; the ladder runs again";
                NewEvent {
                    kind: EventKind::DeployableAction,
                    target: dname.clone(),
                    message: format!("{object}: failed → down: {reason} [repair]"),
                    detail: EventDetail {
                        deployable: Some(dname.clone()),
                        generation: Some(generation),
                        object: Some(object),
                        from: Some("failed".into()),
                        to: Some("down".into()),
                        reason: Some(reason.into()),
                        action: Some(EngineAction::Repair),
                        counters: Default::default(),
                    },
                }
            };
            let slot = slot.as_ref().map(|(a, i)| (a.as_str(), *i));
            s.repair_slots(id, slot, &event, now_ms())
        })
        .await?;
    let repaired = done.iter().map(|(s, _)| s.name()).collect();
    super::owned::acted(app, &[], done.into_iter().map(|(_, e)| e).collect());
    app.engines.wake(id);
    Ok(RepairAnswer { repaired })
}
