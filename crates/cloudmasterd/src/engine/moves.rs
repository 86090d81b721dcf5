//! The move rung (docs/deployables.md "The ladder", rung 4): a service
//! with `may_move_to` whose slot is `failed` runs in the guest of a
//! healthy slot of one of the named assemblies, under `{slot}.{service}`
//! (a service name has no dot, so it never collides), until its own slot
//! is healthy again (after `cm deploy repair`) and takes it back.
//!
//! Pure and level-triggered: [`plan`] looks at the slots' rows and returns
//! at most one transfer; the DPE does it in one transaction (both slots'
//! service lists, their instances' expected services, the event) and
//! reads the store again. Where a service is is only ever in the rows, so
//! a restarted DPE or master carries on from them.
//!
//! The rules, in order:
//! 1. a moved service whose slot is healthy again goes back to it;
//! 2. one whose host slot failed moves on to another target, or, with
//!    none, back onto its own failed slot (with an event: never lost);
//! 3. a failed slot's movable service still on it moves to a target.
//!
//! A target is the first slot, in `may_move_to`'s order of assemblies and
//! then by index, that is `healthy` with no action in progress and is
//! neither the service's own slot nor the one it leaves.

use super::act::Ctx;
use super::render::{moved_name, split_moved};
use crate::app::{self, owned};
use crate::store::engine::{Cas, SlotServices};
use crate::store::{now_ms, HostId, SlotRow};
use cm_api::deploy::DeployableSpec;
use cm_api::words::{EngineAction, EventKind, SlotState};

/// One transfer: the slots whose rows change (index into the slots given
/// to [`plan`], and the row to write), and what the event says.
#[derive(Debug, Clone, PartialEq)]
pub struct Transfer {
    pub sides: Vec<(usize, SlotRow)>,
    /// The slot the service leaves and the one it goes to (`web-1`).
    pub from: String,
    pub to: String,
    /// The service as named on the slot it leaves or reaches.
    pub object: String,
    pub reason: String,
}

/// The services of assembly `asm` in the spec.
fn natives(spec: &DeployableSpec, asm: &str) -> Vec<String> {
    spec.assemblies
        .iter()
        .find(|a| a.name == asm)
        .map(|a| a.services.iter().map(|s| s.name.clone()).collect())
        .unwrap_or_default()
}

/// A slot's service list now (its own services when not set).
fn list(spec: &DeployableSpec, s: &SlotRow) -> Vec<String> {
    s.services
        .clone()
        .unwrap_or_else(|| natives(spec, &s.assembly))
}

/// The list to store: None when it is just the assembly's own services.
fn normal(spec: &DeployableSpec, asm: &str, l: Vec<String>) -> Option<Vec<String>> {
    let own = natives(spec, asm);
    let same = l.len() == own.len() && own.iter().all(|n| l.contains(n));
    (!same).then_some(l)
}

/// The services a slot's instance expects: its list, in the store's form.
pub fn expected(spec: &DeployableSpec, s: &SlotRow) -> Vec<String> {
    list(spec, s)
}

fn may_move_to<'a>(spec: &'a DeployableSpec, asm: &str, svc: &str) -> &'a [String] {
    spec.assemblies
        .iter()
        .find(|a| a.name == asm)
        .and_then(|a| a.services.iter().find(|s| s.name == svc))
        .map(|s| s.may_move_to.as_slice())
        .unwrap_or(&[])
}

fn usable(s: &SlotRow) -> bool {
    s.state == SlotState::Healthy && s.action.is_none()
}

/// The target for `svc` of `asm`, avoiding the slots named.
fn target(
    spec: &DeployableSpec,
    slots: &[SlotRow],
    asm: &str,
    svc: &str,
    avoid: &[&str],
) -> Option<usize> {
    may_move_to(spec, asm, svc).iter().find_map(|to| {
        let mut of: Vec<(usize, &SlotRow)> = slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.assembly == *to && usable(s))
            .filter(|(_, s)| !avoid.contains(&s.name().as_str()))
            .collect();
        of.sort_by_key(|(_, s)| s.idx);
        of.first().map(|(i, _)| *i)
    })
}

