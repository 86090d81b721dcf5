//! The policy engine's snapshot and compare-and-swap transactions
//! (store::EngineStore). Every write here is one transaction that checks
//! the slot's incarnation first, does the action, writes the slot and
//! appends the event: a DPE (or a restarted master) that decides the same
//! thing again finds the incarnation moved and gets `Stale`.

use super::codec::{self, columns, i, json, to_json, u, FromRow};
use super::{hosts, instances, SqliteStore};
use crate::store::engine::*;
use crate::store::*;
use cm_api::deploy::{DeployableSpec, SpecFormat};
use cm_api::event::Event;
use cm_api::ids::DeployableId;
use cm_api::words::{DeployableState, EngineAction, SlotState};
use rusqlite::{params, Connection, OptionalExtension, Row};

const DEP_COLS: &str = "id, name, uuid, generation, state, state_reason, rollout_from,
    frozen_since, deleted, created_at, updated_at";

fn deployable(c: &Connection, id: DeployableId) -> Result<DeployableRow> {
    c.query_row(
        &format!("SELECT {DEP_COLS} FROM deployables WHERE id = ?1"),
        [id],
        |r| Ok(dep_row(r)),
    )
    .optional()?
    .ok_or_else(|| StoreError::NotFound {
        what: "deployable",
        name: id.to_string(),
    })?
}

fn dep_row(r: &Row<'_>) -> Result<DeployableRow> {
    let uuid: Option<String> = r.get(2)?;
    let state: String = r.get(4)?;
    Ok(DeployableRow {
        id: r.get(0)?,
        name: r.get(1)?,
        uuid: uuid.as_deref().map(codec::uuid).transpose()?,
        generation: u(r.get(3)?),
        state: DeployableState::parse(&state)
            .ok_or_else(|| StoreError::Corrupt(format!("deployable state '{state}'")))?,
        state_reason: r.get(5)?,
        rollout_from: r.get::<_, Option<i64>>(6)?.map(u),
        frozen_since: r.get(7)?,
        deleted: r.get(8)?,
        created_at: r.get(9)?,
        updated_at: r.get(10)?,
    })
}

fn spec_at(c: &Connection, id: DeployableId, generation: u64) -> Result<SpecRow> {
    let row = c
        .query_row(
            "SELECT spec, format, source, created_at FROM deployable_specs
             WHERE deployable_id = ?1 AND generation = ?2",
            params![id, i(generation)],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, Millis>(3)?,
                ))
            },
        )
        .optional()?
        .ok_or_else(|| StoreError::NotFound {
            what: "deployable spec",
            name: format!("{id} generation {generation}"),
        })?;
    let spec: DeployableSpec = json("deployable spec", &row.0)?;
    let format = [
        SpecFormat::Yaml,
        SpecFormat::Toml,
        SpecFormat::Json,
        SpecFormat::Xml,
    ]
    .into_iter()
    .find(|f| f.as_str() == row.1)
    .ok_or_else(|| StoreError::Corrupt(format!("spec format '{}'", row.1)))?;
    Ok(SpecRow {
        generation,
        spec,
        format,
        source: row.2,
        created_at: row.3,
    })
}

const SLOT_COLS: &str = "deployable_id, assembly, idx, instance_id, incarnation, spec_generation,
    config_version, state, state_since, reason, action, action_started_at, action_deadline,
    next_action_at, backoff_step, windows, services, retiring, updated_at";

columns!(SlotCols {
    deployable_id,
    assembly,
    idx,
    instance_id,
    incarnation,
    spec_generation,
    config_version,
    state,
    state_since,
    reason,
    action,
    action_started_at,
    action_deadline,
    next_action_at,
    backoff_step,
    windows,
    services,
    retiring,
    updated_at,
});

