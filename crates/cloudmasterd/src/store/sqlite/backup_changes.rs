//! Changes of backups (store::backup), checked in the transaction that
//! writes them: make one of a disk (with its schedule), delete one, and the
//! facts of a host's report.

use super::backups::{by_id, get, kind_word, query, schedule};
use super::codec::i;
use super::log::insert_operation;
use super::snapshots::{consistency_word, of_word};
use super::{backup_targets, hosts, instances, volumes};
use crate::store::backup::*;
use crate::store::*;
use cm_api::agent::ObservedBackup;
use cm_api::snapshot::SnapshotOf;
use rusqlite::{params, Connection};
use uuid::Uuid;

/// The disk's host and its name, refused when it is being deleted.
pub fn disk(t: &Connection, of: SnapshotOf, disk: Uuid) -> Result<(HostId, String)> {
    match of {
        SnapshotOf::Volume => {
            let v = volumes::get(t, &disk.to_string())?;
            if v.deleted {
                return Err(StoreError::Conflict(format!(
                    "volume '{}' is being deleted",
                    v.name
                )));
            }
            Ok((v.host_id, v.name))
        }
        SnapshotOf::InstanceRoot => {
            let inst = instances::by_id(t, InstanceId(disk))?;
            if inst.desired.deleted {
                return Err(StoreError::Conflict(format!(
                    "instance '{}' is being deleted",
                    inst.name
                )));
            }
            Ok((inst.host_id, inst.name))
        }
    }
}

/// The backup of the disk's chain on `host` that is still being made.
fn in_making(t: &Connection, disk: Uuid, host: HostId) -> Result<Option<BackupRow>> {
    Ok(query(
        t,
        "b.disk_id = ?1 AND b.host_id = ?2 AND b.deleted = 0 AND b.obs_kind IS NULL
             AND b.obs_error IS NULL",
        &[&disk.to_string(), &host],
    )?
    .pop())
}

fn name_taken(name: &str) -> StoreError {
    StoreError::AlreadyExists(format!("backup '{name}' exists already"))
}

/// Insert a backup of a disk (checked, its target resolved: one chain,
/// one place) and its operation.
pub fn insert(
    t: &Connection,
    new: &NewBackup,
    schedule: Option<&ScheduleRow>,
    op: &Operation,
    now: Millis,
) -> Result<BackupRow> {
    if get(t, &new.name).is_ok() {
        return Err(name_taken(&new.name));
    }
    let (host, source) = disk(t, new.of, new.disk_id)?;
    let what = backup_targets::disk_words(new.of, &source);
    let target = backup_targets::resolve(t, new.disk_id, host, &what, new.target.as_deref())?;
    backup_targets::check_schedules(t, new.disk_id, &what, &target)?;
    if let Some(b) = in_making(t, new.disk_id, host)? {
        return Err(StoreError::Conflict(format!(
            "backup '{}' of {source} is still being made: wait for it",
            b.name
        )));
    }
    let g = hosts::bump_generation(t, host)?;
    t.execute(
        "INSERT INTO backups (id, name, of_kind, disk_id, source_name, host_id, target,
             schedule_id, schedule_name, intent_gen, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?11)",
        params![
            new.id.to_string(),
            new.name,
            of_word(new.of),
            new.disk_id.to_string(),
            source,
            host,
            target,
            schedule.map(|s| s.id.to_string()),
            schedule.map(|s| s.name.clone()),
            i(g),
            now
        ],
    )
    .map_err(|e| match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::ConstraintViolation) => name_taken(&new.name),
        _ => StoreError::Db(e),
    })?;
    // The origin image of the disk: a restored volume keeps it.
    t.execute(
        "UPDATE backups SET origin_image_id = COALESCE(
            (SELECT image_id FROM volumes WHERE id = ?2),
            (SELECT i.image_id FROM instances i JOIN images m ON m.id = i.image_id
             WHERE i.id = ?2 AND m.kind = 'disk'))
         WHERE id = ?1",
        params![new.id.to_string(), new.disk_id.to_string()],
    )?;
    insert_operation(t, op, 0)?;
    by_id(t, new.id)
}

