//! The host's volume passes with real qemu-img on a real directory.

use super::*;
use cm_api::agent::ObservedVolume;

fn desired(id: Uuid, mib: u64) -> DesiredVolume {
    DesiredVolume {
        id,
        name: format!("v-{}", &id.simple().to_string()[..6]),
        size_bytes: mib << 20,
        snapshots: Vec::new(),
        deleted_snapshots: Vec::new(),
        revert: None,
        clone_from: None,
        image: None,
        import: None,
    }
}

fn find(v: &[ObservedVolume], id: Uuid) -> Option<ObservedVolume> {
    v.iter().find(|o| o.id == id).cloned()
}

#[test]
fn desired_volumes_are_made_grown_reported_and_deleted() {
    let tmp = tempfile::tempdir().unwrap();
    let vols = Volumes::open(&tmp.path().join("volumes"), tmp.path()).unwrap();
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    // Before the first desired state nothing is made.
    vols.converge(&[]);
    assert!(vols.report().is_empty());
    vols.want(&[desired(a, 16), desired(b, 8)], &[]);
    vols.converge(&[]);
    let r = vols.report();
    assert_eq!(r.len(), 2, "{r:?}");
    let oa = find(&r, a).unwrap();
    assert_eq!(oa.size_bytes, 16 << 20);
    assert!(oa.allocated_bytes > 0 && oa.allocated_bytes < oa.size_bytes);
    assert_eq!(oa.error, None);
    // Grown, never shrunk; a pass again changes nothing.
    vols.want(&[desired(a, 32), desired(b, 4)], &[]);
    vols.converge(&[]);
    vols.converge(&[]);
    let r = vols.report();
    assert_eq!(find(&r, a).unwrap().size_bytes, 32 << 20);
    assert_eq!(find(&r, b).unwrap().size_bytes, 8 << 20);
    assert_eq!(files::virtual_size(&vols.path(a)).unwrap(), 32 << 20);
    // Absent from the desired state: kept. Deleted: removed.
    vols.want(&[], &[b]);
    vols.converge(&[]);
    let r = vols.report();
    assert!(find(&r, a).is_some() && find(&r, b).is_none(), "{r:?}");
    assert!(!vols.path(b).exists());
}

#[test]
fn a_file_a_qemu_holds_is_never_removed_and_failures_are_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("volumes");
    let vols = Volumes::open(&dir, tmp.path()).unwrap();
    let a = Uuid::new_v4();
    vols.want(&[desired(a, 8)], &[]);
    vols.converge(&[]);
    // This process stands for a QEMU that has the file open.
    let open = std::fs::File::open(vols.path(a)).unwrap();
    let vm = Uuid::new_v4();
    let me = [(vm, std::process::id())];
    vols.want(&[], &[a]);
    vols.converge(&me);
    // Just detached, maybe: its QEMU is given a moment to close it.
    assert!(vols.path(a).exists());
    assert_eq!(find(&vols.report(), a).unwrap().error, None);
    // Past the grace, still held: a failure, and the file stays.
    let past = std::time::Instant::now() - RELEASE_GRACE;
    vols.state().held_since.insert(a, past);
    vols.converge(&me);
    assert!(vols.path(a).exists());
    let err = find(&vols.report(), a).unwrap().error.unwrap();
    assert!(
        err.contains("holds it") && err.contains(&vm.to_string()),
        "{err}"
    );
    // Grown while held: through that VM's QMP (here none answers: an error).
    vols.want(&[desired(a, 16)], &[]);
    vols.converge(&me);
    let err = find(&vols.report(), a).unwrap().error.unwrap();
    assert!(err.contains("growing it in instance"), "{err}");
    drop(open);
    // Released: the same desired state now succeeds, and the error clears.
    vols.converge(&[]);
    let o = find(&vols.report(), a).unwrap();
    assert_eq!((o.size_bytes, o.error), (16 << 20, None));
    vols.want(&[], &[a]);
    vols.converge(&me);
    assert!(!vols.path(a).exists());
    assert!(vols.report().is_empty());
}

