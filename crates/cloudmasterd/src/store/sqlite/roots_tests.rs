//! Persistent roots in the store: made or taken in the instance's create
//! transaction, let go at its delete, and the refusals that keep a root
//! volume (and the image under it) from being lost.

use super::*;
use crate::store::sqlite::tests::{facts, image, new_instance};
use crate::store::sqlite::SqliteStore;
use crate::store::volume::{VolumeChange, VolumeStore};
use cm_api::agent::ObservedVolume;
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

fn create(s: &SqliteStore, name: &str, img: &Image, root: NewRoot) -> Result<InstanceRow> {
    let mut new = new_instance(name, img, 64);
    new.root = Some(root);
    let op = new_operation(K::InstanceCreate, name, new.id.uuid(), "placed");
    s.create_instance(
        &new,
        None,
        &crate::store::sqlite::tests::first_host,
        &op,
        None,
        now_ms(),
    )
}

fn make(name: &str, mib: u64) -> NewRoot {
    NewRoot::Make {
        id: VolumeId::new_v4(),
        name: format!("{name}-root"),
        size_bytes: mib * MIB,
    }
}

/// The host reports the file of `v`, made.
fn made(s: &SqliteStore, h: HostId, v: &VolumeRow) {
    let g = s.get_host(&h.to_string()).unwrap().generation;
    s.record_report(h, &facts(4096), g, &[], now_ms()).unwrap();
    let file = ObservedVolume {
        id: v.id.uuid(),
        size_bytes: v.size_bytes,
        allocated_bytes: 4096,
        error: None,
        snapshots: Vec::new(),
        reverted_gen: 0,
        revert_error: None,
    };
    s.record_volume_report(h, &[file], &[], &|_| Vec::new(), now_ms())
        .unwrap();
}

fn refused_field(e: StoreError) -> &'static str {
    match e {
        StoreError::Refused { field, .. } => field,
        StoreError::Unplaced(u) => u.field(),
        other => panic!("not a refusal: {other:?}"),
    }
}

#[test]
fn a_persistent_root_outlives_its_instance_and_boots_another() {
    let s = SqliteStore::in_memory().unwrap();
    let h = host(&s, "h1", 1000);
    let img = image(&s);
    let web = create(&s, "web", &img, make("web", 100)).unwrap();
    assert_eq!(web.root_volume.as_deref(), Some("web-root"));
    let v = s.get_volume("web-root").unwrap();
    assert_eq!(v.root_of.as_ref().map(|r| r.0), Some(web.id));
    assert_eq!(v.image.as_ref().map(|i| i.1.as_str()), Some("tiny"));
    assert_eq!(
        (v.host_id, v.size_bytes, v.instance.clone()),
        (h, 100 * MIB, None)
    );
    assert!(web.volumes.is_empty(), "a root is not a data volume");
    // It cannot be detached, attached elsewhere or deleted, nor its image.
    for ch in [
        VolumeChange::Delete,
        VolumeChange::Detach { force: true },
        VolumeChange::Attach { instance: web.id },
    ] {
        let e = s.change_volume(v.id, ch, None, None, now_ms()).unwrap_err();
        assert!(
            matches!(e, StoreError::Conflict(_) | StoreError::Refused { .. }),
            "{ch:?}: {e:?}"
        );
    }
    assert_eq!(
        refused_field(s.delete_image("tiny").unwrap_err()),
        "name",
        "an image under a root volume stays"
    );
    // A second instance cannot take it while the first boots from it.
    made(&s, h, &v);
    let e = create(&s, "db", &img, NewRoot::Existing(v.id)).unwrap_err();
    assert_eq!(refused_field(e), "root_volume");
    // Deleting the instance keeps the volume, free, with its origin.
    s.change_instance(web.id, DesiredChange::Delete, None, now_ms())
        .unwrap();
    let v = s.get_volume("web-root").unwrap();
    assert_eq!((v.root_of.clone(), v.deleted), (None, false));
    assert!(v.image.is_some());
    let db = create(&s, "db", &img, NewRoot::Existing(v.id)).unwrap();
    assert_eq!(db.root_volume.as_deref(), Some("web-root"));
    s.delete_image("tiny").unwrap_err();
    // A host removed with --force forgets its instances and root volumes.
    s.delete_host("h1", true, now_ms()).unwrap();
    s.get_volume("web-root").unwrap_err();
}

#[test]
fn a_root_is_refused_when_its_name_is_taken_it_does_not_fit_or_the_volume_is_empty() {
    let s = SqliteStore::in_memory().unwrap();
    let h = host(&s, "h1", 1000);
    let img = image(&s);
    create(&s, "a", &img, make("a", 10)).unwrap();
    // Another instance named so that its root's name is taken.
    s.change_instance(
        s.get_instance("a").unwrap().id,
        DesiredChange::Delete,
        None,
        now_ms(),
    )
    .unwrap();
    let e = create(&s, "a", &img, make("a", 10)).unwrap_err();
    assert_eq!(refused_field(e), "name");
    // 2000 MiB on a host with 1000 MiB of room (10 taken).
    let e = create(&s, "big", &img, make("big", 2000)).unwrap_err();
    assert_eq!(refused_field(e), "host");
    s.get_volume("big-root").unwrap_err();
    s.get_instance("big").unwrap_err(); // nothing was written
                                        // A volume made empty has no image to boot.
    let empty = crate::store::volume::NewVolume {
        id: VolumeId::new_v4(),
        name: "empty".into(),
        size_bytes: MIB,
    };
    let op = new_operation(K::VolumeCreate, "empty", empty.id.uuid(), "placed");
    let v = s
        .create_volume(&empty, &|_| Ok(h), &op, None, now_ms())
        .unwrap();
    made(&s, h, &v);
    let e = create(&s, "c", &img, NewRoot::Existing(v.id)).unwrap_err();
    assert_eq!(refused_field(e), "root_volume");
}

