//! Changes of snapshots' intent (store::snapshot), checked in the
//! transaction that writes them: take one of a disk, revert a disk to one,
//! delete one, clone one into a new volume.

use super::codec::i;
use super::log::insert_operation;
use super::snapshots::{by_id, live_names, of_word, reverts};
use super::{hosts, instances, volumes};
use crate::store::snapshot::*;
use crate::store::volume::{NewVolume, VolumePlacer, VolumeRow};
use crate::store::*;
use cm_api::snapshot::SnapshotOf;
use rusqlite::{params, Connection};
use uuid::Uuid;

fn refused(message: String, field: &'static str) -> StoreError {
    StoreError::Refused { message, field }
}

/// The disk's host and its name, refused when it is being deleted.
fn disk(t: &Connection, of: SnapshotOf, disk: Uuid) -> Result<(HostId, String)> {
    match of {
        SnapshotOf::Volume => {
            let v = volumes::get(t, &disk.to_string())?;
            if v.deleted {
                return Err(refused(
                    format!("volume '{}' is being deleted", v.name),
                    "volume",
                ));
            }
            Ok((v.host_id, v.name))
        }
        SnapshotOf::InstanceRoot => {
            let inst = instances::by_id(t, InstanceId(disk))?;
            if inst.desired.deleted {
                return Err(refused(
                    format!("instance '{}' is being deleted", inst.name),
                    "instance",
                ));
            }
            Ok((inst.host_id, inst.name))
        }
    }
}

pub fn create(
    t: &Connection,
    new: &NewSnapshot,
    op: &Operation,
    now: Millis,
) -> Result<SnapshotRow> {
    if super::snapshots::get(t, &new.name).is_ok() {
        return Err(StoreError::AlreadyExists(format!(
            "snapshot '{}' exists already",
            new.name
        )));
    }
    let (host, source) = disk(t, new.of, new.disk_id)?;
    if new.of == SnapshotOf::Volume {
        super::volume_moves::refuse_moving(t, cm_api::ids::VolumeId(new.disk_id), &source)?;
    }
    let g = hosts::bump_generation(t, host)?;
    let taken = |e: rusqlite::Error| match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::ConstraintViolation) => {
            StoreError::AlreadyExists(format!("snapshot '{}' exists already", new.name))
        }
        _ => StoreError::Db(e),
    };
    t.execute(
        "INSERT INTO snapshots (id, name, of_kind, disk_id, source_name, host_id, intent_gen,
             created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)",
        params![
            new.id.to_string(),
            new.name,
            of_word(new.of),
            new.disk_id.to_string(),
            source,
            host,
            i(g),
            now
        ],
    )
    .map_err(taken)?;
    insert_operation(t, op, 0)?;
    by_id(t, new.id)
}