#[test]
fn a_volume_that_cannot_be_made_is_reported_without_a_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("volumes");
    std::fs::create_dir_all(&dir).unwrap();
    let stray = dir.join(format!("{}.qcow2.part", Uuid::new_v4()));
    std::fs::write(&stray, b"half").unwrap();
    let vols = Volumes::open(&dir, tmp.path()).unwrap();
    assert!(!stray.exists(), "a stray .part is removed at start");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&dir).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o700, "guests' data is private");
    let a = Uuid::new_v4();
    // Too big for qcow2 (qemu-img refuses it): the error, size 0, no file.
    vols.want(
        &[DesiredVolume {
            id: a,
            name: "huge".into(),
            size_bytes: u64::MAX >> 1,
            snapshots: Vec::new(),
            deleted_snapshots: Vec::new(),
            revert: None,
            clone_from: None,
            image: None,
            import: None,
        }],
        &[],
    );
    vols.converge(&[]);
    let o = find(&vols.report(), a).unwrap();
    assert_eq!((o.size_bytes, o.allocated_bytes), (0, 0));
    assert!(o.error.unwrap().contains("qemu-img create"));
    assert!(!vols.path(a).exists());
    // An attach failure is the volume's error too, until cleared.
    vols.want(&[desired(a, 8)], &[]);
    vols.converge(&[]);
    vols.set_attach_error(a, Some("attaching: no".into()));
    assert_eq!(
        find(&vols.report(), a).unwrap().error.as_deref(),
        Some("attaching: no")
    );
    vols.set_attach_error(a, None);
    assert_eq!(find(&vols.report(), a).unwrap().error, None);
}

#[test]
fn snapshots_are_taken_reported_reverted_once_across_a_restart_and_cloned() {
    use cm_api::agent::{CloneSource, DesiredRevert};
    use cm_api::snapshot::{Consistency, SnapshotOf};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("volumes");
    let vols = Volumes::open(&dir, tmp.path()).unwrap();
    let (a, s1) = (Uuid::new_v4(), Uuid::new_v4());
    let mut va = desired(a, 8);
    va.snapshots = vec![s1];
    vols.want(&[va.clone()], &[]);
    vols.converge(&[]);
    let o = find(&vols.report(), a).unwrap();
    assert_eq!(o.snapshots.len(), 1, "{o:?}");
    assert_eq!(o.snapshots[0].id, s1);
    assert_eq!(o.snapshots[0].consistency, Some(Consistency::Offline));
    assert_eq!(o.snapshots[0].size_bytes, 8 << 20);
    assert_eq!(snapfiles::tags(&vols.path(a)).unwrap().len(), 1);

    // Held by a running VM: a revert is refused, with the reason.
    let open = std::fs::File::open(vols.path(a)).unwrap();
    let vm = Uuid::new_v4();
    va.revert = Some(DesiredRevert {
        snapshot: s1,
        gen: 1,
    });
    vols.want(&[va.clone()], &[]);
    vols.converge(&[(vm, std::process::id())]);
    let o = find(&vols.report(), a).unwrap();
    assert_eq!(o.reverted_gen, 0);
    assert!(o.revert_error.unwrap().contains("stop it first"));
    assert!(vols.revert_pending(a), "a root volume's VM waits for it");
    // A new snapshot while held goes through its QMP (none answers here).
    let s2 = Uuid::new_v4();
    va.snapshots.push(s2);
    vols.want(&[va.clone()], &[]);
    vols.converge(&[(vm, std::process::id())]);
    let o = find(&vols.report(), a).unwrap();
    let e = o.snapshots.iter().find(|s| s.id == s2).unwrap();
    assert!(e.error.is_some() && e.consistency.is_none(), "{e:?}");
    drop(open);

    // Released: reverted (gen 1), the other snapshot taken offline.
    vols.converge(&[]);
    let o = find(&vols.report(), a).unwrap();
    assert_eq!((o.reverted_gen, o.revert_error.clone()), (1, None));
    assert!(o.snapshots.iter().all(|s| s.error.is_none()), "{o:?}");
    assert!(!vols.revert_pending(a));
    // A restarted agent with the same desired state never reverts again.
    let mtime = std::fs::metadata(vols.path(a)).unwrap().modified().unwrap();
    let again = Volumes::open(&dir, tmp.path()).unwrap();
    again.want(&[va.clone()], &[]);
    again.converge(&[]);
    assert_eq!(find(&again.report(), a).unwrap().reverted_gen, 1);
    assert_eq!(
        std::fs::metadata(vols.path(a)).unwrap().modified().unwrap(),
        mtime
    );

    // A clone of s1, asked bigger: made from it and grown.
    let c = Uuid::new_v4();
    let mut vc = desired(c, 16);
    vc.clone_from = Some(CloneSource {
        of: SnapshotOf::Volume,
        disk: a,
        snapshot: s1,
    });
    again.want(&[va.clone(), vc.clone()], &[]);
    again.converge(&[]);
    let oc = find(&again.report(), c).unwrap();
    assert_eq!((oc.size_bytes, oc.error), (16 << 20, None));
    // A clone of a snapshot that is not there: its error, no file.
    let d = Uuid::new_v4();
    let mut vd = desired(d, 8);
    vd.clone_from = Some(CloneSource {
        of: SnapshotOf::Volume,
        disk: a,
        snapshot: Uuid::new_v4(),
    });
    again.want(&[va.clone(), vd], &[]);
    again.converge(&[]);
    assert!(find(&again.report(), d)
        .unwrap()
        .error
        .unwrap()
        .contains("cloning"));
    assert!(!again.path(d).exists());

    // Snapshots deleted, then the volume with its records.
    va.deleted_snapshots = va.snapshots.clone();
    va.snapshots.clear();
    again.want(&[va.clone()], &[]);
    again.converge(&[]);
    assert!(find(&again.report(), a).unwrap().snapshots.is_empty());
    assert!(snapfiles::tags(&again.path(a)).unwrap().is_empty());
    again.want(&[], &[a]);
    again.converge(&[]);
    assert!(!again.path(a).exists());
    assert!(!again.path(a).with_extension("revert").exists());
}