#[test]
fn a_clone_of_an_ephemeral_roots_snapshot_is_bootable_from_the_instances_image() {
    use crate::store::snapshot::{NewSnapshot, SnapshotStore};
    use crate::store::sqlite::tests::observed;
    use cm_api::agent::{ObservedSnapshot, ObservedState};
    use cm_api::image::{FileRole, ImageFile, ImageKind};
    use cm_api::snapshot::{Consistency, SnapshotOf};
    let s = SqliteStore::in_memory().unwrap();
    let h = host(&s, "h1", 1000);
    let disk = Image {
        id: uuid::Uuid::new_v4(),
        name: "disk".into(),
        kind: ImageKind::Disk,
        files: vec![ImageFile {
            role: FileRole::Disk,
            size: MIB,
            sha256: "00".into(),
            format: Some("qcow2".into()),
            virtual_size: Some(8 * MIB),
        }],
        cmdline: None,
        created_at: to_ts(now_ms()),
    };
    s.insert_image(&disk).unwrap();
    let new = new_instance("web", &disk, 64);
    let op = new_operation(K::InstanceCreate, "web", new.id.uuid(), "placed");
    let web = s
        .create_instance(
            &new,
            None,
            &crate::store::sqlite::tests::first_host,
            &op,
            None,
            now_ms(),
        )
        .unwrap();
    let snap = NewSnapshot {
        id: uuid::Uuid::new_v4(),
        name: "before".into(),
        of: SnapshotOf::InstanceRoot,
        disk_id: web.id.uuid(),
    };
    let op = new_operation(K::SnapshotCreate, "before", snap.id, "recorded");
    s.create_snapshot(&snap, &op, None, now_ms()).unwrap();
    let mut vm = observed(web.id.uuid(), ObservedState::Stopped, 1);
    vm.root_snapshots = vec![ObservedSnapshot {
        id: snap.id,
        consistency: Some(Consistency::Offline),
        size_bytes: 8 * MIB,
        error: None,
    }];
    let g = s.get_host(&h.to_string()).unwrap().generation;
    let vms = std::slice::from_ref(&vm);
    s.record_report(h, &facts(4096), g, vms, now_ms()).unwrap();
    s.record_snapshot_report(h, &[], vms, &|_| Vec::new(), now_ms())
        .unwrap();
    let copy = crate::store::volume::NewVolume {
        id: VolumeId::new_v4(),
        name: "copy".into(),
        size_bytes: 8 * MIB,
    };
    let op = new_operation(K::VolumeCreate, "copy", copy.id.uuid(), "placed");
    let c = s
        .clone_snapshot(snap.id, &copy, &|_| Ok(h), &op, None, now_ms())
        .unwrap();
    assert_eq!(c.image.map(|i| i.1).as_deref(), Some("disk"));
}

#[test]
fn a_root_volume_is_not_moved_and_an_image_of_its_instance_is_made_from_it() {
    use crate::store::transfer::TransferStore;
    let s = SqliteStore::in_memory().unwrap();
    let h1 = host(&s, "h1", 1000);
    let h2 = host(&s, "h2", 1000);
    let img = image(&s);
    let web = create(&s, "web", &img, make("web", 100)).unwrap();
    let v = s.get_volume("web-root").unwrap();
    made(&s, h1, &v);
    let to = if web.host_id == h1 { h2 } else { h1 };
    let op = new_operation(K::VolumeMove, "web-root", v.id.uuid(), "recorded");
    let e = s
        .start_move(v.id, to, uuid::Uuid::new_v4(), &op, now_ms())
        .unwrap_err();
    assert!(format!("{e}").contains("root disk of instance web"), "{e}");
    assert_eq!(refused_field(e), "name");
    let op = new_operation(K::ImageCreate, "kept", uuid::Uuid::new_v4(), "recorded");
    let b = s
        .start_image_build(
            uuid::Uuid::new_v4(),
            "kept",
            web.id,
            uuid::Uuid::new_v4(),
            &op,
            now_ms(),
        )
        .unwrap();
    assert_eq!(
        b.transfer.disk,
        cm_api::agent::DiskRef {
            of: cm_api::snapshot::SnapshotOf::Volume,
            disk: v.id.uuid(),
            backup: None,
        }
    );
    assert_eq!(b.transfer.host_id, v.host_id);
    assert!(b.transfer.max_bytes > v.size_bytes);
}
