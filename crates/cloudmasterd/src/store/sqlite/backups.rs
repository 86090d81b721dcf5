//! `backups`, `backup_schedules` (store::backup::BackupStore): intent from
//! users and schedules, facts from the reports of each chain's host
//! (docs/storage.md, "Backups (point 6)").

use super::codec::{self, columns, u, uuid, FromRow};
use super::snapshots::{consistency_word, of_from};
use super::SqliteStore;
use crate::store::backup::*;
use crate::store::*;
use cm_api::agent::{DesiredChain, DiskRef, ObservedBackup};
use cm_api::backup::BackupKind;
use cm_api::snapshot::Consistency;
use rusqlite::{Connection, Row};
use uuid::Uuid;

const COLS: &str = "b.id, b.name, b.of_kind, b.disk_id, b.source_name, b.host_id,
    h.name AS host_name, b.target, b.schedule_id, b.schedule_name, b.deleted, b.deleted_gen,
    b.intent_gen, b.obs_kind, b.obs_full_reason, b.obs_consistency, b.obs_size_bytes,
    b.obs_file_bytes, b.obs_took_ms, b.obs_error, b.obs_mirrored, b.obs_mirror_error,
    b.created_at, b.updated_at";

const FROM: &str = "backups b JOIN hosts h ON h.id = b.host_id";

columns!(Cols {
    id,
    name,
    of_kind,
    disk_id,
    source_name,
    host_id,
    host_name,
    target,
    schedule_id,
    schedule_name,
    deleted,
    deleted_gen,
    intent_gen,
    obs_kind,
    obs_full_reason,
    obs_consistency,
    obs_size_bytes,
    obs_file_bytes,
    obs_took_ms,
    obs_error,
    obs_mirrored,
    obs_mirror_error,
    created_at,
    updated_at,
});

pub fn kind_word(k: BackupKind) -> &'static str {
    match k {
        BackupKind::Full => "full",
        BackupKind::Incremental => "incremental",
    }
}

fn kind_from(s: &str) -> Result<BackupKind> {
    match s {
        "full" => Ok(BackupKind::Full),
        "incremental" => Ok(BackupKind::Incremental),
        other => Err(StoreError::Corrupt(format!("backup kind '{other}'"))),
    }
}

fn consistency_from(s: &str) -> Result<Consistency> {
    [
        Consistency::Offline,
        Consistency::Filesystem,
        Consistency::Crash,
    ]
    .into_iter()
    .find(|c| consistency_word(*c) == s)
    .ok_or_else(|| StoreError::Corrupt(format!("backup consistency '{s}'")))
}

impl FromRow for BackupRow {
    type Cols = Cols;
    fn cols(stmt: &rusqlite::Statement<'_>) -> rusqlite::Result<Cols> {
        Cols::of(stmt)
    }
    fn from_row(r: &Row<'_>, c: &Cols) -> Result<BackupRow> {
        let opt = |i: usize| -> Result<Option<u64>> { Ok(r.get::<_, Option<i64>>(i)?.map(u)) };
        let kind: Option<String> = r.get(c.obs_kind)?;
        let consistency: Option<String> = r.get(c.obs_consistency)?;
        let schedule: Option<String> = r.get(c.schedule_id)?;
        Ok(BackupRow {
            id: uuid(codec::text(r, c.id)?)?,
            name: r.get(c.name)?,
            of: of_from(codec::text(r, c.of_kind)?)?,
            disk_id: uuid(codec::text(r, c.disk_id)?)?,
            source_name: r.get(c.source_name)?,
            host_id: r.get(c.host_id)?,
            host_name: r.get(c.host_name)?,
            target: r.get(c.target)?,
            schedule_id: schedule.as_deref().map(uuid).transpose()?,
            schedule_name: r.get(c.schedule_name)?,
            deleted: r.get(c.deleted)?,
            deleted_gen: opt(c.deleted_gen)?,
            intent_gen: u(r.get(c.intent_gen)?),
            facts: BackupFacts {
                kind: kind.as_deref().map(kind_from).transpose()?,
                full_reason: r.get(c.obs_full_reason)?,
                consistency: consistency.as_deref().map(consistency_from).transpose()?,
                size_bytes: opt(c.obs_size_bytes)?,
                file_bytes: opt(c.obs_file_bytes)?,
                took_ms: opt(c.obs_took_ms)?,
                error: r.get(c.obs_error)?,
                mirrored: r.get(c.obs_mirrored)?,
                mirror_error: r.get(c.obs_mirror_error)?,
            },
            created_at: r.get(c.created_at)?,
            updated_at: r.get(c.updated_at)?,
        })
    }
}