fn with(spec: &DeployableSpec, s: &SlotRow, add: Option<&str>, drop: Option<&str>) -> SlotRow {
    let mut l = list(spec, s);
    if let Some(d) = drop {
        l.retain(|n| n != d);
    }
    if let Some(a) = add {
        if !l.iter().any(|n| n == a) {
            l.push(a.to_string());
        }
    }
    let mut out = s.clone();
    out.services = normal(spec, &s.assembly, l);
    out
}

/// A failed slot's reason, saying where its services are now.
fn failed_reason(slots: &[SlotRow], own: &SlotRow, after: &[(usize, SlotRow)]) -> Option<String> {
    let base = own
        .reason
        .as_deref()
        .map(|r| r.split(" | moved: ").next().unwrap_or(r).to_string())
        .unwrap_or_else(|| "failed".to_string());
    let name = own.name();
    let prefix = format!("{name}.");
    let mut placed = Vec::new();
    for (i, s) in slots.iter().enumerate() {
        let row = after.iter().find(|(j, _)| *j == i).map_or(s, |(_, r)| r);
        for n in row.services.iter().flatten() {
            if let Some(svc) = n.strip_prefix(&prefix) {
                placed.push(format!("{svc} → {}", row.name()));
            }
        }
    }
    if placed.is_empty() {
        Some(base)
    } else {
        Some(format!("{base} | moved: {}", placed.join(", ")))
    }
}

/// Put the own slot's reason (when it is failed and not already a side)
/// into the transfer's sides.
fn with_reason(
    slots: &[SlotRow],
    own: usize,
    mut sides: Vec<(usize, SlotRow)>,
) -> Vec<(usize, SlotRow)> {
    let s = &slots[own];
    if s.state != SlotState::Failed {
        return sides;
    }
    let reason = failed_reason(slots, s, &sides);
    match sides.iter_mut().find(|(j, _)| *j == own) {
        Some((_, row)) => row.reason = reason,
        None => {
            let mut row = s.clone();
            row.reason = reason;
            sides.push((own, row));
        }
    }
    sides
}

