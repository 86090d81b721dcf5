//! The engine's rows (store::sqlite::engine): deployables, specs and
//! slots as read, the slot writes its transactions share, and the
//! snapshot's one read.

use super::codec::{self, columns, i, json, to_json, u, FromRow};
use super::{hosts, instances};
use crate::store::engine::*;
use crate::store::*;
use cm_api::event::Event;
use cm_api::ids::DeployableId;
use cm_api::words::{EngineAction, SlotState};
use rusqlite::{params, Connection, Row};

/// A deployable by id (its rows are decoded in `deployables.rs`).
pub fn deployable(c: &Connection, id: DeployableId) -> Result<DeployableRow> {
    super::deployables::by_id(c, id)
}

/// One generation's spec.
pub fn spec_at(c: &Connection, id: DeployableId, generation: u64) -> Result<SpecRow> {
    super::deployables::spec_at(c, id, generation)
}

pub const SLOT_COLS: &str =
    "deployable_id, assembly, idx, instance_id, incarnation, spec_generation,
    config_version, state, state_since, reason, action, action_started_at, action_deadline,
    next_action_at, backoff_step, windows, services, retiring, updated_at, restart_gens";

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
    restart_gens,
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
            restart_gens: json("slot restart_gens", codec::text(r, c.restart_gens)?)?,
        })
    }
}

pub fn slots(c: &Connection, id: DeployableId) -> Result<Vec<SlotRow>> {
    codec::all(
        c,
        &format!(
            "SELECT {SLOT_COLS} FROM deployable_slots WHERE deployable_id = ?1 ORDER BY assembly, idx"
        ),
        [id],
    )
}

pub fn slot(c: &Connection, key: &SlotKey) -> Result<Option<SlotRow>> {
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
pub fn slot_at(c: &Connection, key: &SlotKey, expect: u64) -> Result<Option<SlotRow>> {
    Ok(slot(c, key)?.filter(|s| s.incarnation == expect))
}

/// Write the slot's own fields (not its instance, incarnation or retiring).
pub fn write_state(t: &Connection, key: &SlotKey, s: &SlotRow, now: Millis) -> Result<()> {
    t.execute(
        "UPDATE deployable_slots SET spec_generation = ?4, config_version = ?5, state = ?6,
            state_since = ?7, reason = ?8, action = ?9, action_started_at = ?10,
            action_deadline = ?11, next_action_at = ?12, backoff_step = ?13, windows = ?14,
            services = ?15, updated_at = ?16, restart_gens = ?17
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
            to_json(&s.restart_gens)?,
        ],
    )?;
    Ok(())
}

pub fn point_at(
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

pub fn append(t: &Connection, e: &NewEvent, now: Millis) -> Result<Event> {
    super::log::append_event_detail(t, e.kind, &e.target, &e.message, &e.detail, now)
}

pub fn insert_instance(t: &Connection, c: &SlotCreate<'_>, now: Millis) -> Result<InstanceRow> {
    instances::create(t, c.new, c.config, c.place, c.op, now)
}

pub fn snapshot_in(c: &Connection, id: DeployableId, now: Millis) -> Result<Snapshot> {
    let d = deployable(c, id)?;
    let spec = spec_at(c, id, d.generation)?;
    let slots = slots(c, id)?;
    let mut old_specs = std::collections::BTreeMap::new();
    // Those some slot runs, and the one a rollout started from (what a
    // failed rollout's slot goes back to).
    let gens = slots
        .iter()
        .map(|s| s.spec_generation)
        .chain(d.rollout_from);
    for g in gens {
        if g != d.generation && !old_specs.contains_key(&g) {
            if let Ok(old) = spec_at(c, id, g) {
                old_specs.insert(g, old.spec);
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