/// Backups matching `where_`, oldest first.
pub fn query(
    c: &Connection,
    where_: &str,
    args: &[&dyn rusqlite::ToSql],
) -> Result<Vec<BackupRow>> {
    codec::all(
        c,
        &format!("SELECT {COLS} FROM {FROM} WHERE {where_} ORDER BY b.created_at, b.rowid"),
        args,
    )
}

pub fn get(c: &Connection, name_or_id: &str) -> Result<BackupRow> {
    codec::first(
        c,
        &format!("SELECT {COLS} FROM {FROM} WHERE b.name = ?1 OR b.id = ?1"),
        [name_or_id],
    )?
    .ok_or_else(|| StoreError::NotFound {
        what: "backup",
        name: name_or_id.to_string(),
    })
}

pub fn by_id(c: &Connection, id: Uuid) -> Result<BackupRow> {
    get(c, &id.to_string())
}

pub fn schedules(
    c: &Connection,
    where_: &str,
    args: &[&dyn rusqlite::ToSql],
) -> Result<Vec<ScheduleRow>> {
    let mut st = c.prepare(&format!(
        "SELECT id, name, of_kind, disk_id, source_name, target, every_secs, keep, next_at,
             created_at FROM backup_schedules WHERE {where_} ORDER BY name"
    ))?;
    let mut rows = st.query(args)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        out.push(ScheduleRow {
            id: uuid(codec::text(r, 0)?)?,
            name: r.get(1)?,
            of: of_from(codec::text(r, 2)?)?,
            disk_id: uuid(codec::text(r, 3)?)?,
            source_name: r.get(4)?,
            target: r.get(5)?,
            every_secs: u(r.get(6)?),
            keep: u32::try_from(r.get::<_, i64>(7)?).unwrap_or(u32::MAX),
            next_at: r.get(8)?,
            created_at: r.get(9)?,
        });
    }
    Ok(out)
}

pub fn schedule(c: &Connection, name_or_id: &str) -> Result<ScheduleRow> {
    schedules(c, "name = ?1 OR id = ?1", &[&name_or_id])?
        .pop()
        .ok_or_else(|| StoreError::NotFound {
            what: "backup schedule",
            name: name_or_id.to_string(),
        })
}

/// Per chain on the host, the backups it is to hold and those to remove
/// (a backup the host could not make is neither), those of them it was
/// seen to make (`made`), and the ssh target it is mirrored to
/// (backup_targets::mirror_of).
fn host_chains(c: &Connection, host: HostId) -> Result<Vec<DesiredChain>> {
    let mut out: Vec<DesiredChain> = Vec::new();
    let rows = query(c, "b.host_id = ?1", &[&host])?;
    for b in &rows {
        let i = match out.iter().position(|ch| ch.disk.disk == b.disk_id) {
            Some(i) => i,
            None => {
                out.push(DesiredChain {
                    disk: DiskRef {
                        of: b.of,
                        disk: b.disk_id,
                        backup: None,
                    },
                    backups: Vec::new(),
                    deleted: Vec::new(),
                    made: Vec::new(),
                    mirror: None,
                });
                out.len() - 1
            }
        };
        if b.deleted {
            out[i].deleted.push(b.id);
        } else if b.facts.error.is_none() {
            out[i].backups.push(b.id);
            // Seen made: never made again, fetched back if the chain lost it.
            if b.facts.kind.is_some() {
                out[i].made.push(b.id);
            }
        }
    }
    for ch in &mut out {
        ch.mirror =
            super::backup_targets::mirror_of(rows.iter().filter(|b| b.disk_id == ch.disk.disk));
    }
    Ok(out)
}

