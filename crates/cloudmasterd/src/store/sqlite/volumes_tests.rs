//! The volume store: intent, placement inside the transaction, reports,
//! purging, and the refusals that keep a volume from being lost.

use super::*;
use crate::store::sqlite::tests::{facts, image, new_instance, observed};
use crate::volume_placement;
use cm_api::agent::{ObservedAttachment, ObservedState};
use cm_api::words::OperationKind as K;

const MIB: u64 = 1 << 20;

fn host(s: &SqliteStore, name: &str, disk_mib: u64) -> HostId {
    let mut f = facts(4096);
    f.disk_free_mib = disk_mib;
    let h = s
        .register_host(name, &format!("tok-{name}"), &f, 0)
        .unwrap();
    s.record_report(h, &f, 0, &[], now_ms()).unwrap();
    h
}

fn create(s: &SqliteStore, name: &str, mib: u64, on: Option<&str>) -> Result<VolumeRow> {
    let new = NewVolume {
        id: VolumeId::new_v4(),
        name: name.into(),
        size_bytes: mib * MIB,
    };
    let req = volume_placement::Request {
        size_mib: mib,
        host: on.map(str::to_string),
        now: now_ms(),
        down_after: std::time::Duration::from_secs(60),
    };
    let op = new_operation(K::VolumeCreate, name, new.id, "placed");
    s.create_volume(
        &new,
        &|sp| volume_placement::place(&req, sp),
        &op,
        None,
        now_ms(),
    )
}

fn file(v: &VolumeRow, size: u64, allocated: u64) -> ObservedVolume {
    ObservedVolume {
        id: v.id.uuid(),
        size_bytes: size,
        allocated_bytes: allocated,
        error: None,
        snapshots: Vec::new(),
        reverted_gen: 0,
        revert_error: None,
    }
}

/// A report of host `h` that has applied everything asked of it.
fn report(
    s: &SqliteStore,
    h: HostId,
    files: &[ObservedVolume],
    vms: &[ObservedInstance],
) -> VolumeReport {
    let g = s.get_host(&h.to_string()).unwrap().generation;
    let mut f = facts(4096);
    f.disk_free_mib = 1000;
    s.record_report(h, &f, g, vms, now_ms()).unwrap();
    s.record_volume_report(h, files, vms, &|_| Vec::new(), now_ms())
        .unwrap()
}

fn change(s: &SqliteStore, v: &VolumeRow, c: VolumeChange) -> Result<VolumeRow> {
    s.change_volume(v.id, c, None, None, now_ms())
}

