//! `volumes` (store::volume::VolumeStore): intent from users, facts from
//! the reports of each volume's host (docs/storage.md).

use super::codec::{self, columns, i, json, u, FromRow};
use super::log::insert_operation;
use super::{hosts, instances, SqliteStore};
use crate::store::volume::*;
use crate::store::*;
use cm_api::agent::{AttachmentState, ObservedVolume};
use cm_api::host::HostFacts;
use cm_api::ids::VolumeId;
use rusqlite::{params, Connection, Row};
use std::collections::HashMap;

const COLS: &str = "v.id, v.name, v.host_id, h.name AS host_name, v.size_bytes, v.instance_id,
    di.name AS instance_name, v.attach_pos, v.attach_gen, v.force_detach, v.deleted, v.deleted_gen,
    v.intent_gen, v.obs_size_bytes, v.obs_allocated, v.obs_error, v.obs_instance_id,
    oi.name AS obs_instance_name, v.obs_attach_state, v.obs_attach_error, v.created_at, v.updated_at";

const FROM: &str = "volumes v JOIN hosts h ON h.id = v.host_id
    LEFT JOIN instances di ON di.id = v.instance_id
    LEFT JOIN instances oi ON oi.id = v.obs_instance_id";

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

fn state_word(s: AttachmentState) -> &'static str {
    match s {
        AttachmentState::Attached => "attached",
        AttachmentState::Detaching => "detaching",
    }
}

