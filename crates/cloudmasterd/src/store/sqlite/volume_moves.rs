//! Volume moves (migration 0015, docs/storage.md "Moving a volume"): a
//! move's start, checked, with its transfer and operation; its end, in the
//! transaction of the report that ends it, with its event; the copies left
//! behind (`volume_leftovers`) that hosts remove. A backup's restore ends
//! through here too (backup_restore.rs): it is a move of a new volume.

use super::codec::{i, u, uuid};
use super::hosts;
use super::log::{finish_operation, insert_operation};
use super::transfers::{insert_transfer, transfer, TRANSFER_SLACK, T_COLS};
use crate::store::transfer::*;
use crate::store::*;
use cm_api::agent::{DiskRef, ObservedVolume};
use cm_api::ids::VolumeId;
use cm_api::snapshot::SnapshotOf;
use cm_api::volume::VOLUME_SIZE_UNIT;
use rusqlite::{params, Connection, OptionalExtension};

pub fn moves(c: &Connection, filter: &str, arg: &dyn rusqlite::ToSql) -> Result<Vec<MoveRow>> {
    let sql = format!(
        "SELECT m.volume_id, v.name, v.size_bytes, m.from_host_id, hf.name, m.to_host_id,
                ht.name, m.operation_id, m.started_at, {T_COLS}
         FROM volume_moves m JOIN volumes v ON v.id = m.volume_id
         JOIN hosts hf ON hf.id = m.from_host_id JOIN hosts ht ON ht.id = m.to_host_id
         JOIN transfers t ON t.id = m.transfer_id WHERE {filter} ORDER BY v.name"
    );
    let mut st = c.prepare(&sql)?;
    let mut rows = st.query([arg])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        out.push(MoveRow {
            volume_id: r.get(0)?,
            volume_name: r.get(1)?,
            size_bytes: u(r.get(2)?),
            from: (r.get(3)?, r.get(4)?),
            to: (r.get(5)?, r.get(6)?),
            operation_id: uuid(&r.get::<_, String>(7)?)?,
            started_at: r.get(8)?,
            transfer: transfer(r, 9)?,
        });
    }
    Ok(out)
}

/// Refuse a change of a volume being moved (attach, resize, delete, a
/// snapshot): 409, field `name`.
pub fn refuse_moving(t: &Connection, id: VolumeId, name: &str) -> Result<()> {
    let to: Option<String> = t
        .query_row(
            "SELECT h.name FROM volume_moves m JOIN hosts h ON h.id = m.to_host_id
             WHERE m.volume_id = ?1",
            [id],
            |r| r.get(0),
        )
        .optional()?;
    match to {
        Some(h) => Err(StoreError::Refused {
            message: format!("volume '{name}' is moving to {h}: wait for the move to end"),
            field: "name",
        }),
        None => Ok(()),
    }
}

fn refused(message: String, field: &'static str) -> StoreError {
    StoreError::Refused { message, field }
}

pub fn start_move(
    t: &Connection,
    volume: VolumeId,
    to: HostId,
    transfer: uuid::Uuid,
    op: &Operation,
    now: Millis,
) -> Result<MoveRow> {
    let v = super::volumes::by_id(t, volume)?;
    let name = &v.name;
    if v.deleted {
        return Err(refused(format!("volume '{name}' is being deleted"), "name"));
    }
    refuse_moving(t, volume, name)?;
    if let Some((_, i)) = &v.root_of {
        let m = format!(
            "volume '{name}' is the root disk of instance {i}: an instance's root moves with it \
             (delete the instance, keeping the volume, then move it)"
        );
        return Err(refused(m, "name"));
    }
    if let Some((_, i)) = v.instance.as_ref().or(v.facts.holder.as_ref()) {
        let m = format!("volume '{name}' is attached to {i}: detach it first");
        return Err(refused(m, "name"));
    }
    let what = format!("volume '{name}'");
    super::snapshot_changes::refuse_with_snapshots(t, volume.uuid(), &what)
        .map_err(|e| refused(format!("{e} (snapshots are not moved)"), "name"))?;
    if to == v.host_id {
        let m = format!("volume '{name}' is on host {} already", v.host_name);
        return Err(refused(m, "host"));
    }
    let pending: bool = t.query_row(
        "SELECT EXISTS (SELECT 1 FROM volume_leftovers WHERE volume_id = ?1 AND host_id = ?2)",
        params![volume, to],
        |r| r.get(0),
    )?;
    if pending {
        let m = format!("host {to} still removes an old copy of volume '{name}': try again soon");
        return Err(refused(m, "host"));
    }
    let need = v.size_bytes.div_ceil(VOLUME_SIZE_UNIT);
    let space = super::volumes::spaces(t)?.into_iter().find(|s| s.id == to);
    let Some(space) = space else {
        return Err(refused(format!("no host {to}"), "host"));
    };
    if space.room_mib() < need {
        let m = format!(
            "host {} has room for {} MiB of volumes, {need} MiB needed",
            space.name,
            space.room_mib()
        );
        return Err(refused(m, "host"));
    }
    let disk = DiskRef {
        of: SnapshotOf::Volume,
        disk: volume.uuid(),
        backup: None,
    };
    let max = v.size_bytes.saturating_add(TRANSFER_SLACK);
    insert_transfer(t, transfer, Purpose::VolumeMove, v.host_id, disk, max, now)?;
    t.execute(
        "INSERT INTO volume_moves (volume_id, from_host_id, to_host_id, transfer_id,
             operation_id, started_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            volume,
            v.host_id,
            to,
            transfer.to_string(),
            op.id.to_string(),
            now
        ],
    )?;
    insert_operation(t, op, 0)?;
    hosts::bump_generation(t, v.host_id)?;
    moves(t, "m.volume_id = ?1", &volume)?
        .pop()
        .ok_or_else(|| StoreError::Corrupt("the move just written is gone".into()))
}

