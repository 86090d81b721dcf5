//! The snapshot store: intent, facts from reports, purging, reverts,
//! clones, and the refusals that keep a snapshot or its disk from being lost.

use super::*;
use crate::store::sqlite::tests::{facts, image, new_instance, observed};
use crate::store::volume::{VolumeChange, VolumeStore};
use crate::volume_placement;
use cm_api::agent::{ObservedSnapshot, ObservedState};
use cm_api::ids::VolumeId;
use cm_api::words::OperationKind as K;

const MIB: u64 = 1 << 20;

fn host(s: &SqliteStore, name: &str) -> HostId {
    let mut f = facts(4096);
    f.disk_free_mib = 10_000;
    let h = s
        .register_host(name, &format!("tok-{name}"), &f, 0)
        .unwrap();
    s.record_report(h, &f, 0, &[], now_ms()).unwrap();
    h
}

fn place(mib: u64) -> volume_placement::Request {
    volume_placement::Request {
        size_mib: mib,
        host: None,
        now: now_ms(),
        down_after: std::time::Duration::from_secs(60),
    }
}

fn volume(s: &SqliteStore, name: &str, mib: u64) -> VolumeRow {
    let new = NewVolume {
        id: VolumeId::new_v4(),
        name: name.into(),
        size_bytes: mib * MIB,
    };
    let req = place(mib);
    let op = new_operation(K::VolumeCreate, name, new.id, "placed");
    s.create_volume(
        &new,
        &|sp| volume_placement::place(&req, sp),
        &op,
        None,
        now_ms(),
    )
    .unwrap()
}

fn snap(s: &SqliteStore, name: &str, of: SnapshotOf, disk: Uuid) -> Result<SnapshotRow> {
    let new = NewSnapshot {
        id: Uuid::new_v4(),
        name: name.into(),
        of,
        disk_id: disk,
    };
    let op = new_operation(K::SnapshotCreate, name, new.id, "recorded");
    s.create_snapshot(&new, &op, None, now_ms())
}

fn file(v: &VolumeRow, snaps: Vec<ObservedSnapshot>, reverted: u64) -> ObservedVolume {
    ObservedVolume {
        id: v.id.uuid(),
        size_bytes: v.size_bytes,
        allocated_bytes: 0,
        error: None,
        snapshots: snaps,
        reverted_gen: reverted,
        revert_error: None,
    }
}

fn taken(s: &SnapshotRow) -> ObservedSnapshot {
    ObservedSnapshot {
        id: s.id,
        consistency: Some(Consistency::Offline),
        size_bytes: 10 * MIB,
        error: None,
    }
}

/// A report of host `h` that has applied everything asked of it.
fn report(
    s: &SqliteStore,
    h: HostId,
    files: &[ObservedVolume],
    vms: &[ObservedInstance],
) -> SnapshotReport {
    let g = s.get_host(&h.to_string()).unwrap().generation;
    let mut f = facts(4096);
    f.disk_free_mib = 10_000;
    s.record_report(h, &f, g, vms, now_ms()).unwrap();
    s.record_volume_report(h, files, vms, &|_| Vec::new(), now_ms())
        .unwrap();
    s.record_snapshot_report(h, files, vms, &|_| Vec::new(), now_ms())
        .unwrap()
}

fn op(kind: K, s: &SnapshotRow) -> Operation {
    new_operation(kind, &s.name, s.id, "recorded")
}

