//! One chain, one place: the default target, the refusal of a second ssh
//! target, the mirror of the desired chains (deleted backups included), a
//! schedule's target, and the host's mirror facts recorded without events.

use super::super::backups::tests::{made, report, store};
use super::super::SqliteStore;
use crate::app::backup_events;
use crate::store::backup::*;
use crate::store::*;
use cm_api::snapshot::SnapshotOf;
use cm_api::words::OperationKind as K;
use uuid::Uuid;

const A: &str = "ssh://backup@nas-a:2222/srv/cm";
const B: &str = "ssh://nas-b/srv/cm";

fn new(name: &str, disk: Uuid, to: Option<&str>) -> NewBackup {
    NewBackup {
        id: Uuid::new_v4(),
        name: name.into(),
        of: SnapshotOf::Volume,
        disk_id: disk,
        target: to.map(str::to_string),
    }
}

fn backup(s: &SqliteStore, name: &str, disk: Uuid, to: Option<&str>) -> Result<BackupRow> {
    let n = new(name, disk, to);
    let op = new_operation(K::BackupCreate, name, n.id, "recorded");
    s.create_backup(&n, None, &op, None, now_ms())
        .map(|(b, _)| b)
}

/// Every backup of the store reported made (the deleted ones gone).
fn all_made(s: &SqliteStore, h: HostId) -> BackupReport {
    let seen: Vec<_> = s
        .list_backups()
        .unwrap()
        .iter()
        .filter(|b| !b.deleted)
        .map(made)
        .collect();
    report(s, h, &seen, &|_| Vec::new())
}

fn refused_to(r: Result<BackupRow>) -> String {
    match r {
        Err(StoreError::Refused { message, field }) => {
            assert_eq!(field, "to");
            message
        }
        other => panic!("not refused on to: {other:?}"),
    }
}

fn mirror(s: &SqliteStore, h: HostId) -> Option<String> {
    let chains = s.host_chains(h).unwrap();
    assert_eq!(chains.len(), 1, "{chains:?}");
    chains[0].mirror.clone()
}

#[test]
fn a_chain_is_kept_in_one_place_and_its_target_is_the_default() {
    let (_d, s, h, disk) = store();
    let b1 = backup(&s, "b1", disk, None).unwrap();
    assert_eq!(b1.target, "host", "no chain yet: host");
    assert!(s.host_chains(h).unwrap()[0].made.is_empty());
    all_made(&s, h);
    assert_eq!(mirror(&s, h), None);
    let b2 = backup(&s, "b2", disk, Some(A)).unwrap();
    assert_eq!(b2.target, A);
    assert_eq!(mirror(&s, h).as_deref(), Some(A), "mirrored while made");
    let chains = s.host_chains(h).unwrap();
    assert_eq!(chains[0].backups, vec![b1.id, b2.id]);
    assert_eq!(chains[0].made, vec![b1.id], "b2 is not made yet");
    all_made(&s, h);
    let b3 = backup(&s, "b3", disk, None).unwrap();
    assert_eq!(b3.target, A, "omitted: the chain's ssh target");
    all_made(&s, h);
    // Another ssh target: refused, naming the one in use; nothing written.
    let before = s.generation();
    let why = refused_to(backup(&s, "b4", disk, Some(B)));
    assert!(why.contains(A) && why.contains("b2, b3"), "{why}");
    assert!(why.contains("chain of volume data on h1"), "{why}");
    assert!(why.contains("delete those backups first"), "{why}");
    assert_eq!(s.generation(), before);
    assert!(matches!(
        s.get_backup("b4"),
        Err(StoreError::NotFound { .. })
    ));
    // `host` while the chain is mirrored: made in the chain, mirrored too.
    let b5 = backup(&s, "b5", disk, Some("host")).unwrap();
    assert_eq!(b5.target, "host");
    assert_eq!(mirror(&s, h).as_deref(), Some(A));
    // A failed backup is not part of the chain: it keeps nothing anywhere.
    let (_d2, s2, h2, disk2) = store();
    let f = backup(&s2, "f", disk2, Some(B)).unwrap();
    let mut failed = made(&f);
    failed.kind = None;
    failed.error = Some("no space".into());
    report(&s2, h2, &[failed], &|_| Vec::new());
    assert_eq!(mirror(&s2, h2), None);
    assert_eq!(backup(&s2, "g", disk2, None).unwrap().target, "host");
}

#[test]
fn deleted_backups_keep_their_chains_mirror_until_they_are_gone() {
    let (_d, s, h, disk) = store();
    let b1 = backup(&s, "b1", disk, Some(A)).unwrap();
    all_made(&s, h);
    let b2 = backup(&s, "b2", disk, Some(A)).unwrap();
    all_made(&s, h);
    for b in [&b1, &b2] {
        let op = new_operation(K::BackupDelete, &b.name, b.id, "x");
        s.delete_backup(b.id, &op, None, now_ms()).unwrap();
    }
    let chains = s.host_chains(h).unwrap();
    assert_eq!(chains[0].deleted, vec![b1.id, b2.id]);
    assert_eq!(
        chains[0].mirror.as_deref(),
        Some(A),
        "the deletion is mirrored"
    );
    // Being deleted: the default is host again, another ssh target waits.
    let why = refused_to(backup(&s, "c1", disk, Some(B)));
    assert!(why.contains("wait until they are gone"), "{why}");
    // Their host no longer holds them: purged, no mirror; B is free.
    let out = all_made(&s, h);
    assert_eq!(out.purged.len(), 2);
    assert!(s.host_chains(h).unwrap().is_empty());
    let c1 = backup(&s, "c1", disk, Some(B)).unwrap();
    assert_eq!(c1.target, B);
    assert_eq!(mirror(&s, h).as_deref(), Some(B));
}

