//! `volumes` (store::volume::VolumeStore): intent from users, facts from
//! the reports of each volume's host (docs/storage.md).

use super::codec::{self, columns, i, json, u, FromRow};
use super::log::insert_operation;
use super::{hosts, SqliteStore};
use crate::store::volume::*;
use crate::store::*;
use cm_api::agent::{AttachmentState, ObservedVolume};
use cm_api::host::HostFacts;
use cm_api::ids::VolumeId;
use rusqlite::{params, Connection, Row};

const COLS: &str = "v.id, v.name, v.host_id, h.name AS host_name, v.size_bytes, v.instance_id,
    di.name AS instance_name, v.attach_pos, v.attach_gen, v.force_detach, v.deleted, v.deleted_gen,
    v.intent_gen, v.image_id, vimg.name AS image_name, v.root_of, ri.name AS root_name,
    v.obs_size_bytes, v.obs_allocated, v.obs_error, v.obs_instance_id,
    oi.name AS obs_instance_name, v.obs_attach_state, v.obs_attach_error, v.created_at, v.updated_at";

const FROM: &str = "volumes v JOIN hosts h ON h.id = v.host_id
    LEFT JOIN instances di ON di.id = v.instance_id
    LEFT JOIN instances oi ON oi.id = v.obs_instance_id
    LEFT JOIN images vimg ON vimg.id = v.image_id
    LEFT JOIN instances ri ON ri.id = v.root_of";

columns!(Cols {
    id,
    name,
    host_id,
    host_name,
    size_bytes,
    instance_id,
    instance_name,
    attach_pos,
    attach_gen,
    force_detach,
    deleted,
    deleted_gen,
    intent_gen,
    image_id,
    image_name,
    root_of,
    root_name,
    obs_size_bytes,
    obs_allocated,
    obs_error,
    obs_instance_id,
    obs_instance_name,
    obs_attach_state,
    obs_attach_error,
    created_at,
    updated_at,
});

fn named(id: Option<InstanceId>, name: Option<String>) -> Option<(InstanceId, String)> {
    id.map(|i| (i, name.unwrap_or_else(|| i.to_string())))
}

impl FromRow for VolumeRow {
    type Cols = Cols;
    fn cols(stmt: &rusqlite::Statement<'_>) -> rusqlite::Result<Cols> {
        Cols::of(stmt)
    }
    fn from_row(r: &Row<'_>, c: &Cols) -> Result<VolumeRow> {
        let opt = |i: usize| -> Result<Option<u64>> { Ok(r.get::<_, Option<i64>>(i)?.map(u)) };
        let state: Option<String> = r.get(c.obs_attach_state)?;
        Ok(VolumeRow {
            id: r.get(c.id)?,
            name: r.get(c.name)?,
            host_id: r.get(c.host_id)?,
            host_name: r.get(c.host_name)?,
            size_bytes: u(r.get(c.size_bytes)?),
            instance: named(r.get(c.instance_id)?, r.get(c.instance_name)?),
            attach_pos: u(r.get(c.attach_pos)?),
            attach_gen: u(r.get(c.attach_gen)?),
            force_detach: r.get(c.force_detach)?,
            deleted: r.get(c.deleted)?,
            deleted_gen: opt(c.deleted_gen)?,
            intent_gen: u(r.get(c.intent_gen)?),
            image: r
                .get::<_, Option<ImageId>>(c.image_id)?
                .map(|id| -> Result<_> {
                    Ok((
                        id,
                        r.get::<_, Option<String>>(c.image_name)?
                            .unwrap_or_else(|| id.to_string()),
                    ))
                })
                .transpose()?,
            root_of: named(r.get(c.root_of)?, r.get(c.root_name)?),
            facts: VolumeFacts {
                size_bytes: opt(c.obs_size_bytes)?,
                allocated_bytes: opt(c.obs_allocated)?,
                error: r.get(c.obs_error)?,
                holder: named(r.get(c.obs_instance_id)?, r.get(c.obs_instance_name)?),
                attach_state: match state.as_deref() {
                    None => None,
                    Some("attached") => Some(AttachmentState::Attached),
                    Some("detaching") => Some(AttachmentState::Detaching),
                    Some(other) => {
                        return Err(StoreError::Corrupt(format!(
                            "volume attachment state '{other}'"
                        )))
                    }
                },
                attach_error: r.get(c.obs_attach_error)?,
            },
            created_at: r.get(c.created_at)?,
            updated_at: r.get(c.updated_at)?,
        })
    }
}

pub fn query(
    c: &Connection,
    where_: &str,
    args: &[&dyn rusqlite::ToSql],
) -> Result<Vec<VolumeRow>> {
    codec::all(
        c,
        &format!("SELECT {COLS} FROM {FROM} WHERE {where_} ORDER BY v.name"),
        args,
    )
}

pub fn by_id(c: &Connection, id: VolumeId) -> Result<VolumeRow> {
    get(c, &id.to_string())
}

pub fn get(c: &Connection, name_or_id: &str) -> Result<VolumeRow> {
    codec::first(
        c,
        &format!("SELECT {COLS} FROM {FROM} WHERE v.name = ?1 OR v.id = ?1"),
        [name_or_id],
    )?
    .ok_or_else(|| StoreError::NotFound {
        what: "volume",
        name: name_or_id.to_string(),
    })
}

