//! Deployables' specs, generations and slots (store::DeployableStore).

use super::codec::{self, columns, i, json, text, u, uuid, FromRow};
use super::SqliteStore;
use crate::store::*;
use cm_api::deploy::{DeployableSpec, SpecFormat};
use cm_api::event::{Event, EventDetail};
use cm_api::ids::DeployableId;
use cm_api::words::{DeployableState, EventKind};
use rusqlite::{params, Connection, Row};

const COLS: &str = "id, name, uuid, generation, state, state_reason, rollout_from, frozen_since,
    deleted, created_at, updated_at";

columns!(Cols {
    id,
    name,
    uuid,
    generation,
    state,
    state_reason,
    rollout_from,
    frozen_since,
    deleted,
    created_at,
    updated_at,
});

impl FromRow for DeployableRow {
    type Cols = Cols;
    fn cols(stmt: &rusqlite::Statement<'_>) -> rusqlite::Result<Cols> {
        Cols::of(stmt)
    }
    fn from_row(r: &Row<'_>, c: &Cols) -> Result<DeployableRow> {
        let state = text(r, c.state)?;
        Ok(DeployableRow {
            id: DeployableId(uuid(text(r, c.id)?)?),
            name: r.get(c.name)?,
            uuid: r
                .get::<_, Option<String>>(c.uuid)?
                .map(|s| uuid(&s))
                .transpose()?,
            generation: u(r.get(c.generation)?),
            state: DeployableState::parse(state)
                .ok_or_else(|| StoreError::Corrupt(format!("deployable state '{state}'")))?,
            state_reason: r.get(c.state_reason)?,
            rollout_from: r.get::<_, Option<i64>>(c.rollout_from)?.map(u),
            frozen_since: r.get(c.frozen_since)?,
            deleted: r.get(c.deleted)?,
            created_at: r.get(c.created_at)?,
            updated_at: r.get(c.updated_at)?,
        })
    }
}

columns!(SpecCols {
    generation,
    spec,
    format,
    source,
    created_at,
});

impl FromRow for SpecRow {
    type Cols = SpecCols;
    fn cols(stmt: &rusqlite::Statement<'_>) -> rusqlite::Result<SpecCols> {
        SpecCols::of(stmt)
    }
    fn from_row(r: &Row<'_>, c: &SpecCols) -> Result<SpecRow> {
        let format = text(r, c.format)?;
        Ok(SpecRow {
            generation: u(r.get(c.generation)?),
            spec: json("deployable spec", text(r, c.spec)?)?,
            format: match format {
                "yaml" => SpecFormat::Yaml,
                "toml" => SpecFormat::Toml,
                "json" => SpecFormat::Json,
                "xml" => SpecFormat::Xml,
                other => return Err(StoreError::Corrupt(format!("spec format '{other}'"))),
            },
            source: r.get(c.source)?,
            created_at: r.get(c.created_at)?,
        })
    }
}

pub(super) fn by_id(c: &Connection, id: DeployableId) -> Result<DeployableRow> {
    codec::first(
        c,
        &format!("SELECT {COLS} FROM deployables WHERE id = ?1"),
        params![id.to_string()],
    )?
    .ok_or_else(|| StoreError::NotFound {
        what: "deployable",
        name: id.to_string(),
    })
}

fn get(c: &Connection, name_or_id: &str) -> Result<DeployableRow> {
    codec::first(
        c,
        &format!("SELECT {COLS} FROM deployables WHERE name = ?1 OR id = ?1"),
        params![name_or_id],
    )?
    .ok_or_else(|| StoreError::NotFound {
        what: "deployable",
        name: cm_api::validate::printable(name_or_id),
    })
}

pub(super) fn spec_at(c: &Connection, id: DeployableId, generation: u64) -> Result<SpecRow> {
    codec::first(
        c,
        "SELECT generation, spec, format, source, created_at FROM deployable_specs
         WHERE deployable_id = ?1 AND generation = ?2",
        params![id.to_string(), i(generation)],
    )?
    .ok_or_else(|| StoreError::NotFound {
        what: "generation",
        name: generation.to_string(),
    })
}

/// The normalised JSON of one generation.
fn spec_text(c: &Connection, id: DeployableId, generation: u64) -> Result<String> {
    Ok(c.query_row(
        "SELECT spec FROM deployable_specs WHERE deployable_id = ?1 AND generation = ?2",
        params![id.to_string(), i(generation)],
        |r| r.get(0),
    )?)
}

