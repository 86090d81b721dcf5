//! `snapshots`, `disk_reverts`, `volume_clones`
//! (store::snapshot::SnapshotStore): intent from users, facts from the
//! reports of each disk's host (docs/storage.md, "Snapshots").

use super::codec::{self, columns, u, uuid, FromRow};
use super::SqliteStore;
use crate::store::snapshot::*;
use crate::store::volume::{NewVolume, VolumeKeyed, VolumePlacer, VolumeRow};
use crate::store::*;
use cm_api::agent::{CloneSource, DesiredRevert, ObservedVolume};
use cm_api::snapshot::{Consistency, SnapshotOf};
use rusqlite::{Connection, Row};
use uuid::Uuid;

const COLS: &str = "s.id, s.name, s.of_kind, s.disk_id, s.source_name, s.host_id,
    h.name AS host_name, s.deleted, s.deleted_gen, s.intent_gen, s.obs_consistency,
    s.obs_size_bytes, s.obs_error,
    (r.gen IS NOT NULL AND r.gen > r.obs_gen AND r.obs_error IS NULL) AS restoring,
    s.created_at, s.updated_at";

const FROM: &str = "snapshots s JOIN hosts h ON h.id = s.host_id
    LEFT JOIN disk_reverts r ON r.disk_id = s.disk_id AND r.snapshot_id = s.id";

columns!(Cols {
    id,
    name,
    of_kind,
    disk_id,
    source_name,
    host_id,
    host_name,
    deleted,
    deleted_gen,
    intent_gen,
    obs_consistency,
    obs_size_bytes,
    obs_error,
    restoring,
    created_at,
    updated_at,
});

pub fn of_word(of: SnapshotOf) -> &'static str {
    match of {
        SnapshotOf::Volume => "volume",
        SnapshotOf::InstanceRoot => "instance_root",
    }
}

pub fn of_from(s: &str) -> Result<SnapshotOf> {
    match s {
        "volume" => Ok(SnapshotOf::Volume),
        "instance_root" => Ok(SnapshotOf::InstanceRoot),
        other => Err(StoreError::Corrupt(format!("snapshot of '{other}'"))),
    }
}

pub fn consistency_word(c: Consistency) -> &'static str {
    match c {
        Consistency::Offline => "offline",
        Consistency::Filesystem => "filesystem",
        Consistency::Crash => "crash",
    }
}

fn consistency_from(s: &str) -> Result<Consistency> {
    match s {
        "offline" => Ok(Consistency::Offline),
        "filesystem" => Ok(Consistency::Filesystem),
        "crash" => Ok(Consistency::Crash),
        other => Err(StoreError::Corrupt(format!(
            "snapshot consistency '{other}'"
        ))),
    }
}

impl FromRow for SnapshotRow {
    type Cols = Cols;
    fn cols(stmt: &rusqlite::Statement<'_>) -> rusqlite::Result<Cols> {
        Cols::of(stmt)
    }
    fn from_row(r: &Row<'_>, c: &Cols) -> Result<SnapshotRow> {
        let opt = |i: usize| -> Result<Option<u64>> { Ok(r.get::<_, Option<i64>>(i)?.map(u)) };
        let consistency: Option<String> = r.get(c.obs_consistency)?;
        Ok(SnapshotRow {
            id: uuid(codec::text(r, c.id)?)?,
            name: r.get(c.name)?,
            of: of_from(codec::text(r, c.of_kind)?)?,
            disk_id: uuid(codec::text(r, c.disk_id)?)?,
            source_name: r.get(c.source_name)?,
            host_id: r.get(c.host_id)?,
            host_name: r.get(c.host_name)?,
            deleted: r.get(c.deleted)?,
            deleted_gen: opt(c.deleted_gen)?,
            intent_gen: u(r.get(c.intent_gen)?),
            facts: SnapshotFacts {
                consistency: consistency.as_deref().map(consistency_from).transpose()?,
                size_bytes: opt(c.obs_size_bytes)?,
                error: r.get(c.obs_error)?,
            },
            restoring: r.get::<_, Option<bool>>(c.restoring)?.unwrap_or(false),
            created_at: r.get(c.created_at)?,
            updated_at: r.get(c.updated_at)?,
        })
    }
}

pub fn query(
    c: &Connection,
    where_: &str,
    args: &[&dyn rusqlite::ToSql],
) -> Result<Vec<SnapshotRow>> {
    codec::all(
        c,
        &format!("SELECT {COLS} FROM {FROM} WHERE {where_} ORDER BY s.name"),
        args,
    )
}

pub fn get(c: &Connection, name_or_id: &str) -> Result<SnapshotRow> {
    codec::first(
        c,
        &format!("SELECT {COLS} FROM {FROM} WHERE s.name = ?1 OR s.id = ?1"),
        [name_or_id],
    )?
    .ok_or_else(|| StoreError::NotFound {
        what: "snapshot",
        name: name_or_id.to_string(),
    })
}

pub fn by_id(c: &Connection, id: Uuid) -> Result<SnapshotRow> {
    get(c, &id.to_string())
}

/// The names of the snapshots of a disk whose deletion is not recorded.
pub fn live_names(c: &Connection, disk: Uuid) -> Result<Vec<String>> {
    let mut st = c.prepare_cached(
        "SELECT name FROM snapshots WHERE disk_id = ?1 AND deleted = 0 ORDER BY name",
    )?;
    let names = st
        .query_map([disk.to_string()], |r| r.get(0))?
        .collect::<rusqlite::Result<Vec<String>>>()?;
    Ok(names)
}

