//! Transfers and what a host's report says of them (migration 0015,
//! docs/storage.md "Transfers"), each change one transaction with its
//! operation; the moves and image builds they serve are volume_moves.rs and
//! image_builds.rs.

use super::codec::{i, u, uuid};
use super::hosts;
use super::image_builds::{builds, finish_build, start_build};
use super::log::set_operation_progress;
use super::snapshots::{of_from, of_word};
use super::volume_moves::{end_move, moves, start_move};
use super::SqliteStore;
use crate::store::transfer::*;
use crate::store::*;
use cm_api::agent::{DesiredExport, DiskRef, ObservedExport, ObservedVolume};
use cm_api::ids::VolumeId;
use cm_api::image::Image;
use rusqlite::{params, Connection, OptionalExtension, Row};

/// A transfer may exceed its disk's virtual size by this much (qcow2
/// metadata of a fully written disk).
pub const TRANSFER_SLACK: u64 = 1 << 30;

pub const T_COLS: &str = "t.id, t.purpose, t.host_id, t.disk_of, t.disk_id, t.max_bytes, \
                      t.size_bytes, t.sha256, t.error, t.created_at, t.backup_id";

pub fn transfer(r: &Row<'_>, at: usize) -> Result<TransferRow> {
    let purpose = match r.get::<_, String>(at + 1)?.as_str() {
        "volume_move" => Purpose::VolumeMove,
        "image_create" => Purpose::ImageCreate,
        "backup_restore" => Purpose::BackupRestore,
        p => return Err(StoreError::Corrupt(format!("transfer purpose {p}"))),
    };
    let size: Option<i64> = r.get(at + 6)?;
    let sha: Option<String> = r.get(at + 7)?;
    let backup: Option<String> = r.get(at + 10)?;
    Ok(TransferRow {
        id: uuid(&r.get::<_, String>(at)?)?,
        purpose,
        host_id: r.get(at + 2)?,
        disk: DiskRef {
            of: of_from(&r.get::<_, String>(at + 3)?)?,
            disk: uuid(&r.get::<_, String>(at + 4)?)?,
            backup: backup.as_deref().map(uuid).transpose()?,
        },
        max_bytes: u(r.get(at + 5)?),
        received: size.zip(sha).map(|(s, h)| (u(s), h)),
        error: r.get(at + 8)?,
        created_at: r.get(at + 9)?,
    })
}

fn get_transfer(c: &Connection, id: uuid::Uuid) -> Result<TransferRow> {
    let sql = format!("SELECT {T_COLS} FROM transfers t WHERE t.id = ?1");
    let mut st = c.prepare(&sql)?;
    let mut rows = st.query([id.to_string()])?;
    match rows.next()? {
        Some(r) => transfer(r, 0),
        None => Err(StoreError::NotFound {
            what: "transfer",
            name: id.to_string(),
        }),
    }
}

pub fn insert_transfer(
    t: &Connection,
    id: uuid::Uuid,
    purpose: Purpose,
    host: HostId,
    disk: DiskRef,
    max_bytes: u64,
    now: Millis,
) -> Result<()> {
    t.execute(
        "INSERT INTO transfers (id, purpose, host_id, disk_of, disk_id, max_bytes, created_at,
             backup_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            id.to_string(),
            purpose.as_str(),
            host,
            of_word(disk.of),
            disk.disk.to_string(),
            i(max_bytes),
            now,
            disk.backup.map(|b| b.to_string())
        ],
    )?;
    Ok(())
}

/// Whether an image build of this instance runs (its start is refused).
pub fn building_image_of(t: &Connection, instance: InstanceId) -> Result<Option<String>> {
    Ok(t.query_row(
        "SELECT name FROM image_builds WHERE instance_id = ?1",
        [instance],
        |r| r.get(0),
    )
    .optional()?)
}

fn record_report(
    t: &Connection,
    host: HostId,
    exports: &[ObservedExport],
    files: &[ObservedVolume],
    now: Millis,
) -> Result<TransferReport> {
    let mut out = TransferReport::default();
    for e in exports {
        let Ok(tr) = get_transfer(t, e.id) else {
            continue;
        };
        if tr.host_id != host || tr.received.is_some() || tr.error.is_some() {
            continue;
        }
        let name = hosts::get(t, &host.to_string())?.name;
        let why = format!("host {name}: {}", e.error);
        t.execute(
            "UPDATE transfers SET error = ?2 WHERE id = ?1",
            params![e.id.to_string(), why],
        )?;
        for m in moves(t, "m.transfer_id = ?1", &e.id.to_string())? {
            let why = format!("host {}: {}", m.from.1, e.error);
            out.moves.push(end_move(t, &m, None, Some(&why), now)?);
        }
        for b in builds(t, "b.transfer_id = ?1", &e.id.to_string())? {
            out.failed_builds.push((b, why.clone()));
        }
    }
    for m in moves(t, "m.to_host_id = ?1 AND t.size_bytes IS NOT NULL", &host)? {
        let Some(f) = files.iter().find(|f| f.id == m.volume_id.uuid()) else {
            continue;
        };
        let ended = match &f.error {
            Some(e) if f.size_bytes == 0 => {
                let why = format!("host {}: {e}", m.to.1);
                end_move(t, &m, None, Some(&why), now)?
            }
            _ => end_move(t, &m, Some(f), None, now)?,
        };
        out.moves.push(ended);
    }
    let left: Vec<VolumeId> = {
        let mut st = t.prepare("SELECT volume_id FROM volume_leftovers WHERE host_id = ?1")?;
        let ids = st.query_map([host], |r| r.get(0))?;
        ids.collect::<rusqlite::Result<_>>()?
    };
    for v in left {
        if !files.iter().any(|f| f.id == v.uuid()) {
            t.execute(
                "DELETE FROM volume_leftovers WHERE host_id = ?1 AND volume_id = ?2",
                params![host, v],
            )?;
        }
    }
    Ok(out)
}