#[test]
fn placement_counts_what_volumes_may_grow_into_and_names_are_unique() {
    let s = SqliteStore::in_memory().unwrap();
    host(&s, "h1", 1000);
    let a = create(&s, "a", 600, None).unwrap();
    assert_eq!(a.host_name, "h1");
    // 600 MiB promised of 1000: 500 more does not fit, 400 does.
    let e = create(&s, "b", 500, None).unwrap_err();
    assert!(
        matches!(&e, StoreError::Unplaced(u) if u.field() == "host"),
        "{e}"
    );
    create(&s, "b", 400, Some("h1")).unwrap();
    let e = create(&s, "a", 1, None).unwrap_err();
    assert!(matches!(e, StoreError::AlreadyExists(_)), "{e}");
    let h = s.get_host("h1").unwrap();
    assert_eq!((h.volume_count, h.volume_unallocated_mib), (2, 1000));
    // What is allocated is counted by the host's free disk instead.
    report(&s, h.id, &[file(&a, 600 * MIB, 600 * MIB)], &[]);
    assert_eq!(s.get_host("h1").unwrap().volume_unallocated_mib, 400);
    // A resize must fit too.
    let e = change(
        &s,
        &a,
        VolumeChange::Resize {
            size_bytes: 2000 * MIB,
        },
    )
    .unwrap_err();
    assert!(matches!(e, StoreError::Unplaced(_)), "{e}");
    let e = change(&s, &a, VolumeChange::Resize { size_bytes: MIB }).unwrap_err();
    assert!(
        matches!(
            e,
            StoreError::Refused {
                field: "size_bytes",
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn a_volume_is_made_attached_detached_and_purged_from_reports() {
    let s = SqliteStore::in_memory().unwrap();
    let h = host(&s, "h1", 10_000);
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
    let v = create(&s, "data", 10, None).unwrap();
    let g0 = s.get_host("h1").unwrap().generation;
    assert!(v.intent_gen >= g0 - 1);
    let out = report(&s, h, &[file(&v, 10 * MIB, 0)], &[]);
    assert_eq!(out.changed.len(), 1);
    let v = change(&s, &v, VolumeChange::Attach { instance: inst.id }).unwrap();
    assert_eq!(v.attach_gen, 1);
    assert!(
        s.get_host("h1").unwrap().generation > g0,
        "the host hears of it"
    );
    assert_eq!(s.get_instance("web").unwrap().volumes, vec!["data"]);
    // Attaching again to the same instance changes nothing.
    assert_eq!(
        change(&s, &v, VolumeChange::Attach { instance: inst.id })
            .unwrap()
            .attach_gen,
        1
    );
    // Delete is refused while it is to be held.
    let e = change(&s, &v, VolumeChange::Delete).unwrap_err();
    assert!(e.to_string().contains("detach it first"), "{e}");
    let mut vm = observed(inst.id.uuid(), ObservedState::Running, 1);
    vm.volumes = vec![ObservedAttachment {
        volume: v.id.uuid(),
        state: cm_api::agent::AttachmentState::Attached,
        error: None,
    }];
    report(&s, h, &[file(&v, 10 * MIB, 0)], std::slice::from_ref(&vm));
    let v = s.get_volume("data").unwrap();
    assert!(v.held_by(inst.id));
    assert_eq!(
        crate::view::volume_state(&v),
        cm_api::volume::VolumeState::Attached
    );
    let v = change(&s, &v, VolumeChange::Detach { force: false }).unwrap();
    assert_eq!(
        crate::view::volume_state(&v),
        cm_api::volume::VolumeState::Detaching
    );
    let e = change(&s, &v, VolumeChange::Delete).unwrap_err();
    assert!(e.to_string().contains("detach it first"), "{e}");
    vm.volumes.clear();
    report(&s, h, &[file(&v, 10 * MIB, 0)], std::slice::from_ref(&vm));
    let v = s.get_volume("data").unwrap();
    assert_eq!(
        crate::view::volume_state(&v),
        cm_api::volume::VolumeState::Available
    );
    let v = change(&s, &v, VolumeChange::Delete).unwrap();
    assert!(v.deleted);
    // Its name stays taken until the host removed the file.
    assert!(matches!(
        create(&s, "data", 1, None),
        Err(StoreError::AlreadyExists(_))
    ));
    let out = report(&s, h, &[file(&v, 10 * MIB, 0)], &[]);
    assert!(out.purged.is_empty());
    let out = report(&s, h, &[], &[]);
    assert_eq!(out.purged.len(), 1);
    assert!(matches!(
        s.get_volume("data"),
        Err(StoreError::NotFound { .. })
    ));
}

#[test]
fn cross_host_attach_is_refused_and_a_deleted_instance_releases_its_volumes() {
    let s = SqliteStore::in_memory().unwrap();
    let h1 = host(&s, "h1", 10_000);
    host(&s, "h2", 10_000);
    let img = image(&s);
    let mut new = new_instance("web", &img, 64);
    let v = create(&s, "data", 10, Some("h1")).unwrap();
    let far = create(&s, "far", 10, Some("h2")).unwrap();
    new.volumes = vec![v.id];
    let on = |name: &'static str| {
        move |caps: &[HostCapacity]| -> std::result::Result<HostId, crate::scheduler::Unplaced> {
            Ok(caps.iter().find(|c| c.name == name).unwrap().id)
        }
    };
    // Created on another host than its volume's: refused, nothing written.
    let op = new_operation(K::InstanceCreate, "web", new.id, "placed");
    let e = s
        .create_instance(&new, None, &on("h2"), &op, None, now_ms())
        .unwrap_err();
    assert!(
        matches!(
            e,
            StoreError::Refused {
                field: "volumes",
                ..
            }
        ),
        "{e}"
    );
    s.get_instance("web").unwrap_err();
    let inst = s
        .create_instance(&new, None, &on("h1"), &op, None, now_ms())
        .unwrap();
    assert_eq!(inst.host_id, h1);
    assert_eq!(inst.volumes, vec!["data"]);
    let e = change(&s, &far, VolumeChange::Attach { instance: inst.id }).unwrap_err();
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
    // Evacuating its host would lose the volume: refused.
    let e = s
        .evacuate_host("h1", true, &|_| true, &|_, c| Ok(c[0].id), now_ms())
        .unwrap_err();
    assert!(e.to_string().contains("web"), "{e}");
    s.change_instance(inst.id, DesiredChange::Delete, None, now_ms())
        .unwrap();
    let v = s.get_volume("data").unwrap();
    assert_eq!(v.instance, None);
    // Removing a host with volumes needs --force, which forgets them.
    s.delete_host("h2", false, now_ms()).unwrap_err();
    s.delete_host("h2", true, now_ms()).unwrap();
    s.get_volume("far").unwrap_err();
}

#[test]
fn a_failure_reported_before_the_host_saw_the_change_is_old_news() {
    let s = SqliteStore::in_memory().unwrap();
    let h = host(&s, "h1", 10_000);
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
    let v = create(&s, "data", 10, None).unwrap();
    report(&s, h, &[file(&v, 10 * MIB, 0)], &[]);
    let v = change(&s, &v, VolumeChange::Attach { instance: inst.id }).unwrap();
    let mut vm = observed(inst.id.uuid(), ObservedState::Running, 1);
    vm.volumes = vec![ObservedAttachment {
        volume: v.id.uuid(),
        state: cm_api::agent::AttachmentState::Detaching,
        error: Some("an earlier failure".into()),
    }];
    // Made before the host applied the attach: its error is not kept.
    s.record_report(h, &facts(4096), v.intent_gen - 1, &[], now_ms())
        .unwrap();
    s.record_volume_report(
        h,
        &[file(&v, 10 * MIB, 0)],
        std::slice::from_ref(&vm),
        &|_| Vec::new(),
        now_ms(),
    )
    .unwrap();
    assert_eq!(s.get_volume("data").unwrap().facts.attach_error, None);
    // Once the host applied it, its failure is news.
    report(&s, h, &[file(&v, 10 * MIB, 0)], std::slice::from_ref(&vm));
    let got = s.get_volume("data").unwrap().facts.attach_error;
    assert_eq!(got.as_deref(), Some("an earlier failure"));
}

#[test]
fn a_reports_events_are_committed_with_it_or_not_at_all() {
    let s = SqliteStore::in_memory().unwrap();
    let h = host(&s, "h1", 1000);
    let v = create(&s, "v", 10, None).unwrap();
    let files = [file(&v, 10 * MIB, 0)];
    let tell = crate::app::volume_events::events;
    let out = s
        .record_volume_report(h, &files, &[], &tell, now_ms())
        .unwrap();
    assert_eq!(out.events.len(), 1, "{:?}", out.events);
    let logged = s.events_since(0, Some("volume.created"), 10).unwrap();
    assert_eq!(logged.len(), 1);
    assert_eq!(logged[0].target, "v");
    assert_eq!(logged[0].seq, out.events[0].seq);
    // Told nothing new, the same report logs nothing.
    let again = s
        .record_volume_report(h, &files, &[], &tell, now_ms())
        .unwrap();
    assert!(again.events.is_empty());
}