pub fn reverts(
    c: &Connection,
    where_: &str,
    args: &[&dyn rusqlite::ToSql],
) -> Result<Vec<RevertRow>> {
    let mut st = c.prepare(&format!(
        "SELECT disk_id, of_kind, host_id, snapshot_id, gen, intent_gen, obs_gen, obs_error
         FROM disk_reverts WHERE {where_}"
    ))?;
    let mut rows = st.query(args)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        out.push(RevertRow {
            disk_id: uuid(codec::text(r, 0)?)?,
            of: of_from(codec::text(r, 1)?)?,
            host_id: r.get(2)?,
            snapshot: uuid(codec::text(r, 3)?)?,
            gen: u(r.get(4)?),
            intent_gen: u(r.get(5)?),
            applied: u(r.get(6)?),
            error: r.get(7)?,
        });
    }
    Ok(out)
}

fn host_intent(c: &Connection, host: HostId) -> Result<HostSnapshots> {
    let mut out = HostSnapshots::default();
    for s in query(c, "s.host_id = ?1", &[&host])? {
        let d = out.disks.entry(s.disk_id).or_default();
        if s.deleted {
            d.deleted.push(s.id);
        } else {
            d.snapshots.push(s.id);
        }
    }
    for r in reverts(c, "host_id = ?1", &[&host])? {
        out.disks.entry(r.disk_id).or_default().revert = Some(DesiredRevert {
            snapshot: r.snapshot,
            gen: r.gen,
        });
    }
    let mut st = c.prepare_cached(
        "SELECT c.volume_id, c.snapshot_id, c.of_kind, c.disk_id FROM volume_clones c
         JOIN volumes v ON v.id = c.volume_id WHERE v.host_id = ?1",
    )?;
    let mut rows = st.query([&host])?;
    while let Some(r) = rows.next()? {
        out.clones.insert(
            uuid(codec::text(r, 0)?)?,
            CloneSource {
                snapshot: uuid(codec::text(r, 1)?)?,
                of: of_from(codec::text(r, 2)?)?,
                disk: uuid(codec::text(r, 3)?)?,
            },
        );
    }
    Ok(out)
}

fn keyed_answer(t: &Connection, keyed: Option<&SnapshotKeyed>, row: &SnapshotRow) -> Result<()> {
    if let Some(k) = keyed {
        let mut rec = k.record.clone();
        rec.response =
            (k.render)(row).map_err(|e| StoreError::Corrupt(format!("encode answer: {e}")))?;
        super::idempotency::record_answer(t, &rec)?;
    }
    Ok(())
}

impl SnapshotStore for SqliteStore {
    fn create_snapshot(
        &self,
        new: &NewSnapshot,
        op: &Operation,
        keyed: Option<&SnapshotKeyed>,
        now: Millis,
    ) -> Result<SnapshotRow> {
        self.tx(|t| {
            let row = super::snapshot_changes::create(t, new, op, now)?;
            keyed_answer(t, keyed, &row)?;
            Ok(row)
        })
    }
    fn list_snapshots(&self) -> Result<Vec<SnapshotRow>> {
        self.read(|c| query(c, "1 = 1", &[]))
    }
    fn get_snapshot(&self, name_or_id: &str) -> Result<SnapshotRow> {
        self.read(|c| get(c, name_or_id))
    }
    fn restore_snapshot(
        &self,
        id: Uuid,
        op: &Operation,
        keyed: Option<&SnapshotKeyed>,
        now: Millis,
    ) -> Result<SnapshotRow> {
        self.tx(|t| {
            let row = super::snapshot_changes::restore(t, id, op, now)?;
            keyed_answer(t, keyed, &row)?;
            Ok(row)
        })
    }
    fn delete_snapshot(
        &self,
        id: Uuid,
        op: &Operation,
        keyed: Option<&SnapshotKeyed>,
        now: Millis,
    ) -> Result<SnapshotRow> {
        self.tx(|t| {
            let row = super::snapshot_changes::delete(t, id, op, now)?;
            keyed_answer(t, keyed, &row)?;
            Ok(row)
        })
    }
    fn clone_snapshot(
        &self,
        id: Uuid,
        new: &NewVolume,
        place: &VolumePlacer<'_>,
        op: &Operation,
        keyed: Option<&VolumeKeyed>,
        now: Millis,
    ) -> Result<VolumeRow> {
        self.tx(|t| {
            let row = super::snapshot_changes::clone(t, id, new, place, op, now)?;
            super::volumes::keyed_answer(t, keyed, &row)?;
            Ok(row)
        })
    }
    fn disk_revert(&self, disk: Uuid) -> Result<Option<RevertRow>> {
        self.read(|c| Ok(reverts(c, "disk_id = ?1", &[&disk.to_string()])?.pop()))
    }
    fn host_snapshots(&self, host: HostId) -> Result<HostSnapshots> {
        self.read(|c| host_intent(c, host))
    }
    fn record_snapshot_report(
        &self,
        host: HostId,
        files: &[ObservedVolume],
        observed: &[ObservedInstance],
        tell: &SnapshotEvents,
        now: Millis,
    ) -> Result<SnapshotReport> {
        self.tx(|t| {
            let mut out = super::snapshot_facts::record_report(t, host, files, observed, now)?;
            for e in tell(&out) {
                out.events.push(super::engine_rows::append(t, &e, now)?);
            }
            Ok(out)
        })
    }
}

#[cfg(test)]
#[path = "snapshots_tests.rs"]
mod tests;
