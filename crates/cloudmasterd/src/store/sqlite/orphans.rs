//! VMs a host keeps that are no instance of that host (docs/host.md).

use super::codec::{self, columns, i, text, u, uuid, FromRow};
use crate::store::*;
use rusqlite::{params, Connection, Row};
use std::collections::HashSet;

const COLS: &str = "o.vm_id, o.name, o.state, o.disk_bytes, o.purge, o.first_seen, o.last_seen,
    (SELECT h.name FROM instances i JOIN hosts h ON h.id = i.host_id
     WHERE i.id = o.vm_id AND i.deleted = 0) AS now_on_host";

columns!(Cols {
    vm_id,
    name,
    state,
    disk_bytes,
    purge,
    first_seen,
    last_seen,
    now_on_host
});

impl FromRow for OrphanRow {
    type Cols = Cols;
    fn cols(stmt: &rusqlite::Statement<'_>) -> rusqlite::Result<Cols> {
        Cols::of(stmt)
    }
    fn from_row(r: &Row<'_>, c: &Cols) -> Result<OrphanRow> {
        let state = text(r, c.state)?;
        Ok(OrphanRow {
            vm_id: uuid(text(r, c.vm_id)?)?,
            name: r.get(c.name)?,
            state: ObservedState::parse(state)
                .ok_or_else(|| StoreError::Corrupt(format!("orphan state '{state}'")))?,
            disk_bytes: u(r.get(c.disk_bytes)?),
            purge: r.get(c.purge)?,
            first_seen: r.get(c.first_seen)?,
            last_seen: r.get(c.last_seen)?,
            now_on_host: r.get(c.now_on_host)?,
        })
    }
}

pub fn list(c: &Connection, host_id: HostId) -> Result<Vec<OrphanRow>> {
    codec::all(
        c,
        &format!("SELECT {COLS} FROM host_orphans o WHERE o.host_id = ?1 ORDER BY o.name, o.vm_id"),
        [host_id],
    )
}

/// The most orphans kept per host (a report is bounded by the body limit;
/// this bounds what one host can make the store hold).
const MAX_PER_HOST: usize = 4096;

/// Replace the host's orphans with those reported; returns the new ones.
pub fn record(
    t: &Connection,
    host_id: HostId,
    reported: &[cm_api::agent::OrphanVm],
    now: Millis,
) -> Result<Vec<OrphanRow>> {
    let hid = host_id.to_string();
    let mut stmt = t.prepare("SELECT id FROM instances WHERE host_id = ?1")?;
    let own: HashSet<String> = stmt
        .query_map([&hid], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let before: HashSet<Uuid> = list(t, host_id)?.iter().map(|o| o.vm_id).collect();
    let mut keep = HashSet::new();
    for o in reported.iter().take(MAX_PER_HOST) {
        // One of its own instances is never an orphan of it.
        if own.contains(&o.id.to_string()) {
            continue;
        }
        keep.insert(o.id);
        t.execute(
            "INSERT INTO host_orphans (host_id, vm_id, name, state, disk_bytes, first_seen, last_seen)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)
             ON CONFLICT (host_id, vm_id) DO UPDATE SET name = excluded.name,
                state = excluded.state, disk_bytes = excluded.disk_bytes,
                last_seen = excluded.last_seen",
            params![
                hid,
                o.id.to_string(),
                // A host's word: shown in tables and events, so made safe.
                cm_api::validate::printable(&o.name),
                o.state.as_str(),
                i(o.disk_bytes),
                now
            ],
        )?;
    }
    for gone in before.difference(&keep) {
        t.execute(
            "DELETE FROM host_orphans WHERE host_id = ?1 AND vm_id = ?2",
            params![hid, gone.to_string()],
        )?;
    }
    Ok(list(t, host_id)?
        .into_iter()
        .filter(|o| !before.contains(&o.vm_id))
        .collect())
}

/// Mark orphans for removal (all of the host's when `ids` is empty).
pub fn purge(t: &Connection, host_id: HostId, ids: &[Uuid]) -> Result<Vec<OrphanRow>> {
    let all = list(t, host_id)?;
    let known: HashSet<Uuid> = all.iter().map(|o| o.vm_id).collect();
    if let Some(missing) = ids.iter().find(|id| !known.contains(id)) {
        return Err(StoreError::NotFound {
            what: "orphan",
            name: missing.to_string(),
        });
    }
    let chosen: Vec<OrphanRow> = all
        .into_iter()
        .filter(|o| ids.is_empty() || ids.contains(&o.vm_id))
        .collect();
    for o in &chosen {
        t.execute(
            "UPDATE host_orphans SET purge = 1 WHERE host_id = ?1 AND vm_id = ?2",
            params![host_id.to_string(), o.vm_id.to_string()],
        )?;
    }
    if !chosen.is_empty() {
        super::hosts::bump_generation(t, host_id)?;
    }
    Ok(list(t, host_id)?
        .into_iter()
        .filter(|o| chosen.iter().any(|c| c.vm_id == o.vm_id))
        .collect())
}

/// What the host must remove: deleted instances and purged orphans.
pub fn deletions(c: &Connection, host_id: HostId) -> Result<Vec<Uuid>> {
    let mut stmt = c.prepare(
        "SELECT id FROM instances WHERE host_id = ?1 AND deleted = 1
         UNION SELECT vm_id FROM host_orphans WHERE host_id = ?1 AND purge = 1",
    )?;
    let ids: Vec<String> = stmt
        .query_map([host_id.to_string()], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    ids.iter().map(|s| uuid(s)).collect()
}