fn query(c: &Connection, where_: &str, args: &[&dyn rusqlite::ToSql]) -> Result<Vec<VolumeRow>> {
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

fn create(
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
fn next_pos(t: &Connection, instance: InstanceId) -> Result<u64> {
    let n: i64 = t.query_row(
        "SELECT COALESCE(MAX(attach_pos), 0) + 1 FROM volumes WHERE instance_id = ?1",
        [instance],
        |r| r.get(0),
    )?;
    Ok(u(n))
}

fn set_attachment(
    t: &Connection,
    v: &VolumeRow,
    to: Option<InstanceId>,
    force: bool,
    now: Millis,
) -> Result<u64> {
    let pos = match to {
        Some(i) => next_pos(t, i)?,
        None => v.attach_pos,
    };
    t.execute(
        "UPDATE volumes SET instance_id = ?2, attach_pos = ?3, attach_gen = attach_gen + 1,
            force_detach = ?4, updated_at = ?5 WHERE id = ?1",
        params![v.id, to, i(pos), force, now],
    )?;
    Ok(v.attach_gen + 1)
}

fn refused(message: String, field: &'static str) -> StoreError {
    StoreError::Refused { message, field }
}

/// Apply a change in the caller's transaction; the `want` of its operation.
fn apply(t: &Connection, v: &VolumeRow, change: VolumeChange, now: Millis) -> Result<(bool, u64)> {
    if v.deleted && change != VolumeChange::Delete {
        return Err(StoreError::Conflict(format!(
            "volume '{}' is being deleted",
            v.name
        )));
    }
    match change {
        VolumeChange::Resize { size_bytes } => {
            if size_bytes < v.size_bytes {
                return Err(refused(
                    format!(
                        "volume '{}' is {} bytes: a volume is never shrunk",
                        v.name, v.size_bytes
                    ),
                    "size_bytes",
                ));
            }
            if size_bytes == v.size_bytes {
                return Ok((false, size_bytes));
            }
            let extra = (size_bytes - v.size_bytes).div_ceil(cm_api::volume::VOLUME_SIZE_UNIT);
            let space = spaces(t)?.into_iter().find(|s| s.id == v.host_id);
            let room = space.as_ref().map_or(0, VolumeSpace::room_mib);
            if extra > room {
                return Err(Unplaced::NoCapacity {
                    message: format!(
                        "host {} has room for {room} MiB more of volumes, {extra} MiB asked",
                        v.host_name
                    ),
                    field: "size_bytes",
                }
                .into());
            }
            t.execute(
                "UPDATE volumes SET size_bytes = ?2, updated_at = ?3 WHERE id = ?1",
                params![v.id, i(size_bytes), now],
            )?;
            Ok((true, size_bytes))
        }
        VolumeChange::Attach { instance } => {
            let inst = instances::by_id(t, instance)?;
            if inst.desired.deleted {
                return Err(refused(
                    format!("instance '{}' is being deleted", inst.name),
                    "instance",
                ));
            }
            if inst.host_id != v.host_id {
                return Err(refused(
                    format!(
                        "volume '{}' is on host {} and instance '{}' on host {}: a volume is \
                         attached on its own host only",
                        v.name, v.host_name, inst.name, inst.host_name
                    ),
                    "instance",
                ));
            }
            match &v.instance {
                Some((i, _)) if *i == instance => return Ok((false, v.attach_gen)),
                Some((_, other)) => {
                    return Err(refused(
                        format!("volume '{}' is attached to {other}", v.name),
                        "instance",
                    ))
                }
                None => {}
            }
            if let Some((h, holder)) = &v.facts.holder {
                if *h != instance {
                    return Err(refused(
                        format!(
                            "volume '{}' is still detaching from {holder}: wait for it",
                            v.name
                        ),
                        "instance",
                    ));
                }
            }
            Ok((true, set_attachment(t, v, Some(instance), false, now)?))
        }
        VolumeChange::Detach { force } => match (&v.instance, &v.facts.holder) {
            (Some(_), _) => Ok((true, set_attachment(t, v, None, force, now)?)),
            (None, Some(_)) => {
                let force = force || v.force_detach;
                t.execute(
                    "UPDATE volumes SET force_detach = ?2, updated_at = ?3 WHERE id = ?1",
                    params![v.id, force, now],
                )?;
                Ok((force != v.force_detach, v.attach_gen))
            }
            (None, None) => Err(StoreError::Conflict(format!(
                "volume '{}' is not attached",
                v.name
            ))),
        },
        VolumeChange::Delete => {
            if v.deleted {
                return Ok((false, 0));
            }
            let holder = v.instance.as_ref().or(v.facts.holder.as_ref());
            if let Some((_, name)) = holder {
                return Err(StoreError::Conflict(format!(
                    "volume '{}' is attached to {name}: detach it first",
                    v.name
                )));
            }
            let g = hosts::generation(t, v.host_id)? + 1;
            t.execute(
                "UPDATE volumes SET deleted = 1, deleted_gen = ?2, updated_at = ?3 WHERE id = ?1",
                params![v.id, i(g), now],
            )?;
            Ok((true, 0))
        }
        VolumeChange::Revert { expected, to } => {
            if v.attach_gen != expected {
                return Ok((false, v.attach_gen));
            }
            Ok((true, set_attachment(t, v, to, false, now)?))
        }
    }
}

fn change(
    t: &Connection,
    id: VolumeId,
    change: VolumeChange,
    op: Option<&Operation>,
    now: Millis,
) -> Result<VolumeRow> {
    let v = by_id(t, id)?;
    let (effective, want) = apply(t, &v, change, now)?;
    if effective {
        let g = hosts::bump_generation(t, v.host_id)?;
        // What the host reported before it saw this change is old news.
        t.execute(
            "UPDATE volumes SET intent_gen = ?2, obs_error = NULL, obs_attach_error = NULL
             WHERE id = ?1",
            params![id, i(g)],
        )?;
    }
    if let Some(op) = op {
        insert_operation(t, op, want)?;
    }
    by_id(t, id)
}

fn keyed_answer(t: &Connection, keyed: Option<&VolumeKeyed>, row: &VolumeRow) -> Result<()> {
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
pub fn attach_at_create(
    t: &Connection,
    instance: InstanceId,
    host: HostId,
    volumes: &[VolumeId],
    now: Millis,
) -> Result<()> {
    for id in volumes {
        let v = by_id(t, *id)?;
        let busy = v.deleted || v.instance.is_some() || v.facts.holder.is_some();
        if busy || v.host_id != host {
            return Err(refused(
                format!(
                    "volume '{}' is no longer free on host {}",
                    v.name, v.host_name
                ),
                "volumes",
            ));
        }
        set_attachment(t, &v, Some(instance), false, now)?;
    }
    Ok(())
}

/// A deleted instance lets go of its volumes (they are `detaching` until
/// its host removed the VM, then `available`).
pub fn release_instance(t: &Connection, instance: InstanceId, now: Millis) -> Result<()> {
    t.execute(
        "UPDATE volumes SET instance_id = NULL, attach_gen = attach_gen + 1, force_detach = 0,
            updated_at = ?2 WHERE instance_id = ?1",
        params![instance, now],
    )?;
    Ok(())
}

fn record_report(
    t: &Connection,
    host: HostId,
    files: &[ObservedVolume],
    observed: &[ObservedInstance],
    now: Millis,
) -> Result<VolumeReport> {
    let applied = hosts::get(t, &host.to_string())?.applied_generation;
    let files: HashMap<uuid::Uuid, &ObservedVolume> = files.iter().map(|f| (f.id, f)).collect();
    let mut holders = HashMap::new();
    for o in observed {
        for a in &o.volumes {
            holders.entry(a.volume).or_insert((InstanceId(o.id), a));
        }
    }
    let mut out = VolumeReport::default();
    for before in query(t, "v.host_id = ?1", &[&host])? {
        let file = files.get(&before.id.uuid());
        if before.deleted && file.is_none() && applied >= before.deleted_gen.unwrap_or(u64::MAX) {
            t.execute(
                "DELETE FROM operations WHERE target_id = ?1 AND status != 'running'",
                [before.id],
            )?;
            t.execute("DELETE FROM volumes WHERE id = ?1", [before.id])?;
            out.purged.push(before);
            continue;
        }
        let fresh = applied >= before.intent_gen;
        let held = holders.get(&before.id.uuid());
        let facts = VolumeFacts {
            size_bytes: file.map(|f| f.size_bytes),
            allocated_bytes: file.map(|f| f.allocated_bytes),
            error: file.and_then(|f| f.error.clone()).filter(|_| fresh),
            holder: held.map(|(i, _)| (*i, String::new())),
            attach_state: held.map(|(_, a)| a.state),
            attach_error: held.and_then(|(_, a)| a.error.clone()).filter(|_| fresh),
        };
        let same = facts.size_bytes == before.facts.size_bytes
            && facts.allocated_bytes == before.facts.allocated_bytes
            && facts.error == before.facts.error
            && facts.holder.as_ref().map(|h| h.0) == before.facts.holder.as_ref().map(|h| h.0)
            && facts.attach_state == before.facts.attach_state
            && facts.attach_error == before.facts.attach_error;
        if same {
            continue;
        }
        t.execute(
            "UPDATE volumes SET obs_size_bytes = ?2, obs_allocated = ?3, obs_error = ?4,
                obs_instance_id = ?5, obs_attach_state = ?6, obs_attach_error = ?7, updated_at = ?8
             WHERE id = ?1",
            params![
                before.id,
                facts.size_bytes.map(i),
                facts.allocated_bytes.map(i),
                facts.error,
                facts.holder.as_ref().map(|h| h.0),
                facts.attach_state.map(state_word),
                facts.attach_error,
                now
            ],
        )?;
        let after = by_id(t, before.id)?;
        out.changed.push(VolumeChanged { before, after });
    }
    Ok(out)
}

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
        self.read(|c| query(c, "v.host_id = ?1", &[&host]))
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
            let row = change(t, id, ch, op, now)?;
            keyed_answer(t, keyed, &row)?;
            Ok(row)
        })
    }
    fn record_volume_report(
        &self,
        host: HostId,
        files: &[ObservedVolume],
        observed: &[ObservedInstance],
        now: Millis,
    ) -> Result<VolumeReport> {
        self.tx(|t| record_report(t, host, files, observed, now))
    }
}

#[cfg(test)]
#[path = "volumes_tests.rs"]
mod tests;