impl FromRow for SlotRow {
    type Cols = SlotCols;
    fn cols(stmt: &rusqlite::Statement<'_>) -> rusqlite::Result<SlotCols> {
        SlotCols::of(stmt)
    }
    fn from_row(r: &Row<'_>, c: &SlotCols) -> Result<SlotRow> {
        let state: String = r.get(c.state)?;
        let action: Option<String> = r.get(c.action)?;
        let small = |v: i64| u32::try_from(u(v)).unwrap_or(u32::MAX);
        Ok(SlotRow {
            deployable_id: r.get(c.deployable_id)?,
            assembly: r.get(c.assembly)?,
            idx: small(r.get(c.idx)?),
            instance_id: r.get(c.instance_id)?,
            incarnation: u(r.get(c.incarnation)?),
            spec_generation: u(r.get(c.spec_generation)?),
            config_version: u(r.get(c.config_version)?),
            state: SlotState::parse(&state)
                .ok_or_else(|| StoreError::Corrupt(format!("slot state '{state}'")))?,
            state_since: r.get(c.state_since)?,
            reason: r.get(c.reason)?,
            action: match action {
                Some(a) => Some(
                    EngineAction::parse(&a)
                        .ok_or_else(|| StoreError::Corrupt(format!("slot action '{a}'")))?,
                ),
                None => None,
            },
            action_started_at: r.get(c.action_started_at)?,
            action_deadline: r.get(c.action_deadline)?,
            next_action_at: r.get(c.next_action_at)?,
            backoff_step: small(r.get(c.backoff_step)?),
            windows: json("slot windows", codec::text(r, c.windows)?)?,
            services: codec::opt_json::<Option<Vec<String>>>("slot services", r.get(c.services)?)?,
            retiring: json("slot retiring", codec::text(r, c.retiring)?)?,
            updated_at: r.get(c.updated_at)?,
        })
    }
}

fn slots(c: &Connection, id: DeployableId) -> Result<Vec<SlotRow>> {
    codec::all(
        c,
        &format!(
            "SELECT {SLOT_COLS} FROM deployable_slots WHERE deployable_id = ?1 ORDER BY assembly, idx"
        ),
        [id],
    )
}

fn slot(c: &Connection, key: &SlotKey) -> Result<Option<SlotRow>> {
    codec::first(
        c,
        &format!(
            "SELECT {SLOT_COLS} FROM deployable_slots
             WHERE deployable_id = ?1 AND assembly = ?2 AND idx = ?3"
        ),
        params![key.deployable, key.assembly, key.idx],
    )
}

/// The slot if its incarnation is still `expect`.
fn slot_at(c: &Connection, key: &SlotKey, expect: u64) -> Result<Option<SlotRow>> {
    Ok(slot(c, key)?.filter(|s| s.incarnation == expect))
}

/// Write the slot's own fields (not its instance, incarnation or retiring).
fn write_state(t: &Connection, key: &SlotKey, s: &SlotRow, now: Millis) -> Result<()> {
    t.execute(
        "UPDATE deployable_slots SET spec_generation = ?4, config_version = ?5, state = ?6,
            state_since = ?7, reason = ?8, action = ?9, action_started_at = ?10,
            action_deadline = ?11, next_action_at = ?12, backoff_step = ?13, windows = ?14,
            services = ?15, updated_at = ?16
         WHERE deployable_id = ?1 AND assembly = ?2 AND idx = ?3",
        params![
            key.deployable,
            key.assembly,
            key.idx,
            i(s.spec_generation),
            i(s.config_version),
            s.state.as_str(),
            s.state_since,
            s.reason,
            s.action.map(|a| a.as_str()),
            s.action_started_at,
            s.action_deadline,
            s.next_action_at,
            s.backoff_step,
            to_json(&s.windows)?,
            s.services.as_ref().map(to_json).transpose()?,
            now,
        ],
    )?;
    Ok(())
}

fn point_at(
    t: &Connection,
    key: &SlotKey,
    instance: InstanceId,
    incarnation: u64,
    retiring: &[InstanceId],
) -> Result<()> {
    t.execute(
        "UPDATE deployable_slots SET instance_id = ?4, incarnation = ?5, retiring = ?6
         WHERE deployable_id = ?1 AND assembly = ?2 AND idx = ?3",
        params![
            key.deployable,
            key.assembly,
            key.idx,
            instance,
            i(incarnation),
            to_json(&retiring)?
        ],
    )?;
    Ok(())
}

fn append(t: &Connection, e: &NewEvent, now: Millis) -> Result<Event> {
    super::log::append_event_detail(t, e.kind, &e.target, &e.message, &e.detail, now)
}