pub fn create(
    t: &Connection,
    new: &NewBackup,
    sched: Option<&NewSchedule>,
    op: &Operation,
    now: Millis,
) -> Result<(BackupRow, Option<ScheduleRow>)> {
    let mut new = new.clone();
    let made = match sched {
        None => None,
        Some(s) => {
            if schedule(t, &s.name).is_ok() {
                return Err(StoreError::AlreadyExists(format!(
                    "backup schedule '{}' exists already",
                    s.name
                )));
            }
            let (host, source) = disk(t, new.of, new.disk_id)?;
            // The schedule keeps the target its first backup resolves to.
            let what = backup_targets::disk_words(new.of, &source);
            let target =
                backup_targets::resolve(t, new.disk_id, host, &what, new.target.as_deref())?;
            new.target = Some(target.clone());
            let every_ms = i64::try_from(s.every_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
            t.execute(
                "INSERT INTO backup_schedules (id, name, of_kind, disk_id, source_name, target,
                     every_secs, keep, next_at, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![
                    s.id.to_string(),
                    s.name,
                    of_word(new.of),
                    new.disk_id.to_string(),
                    source,
                    target,
                    i(s.every_secs),
                    s.keep,
                    now.saturating_add(every_ms),
                    now
                ],
            )?;
            Some(schedule(t, &s.id.to_string())?)
        }
    };
    let row = insert(t, &new, made.as_ref(), op, now)?;
    Ok((row, made))
}

/// Mark a backup deleting (its host removes the file).
pub fn mark_deleted(t: &Connection, b: &BackupRow, now: Millis) -> Result<()> {
    let g = hosts::bump_generation(t, b.host_id)?;
    t.execute(
        "UPDATE backups SET deleted = 1, deleted_gen = ?2, intent_gen = ?2, updated_at = ?3
         WHERE id = ?1",
        params![b.id.to_string(), i(g), now],
    )?;
    Ok(())
}

pub fn delete(t: &Connection, id: Uuid, op: &Operation, now: Millis) -> Result<BackupRow> {
    let b = by_id(t, id)?;
    if !b.deleted {
        if b.facts.kind.is_none() && b.facts.error.is_none() {
            return Err(StoreError::Conflict(format!(
                "backup '{}' is being made: wait for it, then delete it",
                b.name
            )));
        }
        mark_deleted(t, &b, now)?;
    }
    insert_operation(t, op, 0)?;
    by_id(t, id)
}

fn facts_of(o: &ObservedBackup, fresh: bool) -> BackupFacts {
    match (&o.error, o.kind) {
        (Some(e), _) => BackupFacts {
            error: Some(e.clone()).filter(|_| fresh),
            ..BackupFacts::default()
        },
        (None, None) => BackupFacts::default(),
        (None, Some(k)) => BackupFacts {
            kind: Some(k),
            full_reason: o.full_reason.clone(),
            consistency: o.consistency,
            size_bytes: Some(o.size_bytes),
            file_bytes: Some(o.file_bytes),
            took_ms: Some(o.took_ms),
            error: None,
            mirrored: o.mirrored,
            mirror_error: o.mirror_error.clone(),
        },
    }
}

pub fn record_report(
    t: &Connection,
    host: HostId,
    seen: &[ObservedBackup],
    now: Millis,
) -> Result<BackupReport> {
    let applied = hosts::get(t, &host.to_string())?.applied_generation;
    let mut out = BackupReport::default();
    for before in query(t, "b.host_id = ?1", &[&host])? {
        let o = seen.iter().find(|o| o.id == before.id);
        if before.deleted {
            if o.is_none() && applied >= before.deleted_gen.unwrap_or(u64::MAX) {
                let id = before.id.to_string();
                t.execute(
                    "DELETE FROM operations WHERE target_id = ?1 AND status != 'running'",
                    [&id],
                )?;
                t.execute("DELETE FROM backups WHERE id = ?1", [&id])?;
                out.purged.push(before);
            }
            continue;
        }
        // A backup the report does not hold (yet): nothing new of it.
        let Some(o) = o else { continue };
        let facts = facts_of(o, applied >= before.intent_gen);
        if facts == before.facts || (facts == BackupFacts::default() && before.facts.kind.is_some())
        {
            continue;
        }
        let f = &facts;
        t.execute(
            "UPDATE backups SET obs_kind = ?2, obs_full_reason = ?3, obs_consistency = ?4,
                 obs_size_bytes = ?5, obs_file_bytes = ?6, obs_took_ms = ?7, obs_error = ?8,
                 obs_mirrored = ?9, obs_mirror_error = ?10, updated_at = ?11 WHERE id = ?1",
            params![
                before.id.to_string(),
                f.kind.map(kind_word),
                f.full_reason,
                f.consistency.map(consistency_word),
                f.size_bytes.map(i),
                f.file_bytes.map(i),
                f.took_ms.map(i),
                f.error,
                f.mirrored,
                f.mirror_error,
                now
            ],
        )?;
        let after = by_id(t, before.id)?;
        out.changed.push(BackupChanged { before, after });
    }
    Ok(out)
}
