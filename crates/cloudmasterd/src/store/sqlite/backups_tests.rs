//! The backup store: intent, the chain's host's facts with their events in
//! one transaction, purging, schedule retention (oldest first), and the
//! refusals that keep a chain whole.

use super::*;
use crate::store::sqlite::tests::facts;
use crate::store::volume::{NewVolume, VolumeStore};
use crate::volume_placement;
use cm_api::agent::ObservedBackup;
use cm_api::ids::VolumeId;
use cm_api::snapshot::SnapshotOf;
use cm_api::words::OperationKind as K;

const MIB: u64 = 1 << 20;

pub(crate) fn store() -> (tempfile::TempDir, SqliteStore, HostId, Uuid) {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(&dir.path().join("s.db")).unwrap();
    let mut f = facts(4096);
    f.disk_free_mib = 10_000;
    let h = s.register_host("h1", "tok-h1", &f, 0).unwrap();
    s.record_report(h, &f, 0, &[], now_ms()).unwrap();
    let new = NewVolume {
        id: VolumeId::new_v4(),
        name: "data".into(),
        size_bytes: 8 * MIB,
    };
    let req = volume_placement::Request {
        size_mib: 8,
        host: None,
        now: now_ms(),
        down_after: std::time::Duration::from_secs(60),
    };
    let op = new_operation(K::VolumeCreate, "data", new.id, "placed");
    let v = s
        .create_volume(
            &new,
            &|sp| volume_placement::place(&req, sp),
            &op,
            None,
            now_ms(),
        )
        .unwrap();
    (dir, s, h, v.id.uuid())
}

fn backup(s: &SqliteStore, name: &str, disk: Uuid, at: Millis) -> Result<BackupRow> {
    let new = NewBackup {
        id: Uuid::new_v4(),
        name: name.into(),
        of: SnapshotOf::Volume,
        disk_id: disk,
        target: Some("host".into()),
    };
    let op = new_operation(K::BackupCreate, name, new.id, "recorded");
    s.create_backup(&new, None, &op, None, at).map(|(b, _)| b)
}

pub(crate) fn made(b: &BackupRow) -> ObservedBackup {
    ObservedBackup {
        id: b.id,
        disk: cm_api::agent::DiskRef {
            of: b.of,
            disk: b.disk_id,
            backup: None,
        },
        kind: Some(BackupKind::Incremental),
        full_reason: None,
        consistency: Some(Consistency::Offline),
        size_bytes: 8 * MIB,
        file_bytes: MIB,
        took_ms: 5,
        error: None,
        mirrored: None,
        mirror_error: None,
    }
}

/// The host applies its generation, then reports `seen`.
pub(crate) fn report(
    s: &SqliteStore,
    h: HostId,
    seen: &[ObservedBackup],
    tell: &BackupEvents,
) -> BackupReport {
    let g = s.get_host("h1").unwrap().generation;
    s.record_report(h, &facts(4096), g, &[], now_ms()).unwrap();
    s.record_backup_report(h, seen, tell, now_ms()).unwrap()
}

fn told(out: &BackupReport) -> Vec<crate::store::engine::NewEvent> {
    out.changed
        .iter()
        .map(|c| crate::store::engine::NewEvent {
            kind: cm_api::words::EventKind::BackupCreated,
            target: c.after.name.clone(),
            message: "made".into(),
            detail: Default::default(),
        })
        .collect()
}

#[test]
fn a_report_records_facts_and_their_events_together() {
    let (_d, s, h, disk) = store();
    let b = backup(&s, "b1", disk, now_ms()).unwrap();
    let before = s.last_event_seq().unwrap();
    let out = report(&s, h, &[made(&b)], &told);
    assert_eq!(out.changed.len(), 1);
    assert_eq!(out.events.len(), 1, "the events come back committed");
    let evs = s.events_since(before, Some("backup.created"), 10).unwrap();
    assert_eq!(evs.len(), 1);
    assert_eq!(evs[0].seq, out.events[0].seq);
    let row = s.get_backup("b1").unwrap();
    assert_eq!(row.facts.kind, Some(BackupKind::Incremental));
    // The same facts again: no change, no event.
    let out = report(&s, h, &[made(&b)], &told);
    assert!(out.changed.is_empty() && out.events.is_empty());
}

