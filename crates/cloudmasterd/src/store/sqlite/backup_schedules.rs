//! A tick of the backup schedules (docs/storage.md, "Schedules"): each due
//! schedule makes its next backup (skipped, not queued, while its previous
//! one is still being made), its ready backups past `keep` are marked
//! deleting (oldest first), and a schedule whose source is gone ends.

use super::backup_changes::{disk, insert, mark_deleted};
use super::backups::{by_id, query, schedules};
use crate::store::backup::*;
use crate::store::*;
use cm_api::words::OperationKind;
use rusqlite::{params, Connection};
use uuid::Uuid;

/// The next due time after `now`, in steps of the schedule's period.
fn next_after(s: &ScheduleRow, now: Millis) -> Millis {
    let every = i64::try_from(s.every_secs.saturating_mul(1000))
        .unwrap_or(i64::MAX)
        .max(1);
    let late = now.saturating_sub(s.next_at).max(0);
    s.next_at
        .saturating_add((late / every).saturating_add(1).saturating_mul(every))
}

pub fn tick(
    t: &Connection,
    now: Millis,
    name: &NameFor<'_>,
    op: &OpFor<'_>,
) -> Result<ScheduleTick> {
    let mut out = ScheduleTick::default();
    for s in schedules(t, "1 = 1", &[])? {
        match disk(t, s.of, s.disk_id) {
            Err(StoreError::NotFound { .. }) => {
                t.execute(
                    "DELETE FROM backup_schedules WHERE id = ?1",
                    [s.id.to_string()],
                )?;
                out.ended.push(s);
                continue;
            }
            // Being deleted: no new backup of it; retention still runs.
            Err(StoreError::Conflict(_)) => {}
            Err(e) => return Err(e),
            Ok(_) if s.next_at <= now => {
                let ours = query(
                    t,
                    "b.schedule_id = ?1 AND b.deleted = 0 AND b.obs_kind IS NULL
                         AND b.obs_error IS NULL",
                    &[&s.id.to_string()],
                )?;
                if ours.is_empty() {
                    made(t, &s, now, name, op, &mut out)?;
                }
                t.execute(
                    "UPDATE backup_schedules SET next_at = ?2 WHERE id = ?1",
                    params![s.id.to_string(), next_after(&s, now)],
                )?;
            }
            Ok(_) => {}
        }
        expire(t, &s, now, op, &mut out)?;
    }
    Ok(out)
}

fn made(
    t: &Connection,
    s: &ScheduleRow,
    now: Millis,
    name: &NameFor<'_>,
    op: &OpFor<'_>,
    out: &mut ScheduleTick,
) -> Result<()> {
    let new = NewBackup {
        id: Uuid::new_v4(),
        name: name(s),
        of: s.of,
        disk_id: s.disk_id,
        target: Some(s.target.clone()),
    };
    let o = op(new.id, &new.name, OperationKind::BackupCreate);
    match insert(t, &new, Some(s), &o, now) {
        Ok(row) => out.made.push(row),
        // A name taken (two ticks in one second), a chain busy with a
        // backup made by hand, or kept at another ssh target than the
        // schedule's: skipped, the next period tries again.
        Err(StoreError::AlreadyExists(_))
        | Err(StoreError::Conflict(_))
        | Err(StoreError::Refused { .. }) => {}
        Err(e) => return Err(e),
    }
    Ok(())
}

/// Mark the schedule's ready backups past `keep` deleting, oldest first.
fn expire(
    t: &Connection,
    s: &ScheduleRow,
    now: Millis,
    op: &OpFor<'_>,
    out: &mut ScheduleTick,
) -> Result<()> {
    let ready = query(
        t,
        "b.schedule_id = ?1 AND b.deleted = 0 AND b.obs_kind IS NOT NULL",
        &[&s.id.to_string()],
    )?;
    let keep = usize::try_from(s.keep).unwrap_or(usize::MAX);
    let past = ready.len().saturating_sub(keep);
    for b in ready.into_iter().take(past) {
        mark_deleted(t, &b, now)?;
        super::log::insert_operation(t, &op(b.id, &b.name, OperationKind::BackupDelete), 0)?;
        out.expired.push(by_id(t, b.id)?);
    }
    Ok(())
}