fn apply(
    c: &Connection,
    spec: &DeployableSpec,
    format: SpecFormat,
    source: &str,
    detail: &EventDetail,
    now: Millis,
) -> Result<(DeployableRow, Applied, Option<Event>)> {
    let normal = codec::to_json(spec)?;
    let existing = codec::first::<DeployableRow>(
        c,
        &format!("SELECT {COLS} FROM deployables WHERE name = ?1"),
        params![spec.name],
    )?;
    let (id, generation, applied) = match existing {
        Some(row) if row.deleted => {
            return Err(StoreError::Conflict(format!(
                "deployable '{}' is being deleted; apply again once it is gone",
                row.name
            )))
        }
        Some(row) => {
            if spec_text(c, row.id, row.generation)? == normal {
                return Ok((row, Applied::Unchanged, None));
            }
            let next = row.generation + 1;
            c.execute(
                "UPDATE deployables SET generation = ?2, rollout_from = ?3, uuid = ?4,
                     state = ?5, state_reason = NULL, updated_at = ?6 WHERE id = ?1",
                params![
                    row.id.to_string(),
                    i(next),
                    i(row.generation),
                    spec.uuid.map(|u| u.to_string()),
                    DeployableState::Rolling.as_str(),
                    now
                ],
            )?;
            (row.id, next, Applied::Changed)
        }
        None => {
            let id = DeployableId(uuid::Uuid::new_v4());
            c.execute(
                "INSERT INTO deployables (id, name, uuid, generation, state, created_at, updated_at)
                 VALUES (?1, ?2, ?3, 1, ?4, ?5, ?5)",
                params![
                    id.to_string(),
                    spec.name,
                    spec.uuid.map(|u| u.to_string()),
                    DeployableState::Converging.as_str(),
                    now
                ],
            )?;
            (id, 1, Applied::Created)
        }
    };
    c.execute(
        "INSERT INTO deployable_specs (deployable_id, generation, spec, format, source, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            id.to_string(),
            i(generation),
            normal,
            format.as_str(),
            source,
            now
        ],
    )?;
    let mut d = detail.clone();
    d.deployable = Some(spec.name.clone());
    d.generation = Some(generation);
    d.to = Some(format!("generation {generation}"));
    let message = match (&applied, &d.reason) {
        (Applied::Created, _) => format!("deployable {} created at generation 1", spec.name),
        (_, Some(why)) => format!("deployable {} at generation {generation}: {why}", spec.name),
        _ => format!("deployable {} at generation {generation}", spec.name),
    };
    let event = super::log::append_event_detail(
        c,
        EventKind::DeployableApplied,
        &spec.name,
        &message,
        &d,
        now,
    )?;
    Ok((get(c, &id.to_string())?, applied, Some(event)))
}

fn delete(c: &Connection, name: &str, now: Millis) -> Result<(DeployableRow, Option<Event>)> {
    let row = get(c, name)?;
    if row.deleted {
        return Ok((row, None));
    }
    c.execute(
        "UPDATE deployables SET deleted = 1, state = ?2, state_reason = NULL, updated_at = ?3
         WHERE id = ?1",
        params![row.id.to_string(), DeployableState::Deleting.as_str(), now],
    )?;
    let d = EventDetail {
        deployable: Some(row.name.clone()),
        generation: Some(row.generation),
        from: Some(row.state.as_str().to_string()),
        to: Some(DeployableState::Deleting.as_str().to_string()),
        ..Default::default()
    };
    let event = super::log::append_event_detail(
        c,
        EventKind::DeployableDeleted,
        &row.name,
        &format!("deployable {} is being deleted", row.name),
        &d,
        now,
    )?;
    Ok((get(c, &row.id.to_string())?, Some(event)))
}

impl DeployableStore for SqliteStore {
    fn apply_deployable(
        &self,
        spec: &DeployableSpec,
        format: SpecFormat,
        source: &str,
        event: &EventDetail,
        now: Millis,
    ) -> Result<(DeployableRow, Applied, Option<Event>)> {
        // An unchanged spec is found by a read and commits nothing; the
        // transaction checks again, so a race only costs a retry of the read.
        let normal = codec::to_json(spec)?;
        let same = self.read(|c| {
            let Some(row) = codec::first::<DeployableRow>(
                c,
                &format!("SELECT {COLS} FROM deployables WHERE name = ?1 AND deleted = 0"),
                params![spec.name],
            )?
            else {
                return Ok(None);
            };
            let current = spec_text(c, row.id, row.generation)?;
            Ok((current == normal).then_some(row))
        })?;
        if let Some(row) = same {
            return Ok((row, Applied::Unchanged, None));
        }
        self.tx(|t| apply(t, spec, format, source, event, now))
    }
    fn list_deployables(&self) -> Result<Vec<DeployableRow>> {
        self.read(|c| {
            codec::all(
                c,
                &format!("SELECT {COLS} FROM deployables WHERE deleted = 0 ORDER BY name"),
                [],
            )
        })
    }
    fn get_deployable(&self, name_or_id: &str) -> Result<DeployableRow> {
        self.read(|c| get(c, name_or_id))
    }
    fn deployable_spec(&self, id: DeployableId, generation: u64) -> Result<SpecRow> {
        self.read(|c| spec_at(c, id, generation))
    }
    #[cfg(test)]
    fn deployable_history(&self, id: DeployableId) -> Result<Vec<SpecRow>> {
        self.read(|c| {
            codec::all(
                c,
                "SELECT generation, spec, format, source, created_at FROM deployable_specs
                 WHERE deployable_id = ?1 ORDER BY generation",
                params![id.to_string()],
            )
        })
    }
    fn list_slots(&self, id: DeployableId) -> Result<Vec<SlotRow>> {
        self.read(|c| super::engine_rows::slots(c, id))
    }
    fn delete_deployable(&self, name: &str, now: Millis) -> Result<(DeployableRow, Option<Event>)> {
        self.tx(|t| delete(t, name, now))
    }
    fn append_event_detail(
        &self,
        kind: EventKind,
        target: &str,
        message: &str,
        detail: &EventDetail,
        now: Millis,
    ) -> Result<Event> {
        self.tx(|t| super::log::append_event_detail(t, kind, target, message, detail, now))
    }
    fn events_filtered(&self, since: i64, filter: &EventFilter, limit: u32) -> Result<Vec<Event>> {
        self.read(|c| super::log::events_filtered(c, since, filter, limit))
    }
}