/// The instance using the disk, when it is not stopped.
fn running_user(t: &Connection, s: &SnapshotRow) -> Result<Option<String>> {
    let user = match s.of {
        SnapshotOf::InstanceRoot => Some(InstanceId(s.disk_id)),
        SnapshotOf::Volume => {
            let v = volumes::get(t, &s.disk_id.to_string())?;
            v.user()
                .map(|u| u.0)
                .or_else(|| v.facts.holder.map(|h| h.0))
        }
    };
    let Some(id) = user else { return Ok(None) };
    let inst = match instances::by_id(t, id) {
        Ok(inst) => inst,
        Err(StoreError::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    let observed_stopped = matches!(
        inst.observed.state,
        None | Some(ObservedState::Stopped) | Some(ObservedState::Error)
    );
    if inst.desired.power == Power::Stopped && observed_stopped {
        Ok(None)
    } else {
        Ok(Some(inst.name))
    }
}

fn taken(s: &SnapshotRow, doing: &str) -> Result<()> {
    if s.deleted {
        return Err(StoreError::Conflict(format!(
            "snapshot '{}' is being deleted",
            s.name
        )));
    }
    if s.facts.consistency.is_none() {
        let why = match &s.facts.error {
            Some(e) => format!("it could not be taken: {e}"),
            None => "it is not taken yet: wait for it".to_string(),
        };
        return Err(StoreError::Conflict(format!(
            "snapshot '{}' cannot be {doing}: {why}",
            s.name
        )));
    }
    Ok(())
}

pub fn restore(t: &Connection, id: Uuid, op: &Operation, now: Millis) -> Result<SnapshotRow> {
    let s = by_id(t, id)?;
    taken(&s, "restored")?;
    if let Some(user) = running_user(t, &s)? {
        return Err(StoreError::Conflict(format!(
            "{} '{}' is in use by instance {user}, which is not stopped: stop {user} first",
            match s.of {
                SnapshotOf::Volume => "volume",
                SnapshotOf::InstanceRoot => "instance",
            },
            s.source_name
        )));
    }
    let before = reverts(t, "disk_id = ?1", &[&s.disk_id.to_string()])?.pop();
    let want = before.as_ref().map_or(0, |r| r.gen) + 1;
    let g = hosts::bump_generation(t, s.host_id)?;
    t.execute(
        "INSERT INTO disk_reverts (disk_id, of_kind, host_id, snapshot_id, gen, intent_gen,
             updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (disk_id) DO UPDATE SET host_id = ?3, snapshot_id = ?4, gen = ?5,
             intent_gen = ?6, obs_error = NULL, updated_at = ?7",
        params![
            s.disk_id.to_string(),
            of_word(s.of),
            s.host_id,
            s.id.to_string(),
            i(want),
            i(g),
            now
        ],
    )?;
    insert_operation(t, op, want)?;
    by_id(t, id)
}

/// Names of the clones of a snapshot whose file is not made yet.
fn clones_in_making(t: &Connection, id: Uuid) -> Result<Vec<String>> {
    let mut st = t.prepare_cached(
        "SELECT v.name FROM volume_clones c JOIN volumes v ON v.id = c.volume_id
         WHERE c.snapshot_id = ?1 AND v.deleted = 0 AND v.obs_size_bytes IS NULL ORDER BY v.name",
    )?;
    let names = st
        .query_map([id.to_string()], |r| r.get(0))?
        .collect::<rusqlite::Result<Vec<String>>>()?;
    Ok(names)
}

pub fn delete(t: &Connection, id: Uuid, op: &Operation, now: Millis) -> Result<SnapshotRow> {
    let s = by_id(t, id)?;
    if !s.deleted {
        let making = clones_in_making(t, id)?;
        if !making.is_empty() {
            return Err(StoreError::Conflict(format!(
                "snapshot '{}' is being cloned into {}: wait for the clone",
                s.name,
                making.join(", ")
            )));
        }
        let g = hosts::bump_generation(t, s.host_id)?;
        t.execute(
            "UPDATE snapshots SET deleted = 1, deleted_gen = ?2, intent_gen = ?2, obs_error = NULL,
                 updated_at = ?3 WHERE id = ?1",
            params![id.to_string(), i(g), now],
        )?;
    }
    insert_operation(t, op, 0)?;
    by_id(t, id)
}

pub fn clone(
    t: &Connection,
    id: Uuid,
    new: &NewVolume,
    place: &VolumePlacer<'_>,
    op: &Operation,
    now: Millis,
) -> Result<VolumeRow> {
    let s = by_id(t, id)?;
    taken(&s, "cloned")?;
    if s.facts.size_bytes != Some(new.size_bytes) {
        return Err(StoreError::Conflict(format!(
            "snapshot '{}' changed while it was being cloned: try again",
            s.name
        )));
    }
    let host = s.host_id;
    let only_here = |spaces: &[crate::store::volume::VolumeSpace]| {
        let mine: Vec<_> = spaces.iter().filter(|h| h.id == host).cloned().collect();
        place(&mine)
    };
    let row = volumes::create(t, new, &only_here, op, now)?;
    t.execute(
        "INSERT INTO volume_clones (volume_id, snapshot_id, of_kind, disk_id)
         VALUES (?1, ?2, ?3, ?4)",
        params![
            row.id,
            s.id.to_string(),
            of_word(s.of),
            s.disk_id.to_string()
        ],
    )?;
    super::roots::inherit_origin(t, row.id, s.disk_id)?;
    volumes::by_id(t, row.id)
}

/// Refuse to delete a disk whose snapshots' deletion is not recorded.
pub fn refuse_with_snapshots(t: &Connection, disk: Uuid, what: &str) -> Result<()> {
    let names = live_names(t, disk)?;
    if names.is_empty() {
        return Ok(());
    }
    Err(StoreError::Conflict(format!(
        "{what} has snapshots ({}): delete its snapshots first",
        names.join(", ")
    )))
}