pub fn keyed_answer(
    t: &Connection,
    keyed: Option<&BackupKeyed>,
    row: &BackupRow,
    schedule: Option<&ScheduleRow>,
) -> Result<()> {
    if let Some(k) = keyed {
        let mut rec = k.record.clone();
        rec.response = (k.render)(row, schedule)
            .map_err(|e| StoreError::Corrupt(format!("encode answer: {e}")))?;
        super::idempotency::record_answer(t, &rec)?;
    }
    Ok(())
}

impl BackupStore for SqliteStore {
    fn create_backup(
        &self,
        new: &NewBackup,
        schedule: Option<&NewSchedule>,
        op: &Operation,
        keyed: Option<&BackupKeyed>,
        now: Millis,
    ) -> Result<(BackupRow, Option<ScheduleRow>)> {
        self.tx(|t| {
            let (row, sched) = super::backup_changes::create(t, new, schedule, op, now)?;
            keyed_answer(t, keyed, &row, sched.as_ref())?;
            Ok((row, sched))
        })
    }
    fn list_backups(&self) -> Result<Vec<BackupRow>> {
        self.read(|c| query(c, "1 = 1", &[]))
    }
    fn get_backup(&self, name_or_id: &str) -> Result<BackupRow> {
        self.read(|c| get(c, name_or_id))
    }
    fn delete_backup(
        &self,
        id: Uuid,
        op: &Operation,
        keyed: Option<&BackupKeyed>,
        now: Millis,
    ) -> Result<BackupRow> {
        self.tx(|t| {
            let row = super::backup_changes::delete(t, id, op, now)?;
            keyed_answer(t, keyed, &row, None)?;
            Ok(row)
        })
    }
    fn restore_backup(
        &self,
        id: Uuid,
        new: &crate::store::volume::NewVolume,
        place: &crate::store::volume::VolumePlacer<'_>,
        transfer: Uuid,
        op: &Operation,
        keyed: Option<&crate::store::volume::VolumeKeyed>,
        now: Millis,
    ) -> Result<crate::store::volume::VolumeRow> {
        self.tx(|t| {
            let row = super::backup_restore::restore(t, id, new, place, transfer, op, now)?;
            super::volumes::keyed_answer(t, keyed, &row)?;
            Ok(row)
        })
    }
    fn list_backup_schedules(&self) -> Result<Vec<ScheduleRow>> {
        self.read(|c| schedules(c, "1 = 1", &[]))
    }
    fn delete_backup_schedule(&self, name_or_id: &str) -> Result<ScheduleRow> {
        self.tx(|t| {
            let s = schedule(t, name_or_id)?;
            t.execute(
                "DELETE FROM backup_schedules WHERE id = ?1",
                [s.id.to_string()],
            )?;
            Ok(s)
        })
    }
    fn host_chains(&self, host: HostId) -> Result<Vec<DesiredChain>> {
        self.read(|c| host_chains(c, host))
    }
    fn record_backup_report(
        &self,
        host: HostId,
        seen: &[ObservedBackup],
        tell: &BackupEvents,
        now: Millis,
    ) -> Result<BackupReport> {
        self.tx(|t| {
            let mut out = super::backup_changes::record_report(t, host, seen, now)?;
            for e in tell(&out) {
                out.events.push(super::engine_rows::append(t, &e, now)?);
            }
            Ok(out)
        })
    }
    fn tick_backup_schedules(
        &self,
        now: Millis,
        name: &NameFor<'_>,
        op: &OpFor<'_>,
        tell: &TickEvents,
    ) -> Result<ScheduleTick> {
        self.tx(|t| {
            let mut out = super::backup_schedules::tick(t, now, name, op)?;
            for e in tell(&out) {
                out.events.push(super::engine_rows::append(t, &e, now)?);
            }
            Ok(out)
        })
    }
}

#[cfg(test)]
#[path = "backups_tests.rs"]
pub(crate) mod tests;