fn insert_instance(t: &Connection, c: &SlotCreate<'_>, now: Millis) -> Result<InstanceRow> {
    instances::create(t, c.new, c.config, c.place, c.op, now)
}

impl EngineStore for SqliteStore {
    fn engine_deployables(&self) -> Result<Vec<(DeployableId, bool)>> {
        self.read(|c| {
            let mut st = c.prepare_cached("SELECT id, deleted FROM deployables ORDER BY name")?;
            let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
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
            let change = DesiredChange::Restart {
                expected_boot_gen,
                backoff_step: slot.backoff_step,
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

fn snapshot_in(c: &Connection, id: DeployableId, now: Millis) -> Result<Snapshot> {
    let d = deployable(c, id)?;
    let spec = spec_at(c, id, d.generation)?;
    let slots = slots(c, id)?;
    let mut old_specs = std::collections::BTreeMap::new();
    for s in &slots {
        if s.spec_generation != d.generation && !old_specs.contains_key(&s.spec_generation) {
            if let Ok(old) = spec_at(c, id, s.spec_generation) {
                old_specs.insert(s.spec_generation, old.spec);
            }
        }
    }
    let instances = instances::query(c, "i.deployable_id = ?1", &[&id])?;
    let hosts = hosts::list(c)?;
    let mut params = std::collections::BTreeMap::new();
    let mut config_sha = std::collections::BTreeMap::new();
    {
        let mut st = c.prepare_cached(
            "SELECT c.instance_id, c.parameter_map, c.body_sha256 FROM configs c
             JOIN instances i ON i.id = c.instance_id WHERE i.deployable_id = ?1",
        )?;
        let mut rows = st.query([id])?;
        while let Some(r) = rows.next()? {
            let inst: InstanceId = r.get(0)?;
            let map: Option<String> = r.get(1)?;
            params.insert(inst, codec::opt_json("parameter map", map)?);
            config_sha.insert(inst, r.get::<_, String>(2)?);
        }
    }
    Ok(Snapshot {
        deployable: d,
        spec,
        slots,
        old_specs,
        instances,
        hosts,
        params,
        config_sha,
        now,
    })
}

#[cfg(test)]
impl SqliteStore {
    /// A deployable row and its spec at generation 1, written as the API
    /// would (for the engine's tests, without the deployables API).
    pub fn insert_test_deployable(&self, spec: serde_json::Value) -> DeployableId {
        let spec: DeployableSpec = serde_json::from_value(spec).expect("a spec");
        let id = DeployableId::new_v4();
        self.tx(|t| {
            t.execute(
                "INSERT INTO deployables (id, name, generation, state, created_at, updated_at)
                 VALUES (?1, ?2, 1, 'converging', 0, 0)",
                params![id, spec.name],
            )?;
            t.execute(
                "INSERT INTO deployable_specs (deployable_id, generation, spec, format, source, created_at)
                 VALUES (?1, 1, ?2, 'json', '{}', 0)",
                params![id, to_json(&spec)?],
            )?;
            Ok(())
        })
        .expect("insert a test deployable");
        id
    }

    /// A new generation of a test deployable's spec, in force at once.
    pub fn insert_test_generation(&self, id: DeployableId, spec: serde_json::Value) -> u64 {
        let spec: DeployableSpec = serde_json::from_value(spec).expect("a spec");
        self.tx(|t| {
            let generation: i64 =
                t.query_row("SELECT generation + 1 FROM deployables WHERE id = ?1", [id], |r| r.get(0))?;
            t.execute(
                "INSERT INTO deployable_specs (deployable_id, generation, spec, format, source, created_at)
                 VALUES (?1, ?2, ?3, 'json', '{}', 0)",
                params![id, generation, to_json(&spec)?],
            )?;
            t.execute("UPDATE deployables SET generation = ?2 WHERE id = ?1", params![id, generation])?;
            Ok(u(generation))
        })
        .expect("insert a test generation")
    }

    /// Set a guest's liveness as its host's watchdog would report it.
    pub fn set_test_liveness(&self, instance: InstanceId, word: &str) {
        self.tx(|t| {
            t.execute(
                "UPDATE instances SET guest_liveness = ?2 WHERE id = ?1",
                params![instance, word],
            )?;
            Ok(())
        })
        .expect("set a test liveness");
    }
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;