#[test]
fn a_volume_is_cloned_from_a_snapshot_of_an_instances_root_disk() {
    use cm_api::agent::CloneSource;
    use cm_api::snapshot::SnapshotOf;
    let tmp = tempfile::tempdir().unwrap();
    let vols = Volumes::open(&tmp.path().join("volumes"), &tmp.path().join("instances")).unwrap();
    // A root disk as a VM has it: an overlay on a base image.
    let (vm, s) = (Uuid::new_v4(), Uuid::new_v4());
    let vm_dir = tmp.path().join("instances").join(vm.to_string());
    std::fs::create_dir_all(&vm_dir).unwrap();
    let base = tmp.path().join("base.qcow2");
    files::create(tmp.path(), Uuid::nil(), 8 << 20).unwrap();
    std::fs::rename(files::path(tmp.path(), Uuid::nil()), &base).unwrap();
    let root = vm_dir.join("disk.qcow2");
    crate::vm::disk::create_overlay(&base, "qcow2", &root, 0).unwrap();
    snapfiles::take_offline(&root, s).unwrap();
    let c = Uuid::new_v4();
    let mut vc = desired(c, 8);
    vc.clone_from = Some(CloneSource {
        of: SnapshotOf::InstanceRoot,
        disk: vm,
        snapshot: s,
    });
    vols.want(&[vc], &[]);
    vols.converge(&[]);
    let o = find(&vols.report(), c).unwrap();
    assert_eq!((o.size_bytes, o.error), (8 << 20, None));
    // Standalone: the base is flattened in, no backing file.
    let out = std::process::Command::new("qemu-img")
        .args(["info", "--output=json"])
        .arg(vols.path(c))
        .output()
        .unwrap();
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(info.get("backing-filename").is_none(), "{info}");
}

#[test]
fn a_root_volume_is_grown_only_once_its_vm_let_go() {
    let tmp = tempfile::tempdir().unwrap();
    let vols = Volumes::open(&tmp.path().join("volumes"), &tmp.path().join("instances")).unwrap();
    let (v, vm) = (Uuid::new_v4(), Uuid::new_v4());
    vols.want(&[desired(v, 16)], &[]);
    vols.converge(&[]);
    vols.want_roles(&[], HashMap::from([(vm, v)]));
    vols.want(&[desired(v, 32)], &[]);
    // Its VM runs on it (this process stands for its QEMU): no QMP node of
    // ours to grow, no qemu-img on a held file; no error either.
    let open = std::fs::File::open(vols.path(v)).unwrap();
    vols.converge(&[(vm, std::process::id())]);
    let o = find(&vols.report(), v).unwrap();
    assert_eq!((o.size_bytes, o.error), (16 << 20, None));
    drop(open);
    vols.converge(&[]);
    assert_eq!(find(&vols.report(), v).unwrap().size_bytes, 32 << 20);
    // Deleted while still named as a root (a stale role): removed.
    vols.want(&[desired(v, 32)], &[v]);
    vols.converge(&[]);
    assert!(!vols.path(v).exists());
    assert!(find(&vols.report(), v).is_none());
}