/// What volume placement knows of every host.
pub fn spaces(c: &Connection) -> Result<Vec<VolumeSpace>> {
    let mut st = c.prepare_cached(
        "SELECT h.id, h.name, h.enabled, h.last_seen, h.facts,
            (SELECT COUNT(*) FROM volumes WHERE host_id = h.id AND deleted = 0),
            (SELECT COALESCE(SUM(MAX(size_bytes - COALESCE(obs_allocated, 0), 0)), 0)
             FROM volumes WHERE host_id = h.id AND deleted = 0)
         FROM hosts h ORDER BY h.name",
    )?;
    let mut rows = st.query([])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let facts: HostFacts = json("host facts", codec::text(r, 4)?)?;
        out.push(VolumeSpace {
            id: r.get(0)?,
            name: r.get(1)?,
            enabled: r.get(2)?,
            last_seen: r.get(3)?,
            disk_free_mib: facts.disk_free_mib,
            volume_count: u32::try_from(u(r.get(5)?)).unwrap_or(u32::MAX),
            unallocated_mib: u(r.get(6)?).div_ceil(cm_api::volume::VOLUME_SIZE_UNIT),
        });
    }
    Ok(out)
}

pub(super) fn create(
    t: &Connection,
    new: &NewVolume,
    place: &VolumePlacer<'_>,
    op: &Operation,
    now: Millis,
) -> Result<VolumeRow> {
    if get(t, &new.name).is_ok() {
        return Err(StoreError::AlreadyExists(format!(
            "volume '{}' exists already",
            new.name
        )));
    }
    let host = place(&spaces(t)?)?;
    let g = hosts::bump_generation(t, host)?;
    let taken = |e: rusqlite::Error| match e.sqlite_error_code() {
        // Two creates of one name: the unique index lets one win.
        Some(rusqlite::ErrorCode::ConstraintViolation) => {
            StoreError::AlreadyExists(format!("volume '{}' exists already", new.name))
        }
        _ => StoreError::Db(e),
    };
    t.execute(
        "INSERT INTO volumes (id, name, host_id, size_bytes, intent_gen, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)",
        params![new.id, new.name, host, i(new.size_bytes), i(g), now],
    )
    .map_err(taken)?;
    insert_operation(t, op, 0)?;
    by_id(t, new.id)
}

/// The next place among an instance's volumes.
pub(super) fn keyed_answer(
    t: &Connection,
    keyed: Option<&VolumeKeyed>,
    row: &VolumeRow,
) -> Result<()> {
    if let Some(k) = keyed {
        let mut rec = k.record.clone();
        rec.response =
            (k.render)(row).map_err(|e| StoreError::Corrupt(format!("encode answer: {e}")))?;
        super::idempotency::record_answer(t, &rec)?;
    }
    Ok(())
}

/// The volumes `instance` is to hold, by id, as it was created with them:
/// each must be free and on `host` (checked again in the create's transaction).
impl VolumeStore for SqliteStore {
    fn create_volume(
        &self,
        new: &NewVolume,
        place: &VolumePlacer<'_>,
        op: &Operation,
        keyed: Option<&VolumeKeyed>,
        now: Millis,
    ) -> Result<VolumeRow> {
        self.tx(|t| {
            let row = create(t, new, place, op, now)?;
            keyed_answer(t, keyed, &row)?;
            Ok(row)
        })
    }
    fn list_volumes(&self) -> Result<Vec<VolumeRow>> {
        self.read(|c| query(c, "1 = 1", &[]))
    }
    fn get_volume(&self, name_or_id: &str) -> Result<VolumeRow> {
        self.read(|c| get(c, name_or_id))
    }
    fn host_volumes(&self, host: HostId) -> Result<Vec<VolumeRow>> {
        // A volume being restored is made by its import (add_transfers).
        self.read(|c| {
            query(
                c,
                &format!(
                    "v.host_id = ?1 AND v.id NOT IN ({})",
                    super::backup_restore::RESTORING
                ),
                &[&host],
            )
        })
    }
    fn change_volume(
        &self,
        id: VolumeId,
        ch: VolumeChange,
        op: Option<&Operation>,
        keyed: Option<&VolumeKeyed>,
        now: Millis,
    ) -> Result<VolumeRow> {
        self.tx(|t| {
            let row = super::volume_changes::change(t, id, ch, op, now)?;
            keyed_answer(t, keyed, &row)?;
            Ok(row)
        })
    }
    fn record_volume_report(
        &self,
        host: HostId,
        files: &[ObservedVolume],
        observed: &[ObservedInstance],
        tell: &VolumeEvents,
        now: Millis,
    ) -> Result<VolumeReport> {
        self.tx(|t| {
            let mut out = super::volume_facts::record_report(t, host, files, observed, now)?;
            for e in tell(&out) {
                out.events.push(super::engine_rows::append(t, &e, now)?);
            }
            Ok(out)
        })
    }
}

#[cfg(test)]
#[path = "volumes_tests.rs"]
mod tests;
