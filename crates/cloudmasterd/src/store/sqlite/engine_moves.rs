//! The move rung's and `cm deploy repair`'s transactions
//! (store::EngineStore::move_services, repair_slots).

use super::codec::to_json;
use super::engine_rows::*;
use super::{hosts, instances};
use crate::store::engine::*;
use crate::store::*;
use cm_api::event::Event;
use cm_api::ids::DeployableId;
use cm_api::words::SlotState;
use rusqlite::{params, Connection};
use std::collections::BTreeMap;

/// Every side's slot as read (incarnation and services), then each
/// written with its instance's expected services, and the event.
pub fn move_services(
    t: &Connection,
    sides: &[SlotServices],
    event: &NewEvent,
    now: Millis,
) -> Result<Cas<()>> {
    for side in sides {
        let key = SlotKey::of(&side.before);
        match slot_at(t, &key, side.before.incarnation)? {
            Some(cur) if cur.services == side.before.services => {}
            _ => return Ok(Cas::Stale),
        }
    }
    for side in sides {
        let key = SlotKey::of(&side.before);
        write_state(t, &key, &side.after, now)?;
        let Some(inst) = side.before.instance_id else {
            continue;
        };
        let row = instances::by_id(t, inst)?;
        let Some(mut health) = row.spec.health.clone() else {
            continue;
        };
        if row.desired.deleted || health.services == side.expected {
            continue;
        }
        health.services = side.expected.clone();
        t.execute(
            "UPDATE instances SET health = ?2, updated_at = ?3 WHERE id = ?1",
            params![inst, to_json(&health)?, now],
        )?;
        // Its host reads the new policy with its next desired state.
        hosts::bump_generation(t, row.host_id)?;
    }
    let ev = append(t, event, now)?;
    Ok(Cas::Done((), vec![ev]))
}

/// Clear the failed slots' counters so the ladder runs again.
pub fn repair_slots(
    t: &Connection,
    id: DeployableId,
    slot: Option<(&str, u32)>,
    event: &dyn Fn(&SlotRow) -> NewEvent,
    now: Millis,
) -> Result<Vec<(SlotRow, Event)>> {
    let mut out = Vec::new();
    for s in slots(t, id)? {
        if s.state != SlotState::Failed {
            continue;
        }
        if slot.is_some_and(|(a, i)| (a, i) != (s.assembly.as_str(), s.idx)) {
            continue;
        }
        let mut after = s.clone();
        after.state = SlotState::Down;
        after.state_since = now;
        after.reason = Some("repaired: its counters are cleared and the ladder runs again".into());
        after.action = None;
        after.action_started_at = None;
        after.action_deadline = None;
        after.next_action_at = None;
        after.backoff_step = 0;
        after.windows = BTreeMap::new();
        write_state(t, &SlotKey::of(&s), &after, now)?;
        let ev = append(t, &event(&s), now)?;
        out.push((after, ev));
    }
    Ok(out)
}

#[cfg(test)]
#[path = "engine_moves_tests.rs"]
mod tests;