#[test]
fn refusals_keep_a_chain_whole() {
    let (_d, s, h, disk) = store();
    let b1 = backup(&s, "b1", disk, now_ms()).unwrap();
    assert!(matches!(
        backup(&s, "b2", disk, now_ms()),
        Err(StoreError::Conflict(_))
    ));
    let op = new_operation(K::BackupDelete, "b1", b1.id, "x");
    assert!(matches!(
        s.delete_backup(b1.id, &op, None, now_ms()),
        Err(StoreError::Conflict(_))
    ));
    report(&s, h, &[made(&b1)], &|_| Vec::new());
    assert!(matches!(
        backup(&s, "b1", disk, now_ms()),
        Err(StoreError::AlreadyExists(_))
    ));
    assert!(matches!(
        backup(&s, "b3", Uuid::new_v4(), now_ms()),
        Err(StoreError::NotFound { .. })
    ));
    // Deleted: listed to its host until it no longer holds the file.
    s.delete_backup(b1.id, &op, None, now_ms()).unwrap();
    let chains = s.host_chains(h).unwrap();
    assert_eq!(
        (chains[0].backups.len(), &chains[0].deleted),
        (0, &vec![b1.id])
    );
    let out = report(&s, h, &[made(&b1)], &|_| Vec::new());
    assert!(out.purged.is_empty());
    let out = report(&s, h, &[], &|_| Vec::new());
    assert_eq!(out.purged.len(), 1);
    assert!(matches!(
        s.get_backup("b1"),
        Err(StoreError::NotFound { .. })
    ));
}

#[test]
fn retention_removes_the_oldest_ready_backups_past_keep() {
    let (_d, s, h, disk) = store();
    let t0 = now_ms();
    let new = NewBackup {
        id: Uuid::new_v4(),
        name: "first".into(),
        of: SnapshotOf::Volume,
        disk_id: disk,
        target: Some("host".into()),
    };
    let sched = NewSchedule {
        id: Uuid::new_v4(),
        name: "data-every-1m".into(),
        every_secs: 60,
        keep: 1,
    };
    let op = new_operation(K::BackupCreate, "first", new.id, "recorded");
    let (_, made_sched) = s.create_backup(&new, Some(&sched), &op, None, t0).unwrap();
    assert_eq!(made_sched.unwrap().next_at, t0 + 60_000);
    let all_ready = |s: &SqliteStore| {
        let seen: Vec<_> = s.list_backups().unwrap().iter().map(made).collect();
        report(s, h, &seen, &|_| Vec::new());
    };
    all_ready(&s);
    let names = std::cell::Cell::new(0);
    let tick = |at| {
        s.tick_backup_schedules(
            at,
            &|_| {
                names.set(names.get() + 1);
                format!("n{}", names.get())
            },
            &|id, name, kind| new_operation(kind, name, id, "sched"),
            &|_| Vec::new(),
        )
        .unwrap()
    };
    // Due: n1 made; `first` stays while n1 is not made (never fewer
    // than keep ready ones).
    let out = tick(t0 + 60_000);
    assert_eq!(out.made.len(), 1);
    assert!(out.expired.is_empty());
    all_ready(&s);
    // Late by three periods: one backup, not three; `first` goes.
    let out = tick(t0 + 240_000);
    assert_eq!(out.made.len(), 1);
    let expired: Vec<_> = out.expired.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(expired, vec!["first"]);
    let next = s.list_backup_schedules().unwrap()[0].next_at;
    assert_eq!(next, t0 + 300_000);
    // Its delete operation is recorded with it.
    let ops = s.running_operations().unwrap();
    assert!(ops
        .iter()
        .any(|o| o.op.kind == K::BackupDelete && o.op.target == "first"));
}

#[test]
fn a_removed_host_takes_its_chains_with_it() {
    let (_d, s, _h, disk) = store();
    let b = backup(&s, "b1", disk, now_ms()).unwrap();
    s.delete_host("h1", true, now_ms()).unwrap();
    assert!(matches!(
        s.get_backup("b1"),
        Err(StoreError::NotFound { .. })
    ));
    let ops = s.running_operations().unwrap();
    assert!(!ops.iter().any(|o| o.op.target_id == b.id), "its op failed");
}
