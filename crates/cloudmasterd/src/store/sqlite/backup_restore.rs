//! A restore (docs/storage.md, "Backups (point 6)"): a new volume placed
//! as a create is, made from a transfer the chain's host sends (the backup
//! flattened, `DiskRef.backup`) and imported on the volume's host: the
//! move's machinery (transfers.rs, purpose `backup_restore`), the chain's
//! host as the move's source. The new volume is no desired volume of its
//! host until its import (host_volumes leaves it out).

use super::backups::by_id;
use super::log::finish_operation;
use super::transfers::{insert_transfer, TRANSFER_SLACK};
use super::{hosts, volumes};
use crate::store::transfer::{MoveEnded, MoveRow, Purpose};
use crate::store::volume::{NewVolume, VolumePlacer, VolumeRow};
use crate::store::*;
use cm_api::agent::DiskRef;
use rusqlite::{params, Connection};
use uuid::Uuid;

/// Volumes being restored (left out of their host's desired volumes).
pub const RESTORING: &str = "SELECT m.volume_id FROM volume_moves m
    JOIN transfers t ON t.id = m.transfer_id WHERE t.purpose = 'backup_restore'";

#[allow(clippy::too_many_arguments)]
pub fn restore(
    t: &Connection,
    backup: Uuid,
    new: &NewVolume,
    place: &VolumePlacer<'_>,
    transfer: Uuid,
    op: &Operation,
    now: Millis,
) -> Result<VolumeRow> {
    let b = by_id(t, backup)?;
    if b.deleted || b.facts.kind.is_none() {
        return Err(StoreError::Conflict(format!(
            "backup '{}' is {}: only a made backup is restored",
            b.name,
            if b.deleted {
                "being deleted"
            } else if b.facts.error.is_some() {
                "failed"
            } else {
                "still being made"
            }
        )));
    }
    let row = volumes::create(t, new, place, op, now)?;
    t.execute(
        "UPDATE volumes SET image_id = (SELECT origin_image_id FROM backups WHERE id = ?2)
         WHERE id = ?1",
        params![row.id, b.id.to_string()],
    )?;
    let disk = DiskRef {
        of: b.of,
        disk: b.disk_id,
        backup: Some(b.id),
    };
    let max = new.size_bytes.saturating_add(TRANSFER_SLACK);
    insert_transfer(
        t,
        transfer,
        Purpose::BackupRestore,
        b.host_id,
        disk,
        max,
        now,
    )?;
    t.execute(
        "INSERT INTO volume_moves (volume_id, from_host_id, to_host_id, transfer_id,
             operation_id, started_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            row.id,
            b.host_id,
            row.host_id,
            transfer.to_string(),
            op.id.to_string(),
            now
        ],
    )?;
    hosts::bump_generation(t, b.host_id)?;
    volumes::by_id(t, row.id)
}

/// The name of the backup a restore's transfer sends.
fn backup_name(t: &Connection, m: &MoveRow) -> String {
    m.transfer
        .disk
        .backup
        .and_then(|id| by_id(t, id).ok())
        .map_or_else(|| "a deleted backup".to_string(), |b| b.name)
}

/// How a restore ended, in words, and its event (for end_move): on
/// success the volume has its file; on failure its record is removed
/// (it never had a file; a partial copy is a leftover of its host).
fn ended(
    t: &Connection,
    m: &MoveRow,
    outcome: &std::result::Result<u64, String>,
    now: Millis,
) -> Result<(String, cm_api::words::EventKind, String, String)> {
    let name = backup_name(t, m);
    let secs = (now - m.started_at) as f64 / 1000.0;
    Ok(match outcome {
        Ok(written) => {
            let words = format!(
                "restored from backup {name} on {} as volume {} on {}: {} ({} written) in {secs:.1} s",
                m.from.1,
                m.volume_name,
                m.to.1,
                cm_api::volume::human_size(m.size_bytes),
                cm_api::volume::approx_size(*written)
            );
            (
                words.clone(),
                cm_api::words::EventKind::BackupRestored,
                name,
                words,
            )
        }
        Err(e) => {
            t.execute("DELETE FROM volumes WHERE id = ?1", [m.volume_id])?;
            let words = format!("restore as volume {} failed: {e}", m.volume_name);
            (
                e.clone(),
                cm_api::words::EventKind::BackupError,
                name,
                words,
            )
        }
    })
}

/// A restore's end in the move's transaction (transfers.rs end_move):
/// its operation and its event commit with it.
pub fn end(
    t: &Connection,
    m: &MoveRow,
    outcome: std::result::Result<u64, String>,
    now: Millis,
) -> Result<MoveEnded> {
    let (words, kind, target, msg) = ended(t, m, &outcome, now)?;
    let (status, progress, body) = match &outcome {
        Ok(_) => (cm_api::operation::OperationStatus::Succeeded, words, None),
        Err(_) => (
            cm_api::operation::OperationStatus::Failed,
            "failed".to_string(),
            Some(cm_api::ErrorBody {
                code: cm_api::ErrorCode::Conflict,
                message: words,
                field: None,
            }),
        ),
    };
    finish_operation(t, m.operation_id, status, &progress, body.as_ref(), now)?;
    let event = super::log::append_event(t, kind, &target, &msg, now)?;
    Ok(MoveEnded {
        row: m.clone(),
        outcome,
        ended_at: now,
        event,
    })
}