#[test]
fn a_snapshot_is_taken_restored_cloned_deleted_and_purged() {
    let s = SqliteStore::in_memory().unwrap();
    let h = host(&s, "h1");
    let img = image(&s);
    let inst = s
        .create_instance(
            &new_instance("web", &img, 64),
            None,
            &crate::store::sqlite::tests::first_host,
            &new_operation(K::InstanceCreate, "web", Uuid::new_v4(), "placed"),
            None,
            now_ms(),
        )
        .unwrap();
    let v = volume(&s, "data", 10);
    let g0 = s.get_host("h1").unwrap().generation;
    let a = snap(&s, "a", SnapshotOf::Volume, v.id.uuid()).unwrap();
    assert!(
        s.get_host("h1").unwrap().generation > g0,
        "the host hears of it"
    );
    assert_eq!((a.host_id, a.source_name.as_str()), (h, "data"));
    let e = snap(&s, "a", SnapshotOf::Volume, v.id.uuid()).unwrap_err();
    assert!(matches!(e, StoreError::AlreadyExists(_)), "{e}");
    let intent = s.host_snapshots(h).unwrap();
    assert_eq!(intent.disks[&v.id.uuid()].snapshots, vec![a.id]);
    // Not taken yet: neither restored nor cloned.
    let e = s.restore_snapshot(a.id, &op(K::SnapshotRestore, &a), None, now_ms());
    assert!(e.unwrap_err().to_string().contains("not taken yet"));
    let out = report(&s, h, &[file(&v, vec![taken(&a)], 0)], &[]);
    assert_eq!(out.changed.len(), 1);
    let a = s.get_snapshot("a").unwrap();
    assert_eq!(a.facts.consistency, Some(Consistency::Offline));
    assert_eq!(a.facts.size_bytes, Some(10 * MIB));
    // The volume is not deleted while it has snapshots.
    let e = s
        .change_volume(v.id, VolumeChange::Delete, None, None, now_ms())
        .unwrap_err();
    assert!(e.to_string().contains("delete its snapshots first"), "{e}");
    // Restore is refused while the instance it is attached to runs.
    s.change_volume(
        v.id,
        VolumeChange::Attach { instance: inst.id },
        None,
        None,
        now_ms(),
    )
    .unwrap();
    let vm = observed(inst.id.uuid(), ObservedState::Running, 1);
    report(
        &s,
        h,
        &[file(&v, vec![taken(&a)], 0)],
        std::slice::from_ref(&vm),
    );
    let e = s
        .restore_snapshot(a.id, &op(K::SnapshotRestore, &a), None, now_ms())
        .unwrap_err();
    assert!(e.to_string().contains("stop web first"), "{e}");
    s.change_instance(
        inst.id,
        DesiredChange::Stop { timeout_secs: 0 },
        None,
        now_ms(),
    )
    .unwrap();
    let vm = observed(inst.id.uuid(), ObservedState::Stopped, 1);
    report(
        &s,
        h,
        &[file(&v, vec![taken(&a)], 0)],
        std::slice::from_ref(&vm),
    );
    let a = s
        .restore_snapshot(a.id, &op(K::SnapshotRestore, &a), None, now_ms())
        .unwrap();
    assert!(a.restoring);
    let r = s.disk_revert(v.id.uuid()).unwrap().unwrap();
    assert_eq!((r.gen, r.applied, r.snapshot), (1, 0, a.id));
    let intent = s.host_snapshots(h).unwrap();
    assert_eq!(intent.disks[&v.id.uuid()].revert.map(|r| r.gen), Some(1));
    let out = report(
        &s,
        h,
        &[file(&v, vec![taken(&a)], 1)],
        std::slice::from_ref(&vm),
    );
    assert_eq!(out.reverts.len(), 1);
    assert!(!s.get_snapshot("a").unwrap().restoring);
    // A clone is made on its host, of its size, and holds the snapshot
    // from deletion until its file exists.
    let new = NewVolume {
        id: VolumeId::new_v4(),
        name: "copy".into(),
        size_bytes: 10 * MIB,
    };
    let req = place(10);
    let c = s
        .clone_snapshot(
            a.id,
            &new,
            &|sp| volume_placement::place(&req, sp),
            &new_operation(K::VolumeCreate, "copy", new.id, "placed"),
            None,
            now_ms(),
        )
        .unwrap();
    assert_eq!(c.host_id, h);
    let clone = s.host_snapshots(h).unwrap().clones[&c.id.uuid()];
    assert_eq!((clone.snapshot, clone.disk), (a.id, v.id.uuid()));
    let e = s
        .delete_snapshot(a.id, &op(K::SnapshotDelete, &a), None, now_ms())
        .unwrap_err();
    assert!(e.to_string().contains("being cloned into copy"), "{e}");
    let made = file(&c, Vec::new(), 0);
    report(
        &s,
        h,
        &[file(&v, vec![taken(&a)], 1), made.clone()],
        std::slice::from_ref(&vm),
    );
    let a = s
        .delete_snapshot(a.id, &op(K::SnapshotDelete, &a), None, now_ms())
        .unwrap();
    assert!(a.deleted);
    let intent = s.host_snapshots(h).unwrap();
    assert_eq!(intent.disks[&v.id.uuid()].deleted, vec![a.id]);
    // Still held by the disk: kept; gone: purged.
    let out = report(
        &s,
        h,
        &[file(&v, vec![taken(&a)], 1), made.clone()],
        std::slice::from_ref(&vm),
    );
    assert!(out.purged.is_empty());
    let out = report(&s, h, &[file(&v, Vec::new(), 1), made], &[vm]);
    assert_eq!(out.purged.len(), 1);
    s.get_snapshot("a").unwrap_err();
    assert!(s.disk_revert(v.id.uuid()).unwrap().is_none());
}

#[test]
fn root_snapshots_hold_their_instance_and_errors_are_reported() {
    let s = SqliteStore::in_memory().unwrap();
    let h = host(&s, "h1");
    let img = image(&s);
    let inst = s
        .create_instance(
            &new_instance("web", &img, 64),
            None,
            &crate::store::sqlite::tests::first_host,
            &new_operation(K::InstanceCreate, "web", Uuid::new_v4(), "placed"),
            None,
            now_ms(),
        )
        .unwrap();
    let r = snap(&s, "root", SnapshotOf::InstanceRoot, inst.id.uuid()).unwrap();
    let mut vm = observed(inst.id.uuid(), ObservedState::Running, 1);
    vm.root_snapshots = vec![ObservedSnapshot {
        id: r.id,
        consistency: None,
        size_bytes: 0,
        error: Some("qemu-img: no space".into()),
    }];
    report(&s, h, &[], std::slice::from_ref(&vm));
    let r = s.get_snapshot("root").unwrap();
    assert_eq!(r.facts.error.as_deref(), Some("qemu-img: no space"));
    assert_eq!(r.facts.consistency, None);
    let e = s
        .change_instance(inst.id, DesiredChange::Delete, None, now_ms())
        .unwrap_err();
    assert!(e.to_string().contains("delete its snapshots first"), "{e}");
    s.delete_snapshot(r.id, &op(K::SnapshotDelete, &r), None, now_ms())
        .unwrap();
    s.change_instance(inst.id, DesiredChange::Delete, None, now_ms())
        .unwrap();
    // A deleting instance takes no snapshot.
    let e = snap(&s, "late", SnapshotOf::InstanceRoot, inst.id.uuid()).unwrap_err();
    assert!(
        matches!(
            e,
            StoreError::Refused {
                field: "instance",
                ..
            }
        ),
        "{e}"
    );
}
