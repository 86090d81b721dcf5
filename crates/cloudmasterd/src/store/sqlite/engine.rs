//! The policy engine's snapshot and compare-and-swap transactions
//! (store::EngineStore). Every write here is one transaction that checks
//! the slot's incarnation first, does the action, writes the slot and
//! appends the event: a DPE (or a restarted master) that decides the same
//! thing again finds the incarnation moved and gets `Stale`.

use super::codec::{i, to_json};
use super::engine_rows::*;
use super::{instances, SqliteStore};
use crate::store::engine::*;
use crate::store::*;
use cm_api::event::Event;
use cm_api::ids::DeployableId;
use cm_api::words::{DeployableState, SlotState};
use rusqlite::{params, OptionalExtension};

impl EngineStore for SqliteStore {
    fn engine_deployables(&self) -> Result<Vec<(DeployableId, bool)>> {
        self.read(|c| {
            let mut st = c.prepare_cached("SELECT id, deleted FROM deployables ORDER BY name")?;
            let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    fn deployable_id(&self, name: &str) -> Result<Option<DeployableId>> {
        self.read(|c| {
            Ok(
                c.query_row("SELECT id FROM deployables WHERE name = ?1", [name], |r| {
                    r.get(0)
                })
                .optional()?,
            )
        })
    }

    fn deployable_name(&self, id: DeployableId) -> Result<Option<String>> {
        self.read(|c| {
            Ok(
                c.query_row("SELECT name FROM deployables WHERE id = ?1", [id], |r| {
                    r.get(0)
                })
                .optional()?,
            )
        })
    }

    fn deploy_snapshot(&self, id: DeployableId, now: Millis) -> Result<Snapshot> {
        self.read(|c| {
            // One read transaction: every row from the same instant.
            let tx = c.unchecked_transaction()?;
            let out = snapshot_in(&tx, id, now)?;
            tx.finish()?;
            Ok(out)
        })
    }

    fn ensure_slots(&self, id: DeployableId, now: Millis) -> Result<Vec<SlotRow>> {
        self.tx(|t| {
            let d = deployable(t, id)?;
            let spec = spec_at(t, id, d.generation)?.spec;
            let have = slots(t, id)?;
            for a in &spec.assemblies {
                for idx in 0..a.count {
                    if !have.iter().any(|s| s.assembly == a.name && s.idx == idx) {
                        t.execute(
                            "INSERT INTO deployable_slots (deployable_id, assembly, idx,
                                spec_generation, state, state_since, updated_at)
                             VALUES (?1, ?2, ?3, ?4, 'creating', ?5, ?5)",
                            params![id, a.name, idx, i(d.generation), now],
                        )?;
                    }
                }
            }
            for s in &have {
                let wanted = spec
                    .assemblies
                    .iter()
                    .any(|a| a.name == s.assembly && s.idx < a.count);
                if !wanted && s.state != SlotState::Retiring {
                    t.execute(
                        "UPDATE deployable_slots SET state = 'retiring', state_since = ?4,
                            reason = 'no longer in the spec', action = NULL, updated_at = ?4
                         WHERE deployable_id = ?1 AND assembly = ?2 AND idx = ?3",
                        params![id, s.assembly, s.idx, now],
                    )?;
                }
            }
            slots(t, id)
        })
    }

    fn create_slot_instance(
        &self,
        key: &SlotKey,
        expect: u64,
        create: SlotCreate<'_>,
        slot: &SlotRow,
        event: &NewEvent,
        now: Millis,
    ) -> Result<Cas<InstanceRow>> {
        self.tx(|t| {
            let Some(cur) = slot_at(t, key, expect)? else {
                return Ok(Cas::Stale);
            };
            let row = insert_instance(t, &create, now)?;
            point_at(t, key, row.id, expect + 1, &cur.retiring)?;
            write_state(t, key, slot, now)?;
            let ev = append(t, event, now)?;
            Ok(Cas::Done(row, vec![ev]))
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn restart_slot(
        &self,
        key: &SlotKey,
        expect: u64,
        expected_boot_gen: u64,
        op: &Operation,
        slot: &SlotRow,
        event: &NewEvent,
        now: Millis,
    ) -> Result<Cas<InstanceRow>> {
        self.tx(|t| {
            let Some(cur) = slot_at(t, key, expect)? else {
                return Ok(Cas::Stale);
            };
            let Some(inst) = cur.instance_id else {
                return Ok(Cas::Stale);
            };
            let row = instances::by_id(t, inst)?;
            if row.desired.boot_gen != expected_boot_gen {
                return Ok(Cas::Stale);
            }
            // A VM still up (a silent guest, a failing service) is reset;
            // one whose boot ended is started again.
            let up = matches!(
                row.observed.state,
                Some(ObservedState::Running | ObservedState::Starting)
            ) && row.observed.boot_gen == row.desired.boot_gen;
            let change = if up && row.desired.power == cm_api::agent::Power::Running {
                // One reset at a time: the same decision again before the
                // host has done the last one is stale.
                if row.desired.reboot_gen > row.observed.reboot_gen {
                    return Ok(Cas::Stale);
                }
                DesiredChange::Reboot
            } else {
                DesiredChange::Restart {
                    expected_boot_gen,
                    backoff_step: slot.backoff_step,
                }
            };
            let ch = instances::change(t, inst, change, None, now)?;
            if !ch.effective {
                return Ok(Cas::Stale);
            }
            super::log::insert_operation(t, op, ch.row.desired.boot_gen)?;
            write_state(t, key, slot, now)?;
            let ev = append(t, event, now)?;
            Ok(Cas::Done(ch.row, vec![ev]))
        })
    }

    fn change_slot_instance(
        &self,
        key: &SlotKey,
        expect: u64,
        change: DesiredChange,
        slot: &SlotRow,
        event: &NewEvent,
        now: Millis,
    ) -> Result<Cas<InstanceRow>> {
        self.tx(|t| {
            let Some(cur) = slot_at(t, key, expect)? else {
                return Ok(Cas::Stale);
            };
            let Some(inst) = cur.instance_id else {
                return Ok(Cas::Stale);
            };
            let ch = instances::change(t, inst, change, None, now)?;
            write_state(t, key, slot, now)?;
            let ev = append(t, event, now)?;
            Ok(Cas::Done(ch.row, vec![ev]))
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn replace_slot(
        &self,
        key: &SlotKey,
        expect: u64,
        create: SlotCreate<'_>,
        old: OldFate,
        slot: &SlotRow,
        event: &NewEvent,
        now: Millis,
    ) -> Result<Cas<Replaced>> {
        self.tx(|t| {
            let Some(cur) = slot_at(t, key, expect)? else {
                return Ok(Cas::Stale);
            };
            let new = insert_instance(t, &create, now)?;
            let mut retiring = cur.retiring.clone();
            let old_row = match cur.instance_id {
                Some(id) => match (old, instances::by_id(t, id)) {
                    (_, Err(StoreError::NotFound { .. })) => None,
                    (_, Err(e)) => return Err(e),
                    (OldFate::Delete, Ok(_)) => {
                        Some(instances::change(t, id, DesiredChange::Delete, None, now)?.row)
                    }
                    (OldFate::Retire, Ok(row)) => {
                        retiring.push(id);
                        Some(row)
                    }
                },
                None => None,
            };
            point_at(t, key, new.id, expect + 1, &retiring)?;
            write_state(t, key, slot, now)?;
            let ev = append(t, event, now)?;
            Ok(Cas::Done(Replaced { new, old: old_row }, vec![ev]))
        })
    }

    fn set_slot_state(
        &self,
        key: &SlotKey,
        expect: u64,
        slot: &SlotRow,
        event: Option<&NewEvent>,
        now: Millis,
    ) -> Result<Cas<SlotRow>> {
        self.tx(|t| {
            if slot_at(t, key, expect)?.is_none() {
                return Ok(Cas::Stale);
            }
            write_state(t, key, slot, now)?;
            let evs = match event {
                Some(e) => vec![append(t, e, now)?],
                None => vec![],
            };
            let row = self::slot(t, key)?.ok_or_else(|| StoreError::NotFound {
                what: "slot",
                name: format!("{}-{}", key.assembly, key.idx),
            })?;
            Ok(Cas::Done(row, evs))
        })
    }

    fn move_services(
        &self,
        sides: &[SlotServices],
        event: &NewEvent,
        now: Millis,
    ) -> Result<Cas<()>> {
        self.tx(|t| super::engine_moves::move_services(t, sides, event, now))
    }

    fn repair_slots(
        &self,
        id: DeployableId,
        slot: Option<(&str, u32)>,
        event: &dyn Fn(&SlotRow) -> NewEvent,
        now: Millis,
    ) -> Result<Vec<(SlotRow, Event)>> {
        self.tx(|t| super::engine_moves::repair_slots(t, id, slot, event, now))
    }

    fn delete_owned(
        &self,
        id: DeployableId,
        instance: InstanceId,
        event: &NewEvent,
        now: Millis,
    ) -> Result<Option<Event>> {
        self.tx(|t| {
            let row = instances::by_id(t, instance)?;
            if row.spec.owner.as_ref().map(|o| o.deployable) != Some(id) {
                return Err(StoreError::Conflict(format!(
                    "instance '{}' is not owned by this deployable",
                    row.name
                )));
            }
            for s in slots(t, id)? {
                if s.retiring.contains(&instance) {
                    let rest: Vec<InstanceId> = s
                        .retiring
                        .iter()
                        .copied()
                        .filter(|r| *r != instance)
                        .collect();
                    t.execute(
                        "UPDATE deployable_slots SET retiring = ?4, updated_at = ?5
                         WHERE deployable_id = ?1 AND assembly = ?2 AND idx = ?3",
                        params![id, s.assembly, s.idx, to_json(&rest)?, now],
                    )?;
                }
            }
            if row.desired.deleted {
                return Ok(None);
            }
            instances::change(t, instance, DesiredChange::Delete, None, now)?;
            Ok(Some(append(t, event, now)?))
        })
    }

    fn revert_slot(
        &self,
        key: &SlotKey,
        expect: u64,
        old: InstanceId,
        generation: u64,
        event: &NewEvent,
        now: Millis,
    ) -> Result<Cas<()>> {
        self.tx(|t| {
            let Some(cur) = slot_at(t, key, expect)? else {
                return Ok(Cas::Stale);
            };
            if !cur.retiring.contains(&old) {
                return Ok(Cas::Stale);
            }
            if let Some(new) = cur.instance_id {
                instances::change(t, new, DesiredChange::Delete, None, now)?;
            }
            let rest: Vec<InstanceId> = cur.retiring.iter().copied().filter(|r| *r != old).collect();
            point_at(t, key, old, expect + 1, &rest)?;
            t.execute(
                "UPDATE deployable_slots SET spec_generation = ?4, state = 'healthy', state_since = ?5,
                    reason = 'rollout reverted', action = NULL, action_started_at = NULL,
                    action_deadline = NULL, updated_at = ?5
                 WHERE deployable_id = ?1 AND assembly = ?2 AND idx = ?3",
                params![key.deployable, key.assembly, key.idx, i(generation), now],
            )?;
            Ok(Cas::Done((), vec![append(t, event, now)?]))
        })
    }

    fn remove_slot(&self, key: &SlotKey, event: &NewEvent, now: Millis) -> Result<Option<Event>> {
        self.tx(|t| {
            let n = t.execute(
                "DELETE FROM deployable_slots
                 WHERE deployable_id = ?1 AND assembly = ?2 AND idx = ?3 AND state = 'retiring'",
                params![key.deployable, key.assembly, key.idx],
            )?;
            if n == 0 {
                return Ok(None);
            }
            Ok(Some(append(t, event, now)?))
        })
    }

    fn set_deployable_state(
        &self,
        id: DeployableId,
        state: DeployableState,
        reason: Option<&str>,
        event: &NewEvent,
        now: Millis,
    ) -> Result<Option<Event>> {
        self.tx(|t| {
            let d = deployable(t, id)?;
            if d.state == state && d.state_reason.as_deref() == reason {
                return Ok(None);
            }
            let frozen_since = match state {
                DeployableState::Frozen => Some(d.frozen_since.unwrap_or(now)),
                _ => None,
            };
            t.execute(
                "UPDATE deployables SET state = ?2, state_reason = ?3, frozen_since = ?4,
                    updated_at = ?5 WHERE id = ?1",
                params![id, state.as_str(), reason, frozen_since, now],
            )?;
            if d.state == state {
                return Ok(None);
            }
            Ok(Some(append(t, event, now)?))
        })
    }

    fn purge_deployable(
        &self,
        id: DeployableId,
        event: &NewEvent,
        now: Millis,
    ) -> Result<Option<Event>> {
        self.tx(|t| {
            let owned: i64 = t.query_row(
                "SELECT COUNT(*) FROM instances WHERE deployable_id = ?1",
                [id],
                |r| r.get(0),
            )?;
            if owned > 0 {
                return Ok(None);
            }
            t.execute("DELETE FROM pool_members WHERE deployable_id = ?1", [id])?;
            t.execute(
                "DELETE FROM deployable_slots WHERE deployable_id = ?1",
                [id],
            )?;
            t.execute(
                "DELETE FROM deployable_specs WHERE deployable_id = ?1",
                [id],
            )?;
            let n = t.execute(
                "DELETE FROM deployables WHERE id = ?1 AND deleted = 1",
                [id],
            )?;
            if n == 0 {
                return Err(StoreError::Conflict("the deployable is not deleted".into()));
            }
            Ok(Some(append(t, event, now)?))
        })
    }
}

#[cfg(test)]
#[path = "engine_fixtures.rs"]
mod fixtures;

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;