fn host_transfers(c: &Connection, host: HostId) -> Result<HostTransfers> {
    let sql = format!(
        "SELECT {T_COLS} FROM transfers t WHERE t.host_id = ?1 AND t.size_bytes IS NULL
         AND t.error IS NULL ORDER BY t.created_at"
    );
    let mut st = c.prepare(&sql)?;
    let mut rows = st.query([host])?;
    let mut exports = Vec::new();
    while let Some(r) = rows.next()? {
        let tr = transfer(r, 0)?;
        exports.push(DesiredExport {
            id: tr.id,
            disk: tr.disk,
        });
    }
    let mut st = c.prepare("SELECT volume_id FROM volume_leftovers WHERE host_id = ?1")?;
    let leftovers = st
        .query_map([host], |r| r.get::<_, VolumeId>(0))?
        .map(|v| v.map(VolumeId::uuid))
        .collect::<rusqlite::Result<_>>()?;
    Ok(HostTransfers {
        exports,
        imports: moves(c, "m.to_host_id = ?1 AND t.size_bytes IS NOT NULL", &host)?,
        leftovers,
    })
}

impl TransferStore for SqliteStore {
    fn start_move(
        &self,
        volume: VolumeId,
        to: HostId,
        transfer: uuid::Uuid,
        op: &Operation,
        now: Millis,
    ) -> Result<MoveRow> {
        self.tx(|t| start_move(t, volume, to, transfer, op, now))
    }
    fn list_moves(&self) -> Result<Vec<MoveRow>> {
        self.read(|c| moves(c, "1 = ?1", &1))
    }
    fn fail_move(&self, volume: VolumeId, why: &str, now: Millis) -> Result<Option<MoveEnded>> {
        self.tx(|t| match moves(t, "m.volume_id = ?1", &volume)?.pop() {
            Some(m) => Ok(Some(end_move(t, &m, None, Some(why), now)?)),
            None => Ok(None),
        })
    }
    fn get_transfer(&self, id: uuid::Uuid) -> Result<TransferRow> {
        self.read(|c| get_transfer(c, id))
    }
    fn list_transfers(&self) -> Result<Vec<TransferRow>> {
        self.read(|c| {
            let sql = format!("SELECT {T_COLS} FROM transfers t");
            let mut st = c.prepare(&sql)?;
            let mut rows = st.query([])?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                out.push(transfer(r, 0)?);
            }
            Ok(out)
        })
    }
    fn transfer_received(
        &self,
        id: uuid::Uuid,
        size: u64,
        sha256: &str,
        now: Millis,
    ) -> Result<TransferRow> {
        self.tx(|t| {
            let tr = get_transfer(t, id)?;
            if tr.received.is_some() {
                return Ok(tr);
            }
            t.execute(
                "UPDATE transfers SET size_bytes = ?2, sha256 = ?3, received_at = ?4
                 WHERE id = ?1",
                params![id.to_string(), i(size), sha256, now],
            )?;
            for m in moves(t, "m.transfer_id = ?1", &id.to_string())? {
                hosts::bump_generation(t, m.to.0)?;
                let p = format!(
                    "received from {}; waiting for {} to fetch it",
                    m.from.1, m.to.1
                );
                set_operation_progress(t, m.operation_id, &p, now)?;
            }
            for b in builds(t, "b.transfer_id = ?1", &id.to_string())? {
                set_operation_progress(t, b.operation_id, "received; checking it", now)?;
            }
            get_transfer(t, id)
        })
    }
    fn host_transfers(&self, host: HostId) -> Result<HostTransfers> {
        self.read(|c| host_transfers(c, host))
    }
    fn record_transfer_report(
        &self,
        host: HostId,
        exports: &[ObservedExport],
        files: &[ObservedVolume],
        now: Millis,
    ) -> Result<TransferReport> {
        self.tx(|t| record_report(t, host, exports, files, now))
    }
    fn start_image_build(
        &self,
        image_id: uuid::Uuid,
        name: &str,
        instance: InstanceId,
        transfer: uuid::Uuid,
        op: &Operation,
        now: Millis,
    ) -> Result<BuildRow> {
        self.tx(|t| start_build(t, image_id, name, instance, transfer, op, now))
    }
    fn list_builds(&self) -> Result<Vec<BuildRow>> {
        self.read(|c| builds(c, "1 = ?1", &1))
    }
    fn finish_image_build(
        &self,
        image_id: uuid::Uuid,
        image: std::result::Result<&Image, &str>,
        now: Millis,
    ) -> Result<Option<cm_api::event::Event>> {
        self.tx(|t| finish_build(t, image_id, image, now))
    }
}