#[test]
fn a_schedule_keeps_its_target_and_its_backups_use_it() {
    let (_d, s, h, disk) = store();
    let n = new("first", disk, Some(A));
    let sched = NewSchedule {
        id: Uuid::new_v4(),
        name: "data-every-1m".into(),
        every_secs: 60,
        keep: 5,
    };
    let op = new_operation(K::BackupCreate, "first", n.id, "recorded");
    let t0 = now_ms();
    let (_, sc) = s.create_backup(&n, Some(&sched), &op, None, t0).unwrap();
    assert_eq!(sc.unwrap().target, A);
    all_made(&s, h);
    let out = s
        .tick_backup_schedules(
            t0 + 60_000,
            &|_| "second".into(),
            &|id, name, kind| new_operation(kind, name, id, "sched"),
            &|_| Vec::new(),
        )
        .unwrap();
    assert_eq!(out.made.len(), 1);
    assert_eq!(out.made[0].target, A);
    all_made(&s, h);
    // Another ssh target is refused while the schedule keeps A, even
    // once A's backups are gone: its next backup would not be made.
    for b in s.list_backups().unwrap() {
        let op = new_operation(K::BackupDelete, &b.name, b.id, "x");
        s.delete_backup(b.id, &op, None, now_ms()).unwrap();
    }
    all_made(&s, h);
    let why = refused_to(backup(&s, "other", disk, Some(B)));
    assert!(why.contains("schedule data-every-1m"), "{why}");
    // A schedule made without a target takes the chain's.
    let (_d2, s2, h2, disk2) = store();
    backup(&s2, "a1", disk2, Some(A)).unwrap();
    all_made(&s2, h2);
    let n = new("a2", disk2, None);
    let op = new_operation(K::BackupCreate, "a2", n.id, "recorded");
    let (row, sc) = s2
        .create_backup(&n, Some(&sched), &op, None, now_ms())
        .unwrap();
    assert_eq!((row.target.as_str(), sc.unwrap().target.as_str()), (A, A));
}

#[test]
fn the_hosts_mirror_facts_are_recorded_without_events() {
    let (_d, s, h, disk) = store();
    let b = backup(&s, "b1", disk, Some(A)).unwrap();
    let mut seen = made(&b);
    seen.mirrored = Some(false);
    seen.mirror_error = Some("ssh: connect to host nas-a port 2222: refused".into());
    let out = report(&s, h, &[seen.clone()], &backup_events::events);
    assert_eq!(out.events.len(), 1, "made: backup.created only");
    let row = s.get_backup("b1").unwrap();
    assert_eq!(row.facts.mirrored, Some(false));
    assert!(row
        .facts
        .mirror_error
        .as_deref()
        .unwrap()
        .contains("refused"));
    // Only the mirror facts change: recorded, no event.
    seen.mirrored = Some(true);
    seen.mirror_error = None;
    let out = report(&s, h, &[seen.clone()], &backup_events::events);
    assert_eq!(out.changed.len(), 1);
    assert!(out.events.is_empty(), "{:?}", out.events);
    let row = s.get_backup("b1").unwrap();
    assert_eq!(
        (row.facts.mirrored, row.facts.mirror_error),
        (Some(true), None)
    );
    // The same again: nothing.
    let out = report(&s, h, &[seen], &backup_events::events);
    assert!(out.changed.is_empty());
}

#[test]
fn a_moved_disks_chains_on_two_hosts_are_not_kept_in_one_place() {
    let (_d, s, h, disk) = store();
    let old = backup(&s, "old", disk, Some(A)).unwrap();
    all_made(&s, h);
    // The volume's chain from before it moved lives on h0 now.
    let h0 = s
        .register_host("h0", "tok-h0", &crate::store::sqlite::tests::facts(4096), 0)
        .unwrap();
    s.tx(|t| {
        t.execute(
            "UPDATE backups SET host_id = ?1 WHERE id = ?2",
            rusqlite::params![h0, old.id.to_string()],
        )?;
        Ok(())
    })
    .unwrap();
    // On h1 the chain is new: host by default; A (however spelled) is
    // the old chain's directory there, refused; another path is not.
    assert_eq!(backup(&s, "n1", disk, None).unwrap().target, "host");
    all_made(&s, h);
    let why = refused_to(backup(&s, "n2", disk, Some("ssh://other@NAS-A/srv/cm")));
    assert!(
        why.contains("from host h0") && why.contains("(backups old)"),
        "{why}"
    );
    let n2 = backup(&s, "n2", disk, Some("ssh://backup@nas-a:2222/srv/cm-h1")).unwrap();
    assert_eq!(n2.target, "ssh://backup@nas-a:2222/srv/cm-h1");
}