/// End a move in the caller's transaction: the volume switches host on
/// success; the copy that is not the volume's becomes a leftover.
pub fn end_move(
    t: &Connection,
    m: &MoveRow,
    file: Option<&ObservedVolume>,
    error: Option<&str>,
    now: Millis,
) -> Result<MoveEnded> {
    let restore = m.transfer.purpose == Purpose::BackupRestore;
    let outcome = match (file, error) {
        (Some(f), None) => {
            let g = hosts::bump_generation(t, m.to.0)?;
            t.execute(
                "UPDATE volumes SET host_id = ?2, obs_size_bytes = ?3, obs_allocated = ?4,
                     obs_error = NULL, intent_gen = ?5, updated_at = ?6 WHERE id = ?1",
                params![
                    m.volume_id,
                    m.to.0,
                    i(f.size_bytes),
                    i(f.allocated_bytes),
                    i(g),
                    now
                ],
            )?;
            // A restore's source is a chain, not a copy of the volume.
            if !restore {
                add_leftover(t, m.from.0, m.volume_id)?;
            }
            Ok(f.allocated_bytes)
        }
        (_, e) => {
            let e = e.unwrap_or("the new host lost the copy");
            add_leftover(t, m.to.0, m.volume_id)?;
            Err(e.to_string())
        }
    };
    t.execute(
        "DELETE FROM volume_moves WHERE volume_id = ?1",
        [m.volume_id],
    )?;
    t.execute(
        "DELETE FROM transfers WHERE id = ?1",
        [m.transfer.id.to_string()],
    )?;
    hosts::bump_generation(t, m.from.0)?;
    if restore {
        return super::backup_restore::end(t, m, outcome, now);
    }
    let secs = (now - m.started_at) as f64 / 1000.0;
    match &outcome {
        Ok(written) => {
            let p = format!(
                "moved from {} to {}: {} ({} written) in {secs:.1} s",
                m.from.1,
                m.to.1,
                cm_api::volume::human_size(m.size_bytes),
                cm_api::volume::approx_size(*written)
            );
            finish_operation(
                t,
                m.operation_id,
                cm_api::operation::OperationStatus::Succeeded,
                &p,
                None,
                now,
            )?;
        }
        Err(e) => {
            let body = cm_api::ErrorBody {
                code: cm_api::ErrorCode::Conflict,
                message: format!("{e}; the volume stays on {}", m.from.1),
                field: None,
            };
            finish_operation(
                t,
                m.operation_id,
                cm_api::operation::OperationStatus::Failed,
                "failed",
                Some(&body),
                now,
            )?;
        }
    }
    // Its event commits with it: a crash cannot keep the move and lose
    // the word of it.
    let (kind, msg) = match &outcome {
        Ok(written) => (
            cm_api::words::EventKind::VolumeMoved,
            format!(
                "from {} to {}: {} ({} written) in {secs:.1} s",
                m.from.1,
                m.to.1,
                cm_api::volume::human_size(m.size_bytes),
                cm_api::volume::approx_size(*written)
            ),
        ),
        Err(e) => (
            cm_api::words::EventKind::VolumeError,
            format!("move to {} failed: {e}", m.to.1),
        ),
    };
    let event = super::log::append_event(t, kind, &m.volume_name, &msg, now)?;
    Ok(MoveEnded {
        row: m.clone(),
        outcome,
        ended_at: now,
        event,
    })
}

fn add_leftover(t: &Connection, host: HostId, volume: VolumeId) -> Result<()> {
    t.execute(
        "INSERT OR IGNORE INTO volume_leftovers (host_id, volume_id) VALUES (?1, ?2)",
        params![host, volume],
    )?;
    Ok(())
}
