//! Deployables as their owner changes them (issue 11): a spec is parsed,
//! checked against its own rules and against the cloud (its images, flavors
//! and balancers exist), compared with the spec in force, and stored as a
//! new generation. The policy engine does the rest; this wakes it.

use super::{Error, Result};
use crate::state::App;
use crate::store::{now_ms, to_ts, Applied, DeployableRow, SlotRow, StoreError};
use cm_api::deploy::{
    self, ApplyAnswer, ApplyRequest, Change, Deployable, DeployableList, DeployableSpec,
    RollbackRequest, Slot, SpecErrors, SpecFormat, SpecSource,
};
use cm_api::event::{Event, EventDetail};
use cm_api::validate;

/// A refused spec: `field` is the first path, the message every problem,
/// one `path: reason` a line.
fn refused(errs: &SpecErrors) -> Error {
    Error::invalid(errs.first_path(), errs.to_string())
}

/// Parse and check a spec, then check what it names against the cloud.
pub async fn validate(app: &App, format: SpecFormat, source: &str) -> Result<DeployableSpec> {
    let spec = deploy::load(format, source).map_err(|e| refused(&e))?;
    check_cloud(app, &spec).await?;
    Ok(spec)
}

/// The images and flavors a spec names exist; its pools name configured
/// balancers.
async fn check_cloud(app: &App, spec: &DeployableSpec) -> Result<()> {
    let mut errs = SpecErrors::default();
    let wanted: Vec<(usize, String, Option<String>)> = spec
        .assemblies
        .iter()
        .enumerate()
        .map(|(i, a)| (i, a.image.clone(), a.flavor.clone()))
        .collect();
    let missing = app
        .db(move |s| {
            let mut out = Vec::new();
            for (i, image, flavor) in wanted {
                match s.get_image(&image) {
                    Ok(_) => {}
                    Err(StoreError::NotFound { .. }) => out.push((
                        format!("assemblies[{i}].image"),
                        format!("no image '{image}'"),
                    )),
                    Err(e) => return Err(e),
                }
                if let Some(f) = flavor {
                    match s.get_flavor(&f) {
                        Ok(_) => {}
                        Err(StoreError::NotFound { .. }) => out.push((
                            format!("assemblies[{i}].flavor"),
                            format!("no flavor '{f}'"),
                        )),
                        Err(e) => return Err(e),
                    }
                }
            }
            Ok(out)
        })
        .await?;
    for (path, msg) in missing {
        errs.push(path, msg);
    }
    let balancers = &app.settings.balancers;
    for (i, a) in spec.assemblies.iter().enumerate() {
        for (j, s) in a.services.iter().enumerate() {
            let Some(pool) = &s.pool else { continue };
            if balancers.contains_key(&pool.balancer) {
                continue;
            }
            let path = format!("assemblies[{i}].services[{j}].pool.balancer");
            if balancers.is_empty() {
                errs.push(
                    path,
                    format!(
                        "no balancer '{}': this master has no balancers \
                         (start cloudmasterd with --balancer NAME=unix:PATH)",
                        pool.balancer
                    ),
                );
            } else {
                let known: Vec<&str> = balancers.keys().map(String::as_str).collect();
                errs.push(
                    path,
                    format!(
                        "no balancer '{}' (configured: {})",
                        pool.balancer,
                        known.join(", ")
                    ),
                );
            }
        }
    }
    errs.into_result().map_err(|e| refused(&e))
}

/// Tell event readers of an event already committed.
fn publish(app: &App, ev: Option<Event>) {
    if let Some(ev) = ev {
        tracing::info!(target: "events", "{} {}: {}", ev.kind, ev.target, ev.message);
        app.events_seq.send_replace(ev.seq);
        let _ = app.events.send(ev);
    }
}

/// The path's name must be the spec's.
fn same_name(name: &str, spec: &DeployableSpec) -> Result<()> {
    if name == spec.name {
        return Ok(());
    }
    Err(Error::invalid(
        "name",
        format!(
            "the URL names '{}' but the spec is named '{}'",
            validate::printable(name),
            validate::printable(&spec.name)
        ),
    ))
}