/// The next transfer, if any.
pub fn plan(spec: &DeployableSpec, slots: &[SlotRow]) -> Option<Transfer> {
    let index = |name: &str| slots.iter().position(|s| s.name() == name);
    // 1 and 2: services moved onto a slot.
    for (h, host) in slots.iter().enumerate() {
        for entry in host.services.iter().flatten() {
            let Some((own_name, asm, svc)) = split_moved(entry) else {
                continue;
            };
            let own = index(own_name);
            let host_name = host.name();
            let movable = may_move_to(spec, asm, svc).contains(&host.assembly);
            match own {
                // Its slot or the service is gone from the spec, or the
                // spec no longer lets it run here: dropped from the host.
                None => {
                    return Some(Transfer {
                        sides: vec![(h, with(spec, host, None, Some(entry)))],
                        from: host_name,
                        to: own_name.to_string(),
                        object: entry.clone(),
                        reason: format!(
                            "{svc} of {own_name} dropped from {}: its slot is gone",
                            host.name()
                        ),
                    });
                }
                Some(o)
                    if slots[o].state != SlotState::Failed && (usable(&slots[o]) || !movable) =>
                {
                    let back = with(spec, &slots[o], Some(svc), None);
                    return Some(Transfer {
                        sides: vec![(h, with(spec, host, None, Some(entry))), (o, back)],
                        from: host_name.clone(),
                        to: own_name.to_string(),
                        object: entry.clone(),
                        reason: format!(
                            "{own_name} is healthy again: {svc} taken back from {host_name}"
                        ),
                    });
                }
                Some(o) if host.state == SlotState::Failed || !movable => {
                    let own_row = &slots[o];
                    let avoid = [host_name.as_str(), own_name];
                    let (sides, to, reason) = match target(spec, slots, asm, svc, &avoid) {
                        Some(t) => (
                            vec![
                                (h, with(spec, host, None, Some(entry))),
                                (t, with(spec, &slots[t], Some(entry), None)),
                            ],
                            slots[t].name(),
                            format!("{host_name} failed: {svc} of {own_name} moved on to {}", slots[t].name()),
                        ),
                        None => (
                            vec![
                                (h, with(spec, host, None, Some(entry))),
                                (o, with(spec, own_row, Some(svc), None)),
                            ],
                            own_name.to_string(),
                            format!(
                                "{host_name} failed and no healthy slot of {} can take it: {svc} is back on its failed slot {own_name}",
                                may_move_to(spec, asm, svc).join(", ")
                            ),
                        ),
                    };
                    return Some(Transfer {
                        sides: with_reason(slots, o, sides),
                        from: host_name,
                        to,
                        object: entry.clone(),
                        reason,
                    });
                }
                Some(_) => {}
            }
        }
    }
    // 3: a failed slot's movable services still on it.
    for (o, own) in slots.iter().enumerate() {
        if own.state != SlotState::Failed {
            continue;
        }
        let name = own.name();
        for svc in list(spec, own) {
            if split_moved(&svc).is_some() || may_move_to(spec, &own.assembly, &svc).is_empty() {
                continue;
            }
            let Some(t) = target(spec, slots, &own.assembly, &svc, &[name.as_str()]) else {
                continue;
            };
            let entry = moved_name(&name, &svc);
            let to = slots[t].name();
            let sides = vec![
                (o, with(spec, own, None, Some(&svc))),
                (t, with(spec, &slots[t], Some(&entry), None)),
            ];
            return Some(Transfer {
                sides: with_reason(slots, o, sides),
                from: name.clone(),
                reason: format!("{name} failed: {svc} moved to {to} as {entry} (may_move_to)"),
                to,
                object: entry,
            });
        }
    }
    None
}

/// Do the next transfer, if any, in one transaction, then set the changed
/// slots' config bodies (their guests' long-polls wake; a master that dies
/// in between has `housekeep::rerender` set them on its next pass).
/// Whether one was done: the DPE then reads the store again.
pub async fn step(ctx: &Ctx<'_>) -> app::Result<bool> {
    let spec = &ctx.snap.spec.spec;
    let slots: Vec<SlotRow> = ctx
        .snap
        .slots
        .iter()
        .filter(|s| s.state != SlotState::Retiring)
        .cloned()
        .collect();
    let Some(t) = plan(spec, &slots) else {
        return Ok(false);
    };
    let sides: Vec<SlotServices> = t
        .sides
        .iter()
        .map(|(i, after)| SlotServices {
            before: slots[*i].clone(),
            after: after.clone(),
            expected: expected(spec, after),
        })
        .collect();
    let ev = ctx.event(
        EventKind::DeployableAction,
        Some(&t.object),
        Some(&t.from),
        &t.to,
        &t.reason,
        Some(EngineAction::Move),
    );
    let done = ctx
        .app
        .db(move |s| s.move_services(&sides, &ev, now_ms()))
        .await?;
    let Cas::Done(_, evs) = done else {
        return Ok(true);
    };
    let rows: Vec<_> = t
        .sides
        .iter()
        .filter_map(|(_, after)| {
            let row = after.instance_id.and_then(|i| ctx.snap.instance(i))?;
            (!row.desired.deleted).then_some((row, after))
        })
        .collect();
    let hosts: Vec<HostId> = rows.iter().map(|(r, _)| r.host_id).collect();
    owned::acted(ctx.app, &hosts, evs);
    for (row, after) in rows {
        if let Err(e) = ctx.set_body(row, after).await? {
            tracing::warn!("{}: {}: {e}", ctx.snap.deployable.name, after.name());
        }
    }
    Ok(true)
}