/// The spec in force of a deployable, if it exists (and is not deleted).
async fn current(app: &App, name: &str) -> Result<Option<(DeployableRow, DeployableSpec)>> {
    let name = name.to_string();
    app.db(move |s| {
        let row = match s.get_deployable(&name) {
            Ok(r) if !r.deleted => r,
            Ok(_) | Err(StoreError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let spec = s.deployable_spec(row.id, row.generation)?.spec;
        Ok(Some((row, spec)))
    })
    .await
}

/// A one-line summary of changes for the event (bounded).
fn summary(changes: &[Change]) -> String {
    let mut s = changes
        .iter()
        .map(|c| {
            let who = if c.assembly.is_empty() {
                "deployable"
            } else {
                c.assembly.as_str()
            };
            format!("{who}: {} ({})", c.kind.as_str(), c.why)
        })
        .collect::<Vec<_>>()
        .join("; ");
    if s.len() > 400 {
        let mut cut = 400;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

/// Store a spec as a new generation (or nothing, when unchanged), wake the
/// engine, and answer with the deployable and the changes.
async fn store_spec(
    app: &App,
    spec: DeployableSpec,
    format: SpecFormat,
    source: String,
    why: Option<String>,
) -> Result<ApplyAnswer> {
    let before = current(app, &spec.name).await?;
    let changes = deploy::diff(before.as_ref().map(|(_, s)| s), &spec);
    let detail = EventDetail {
        reason: Some(match why {
            Some(w) if changes.is_empty() => w,
            Some(w) => format!("{w}: {}", summary(&changes)),
            None => summary(&changes),
        }),
        ..Default::default()
    };
    let (row, applied, ev) = app
        .db(move |s| s.apply_deployable(&spec, format, &source, &detail, now_ms()))
        .await?;
    publish(app, ev);
    if applied != Applied::Unchanged {
        app.engines.deployables_changed();
        app.engines.wake(row.id);
    }
    let deployable = view(app, row, false).await?;
    Ok(ApplyAnswer {
        deployable: Some(deployable),
        changed: applied != Applied::Unchanged,
        changes: if applied == Applied::Unchanged {
            Vec::new()
        } else {
            changes
        },
    })
}

/// `PUT /v1/deployables/{name}`.
pub async fn apply(app: &App, name: &str, req: ApplyRequest) -> Result<ApplyAnswer> {
    let spec = validate(app, req.format, &req.source).await?;
    same_name(name, &spec)?;
    store_spec(app, spec, req.format, req.source, None).await
}

/// `POST /v1/deployables/{name}/diff`: what an apply would change; writes
/// nothing.
pub async fn diff(app: &App, name: &str, req: ApplyRequest) -> Result<ApplyAnswer> {
    let spec = validate(app, req.format, &req.source).await?;
    same_name(name, &spec)?;
    let before = current(app, name).await?;
    let changes = deploy::diff(before.as_ref().map(|(_, s)| s), &spec);
    let deployable = match before {
        Some((row, _)) => Some(view(app, row, false).await?),
        None => None,
    };
    Ok(ApplyAnswer {
        deployable,
        changed: !changes.is_empty(),
        changes,
    })
}

/// `POST /v1/deployables/{name}/rollback`: the spec of an earlier
/// generation applied again as a new one (history is never rewritten).
pub async fn rollback(app: &App, name: &str, req: RollbackRequest) -> Result<ApplyAnswer> {
    let row = get(app, name).await?;
    if row.deleted {
        return Err(Error::conflict(format!(
            "deployable '{}' is being deleted",
            row.name
        )));
    }
    let target = match (req.to_generation, row.rollout_from) {
        (Some(g), _) => g,
        (None, Some(g)) => g,
        (None, None) => {
            return Err(Error::conflict(format!(
                "deployable '{}' has only generation {}: there is nothing to roll back to",
                row.name, row.generation
            ))
            .field("to_generation"))
        }
    };
    if target == 0 || target > row.generation {
        return Err(Error::invalid(
            "to_generation",
            format!(
                "generation {target} does not exist (1 to {})",
                row.generation
            ),
        ));
    }
    let id = row.id;
    let old = app.db(move |s| s.deployable_spec(id, target)).await?;
    // The cloud may have changed since (an image deleted): check again.
    check_cloud(app, &old.spec).await?;
    let why = format!("rollback to generation {target}");
    store_spec(app, old.spec, old.format, old.source, Some(why)).await
}

async fn get(app: &App, name: &str) -> Result<DeployableRow> {
    let n = name.to_string();
    app.db(move |s| s.get_deployable(&n)).await
}

/// `GET /v1/deployables`.
pub async fn list(app: &App) -> Result<DeployableList> {
    let rows = app.db(|s| s.list_deployables()).await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        out.push(view(app, row, false).await?);
    }
    Ok(DeployableList { deployables: out })
}

/// `GET /v1/deployables/{name}`: with its spec and slots.
pub async fn show(app: &App, name: &str) -> Result<Deployable> {
    let row = get(app, name).await?;
    view(app, row, true).await
}

/// The spec of one generation as it was sent (`cm deploy show --source`).
pub async fn source(app: &App, name: &str, generation: Option<u64>) -> Result<SpecSource> {
    let row = get(app, name).await?;
    let (id, g) = (row.id, generation.unwrap_or(row.generation));
    let spec = app.db(move |s| s.deployable_spec(id, g)).await?;
    Ok(SpecSource {
        generation: spec.generation,
        format: spec.format,
        source: spec.source,
        created_at: to_ts(spec.created_at),
    })
}

/// `DELETE /v1/deployables/{name}`: marked deleting; its engine removes its
/// instances, then it.
pub async fn delete(app: &App, name: &str) -> Result<Deployable> {
    let n = name.to_string();
    let (row, ev) = app.db(move |s| s.delete_deployable(&n, now_ms())).await?;
    publish(app, ev);
    app.engines.deployables_changed();
    app.engines.wake(row.id);
    view(app, row, false).await
}

/// A deployable as the API shows it.
async fn view(app: &App, row: DeployableRow, with_spec: bool) -> Result<Deployable> {
    let (id, generation) = (row.id, row.generation);
    let (slots, spec) = app
        .db(move |s| {
            let slots = s.list_slots(id)?;
            let mut out = Vec::with_capacity(slots.len());
            for slot in slots {
                let placed = match slot.instance_id {
                    Some(i) => match s.get_instance(&i.to_string()) {
                        Ok(inst) => Some((inst.name, inst.host_name)),
                        Err(StoreError::NotFound { .. }) => None,
                        Err(e) => return Err(e),
                    },
                    None => None,
                };
                out.push(slot_view(slot, placed));
            }
            let spec = if with_spec {
                Some(s.deployable_spec(id, generation)?.spec)
            } else {
                None
            };
            Ok((out, spec))
        })
        .await?;
    Ok(Deployable {
        id: row.id.0,
        name: row.name,
        generation: row.generation,
        state: row.state,
        reason: row.state_reason,
        rollout_from: row.rollout_from,
        slots,
        spec,
        created_at: to_ts(row.created_at),
        updated_at: to_ts(row.updated_at),
    })
}

fn slot_view(slot: SlotRow, placed: Option<(String, String)>) -> Slot {
    let (instance, host) = match placed {
        Some((i, h)) => (Some(i), Some(h)),
        None => (None, None),
    };
    Slot {
        name: slot.name(),
        assembly: slot.assembly,
        index: slot.idx,
        state: slot.state,
        since: to_ts(slot.state_since),
        reason: slot.reason,
        instance,
        host,
        incarnation: slot.incarnation,
        generation: slot.spec_generation,
        action: slot.action,
    }
}
