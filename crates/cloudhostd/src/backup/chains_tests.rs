//! The agent's side of backups on small files with the real qemu-img,
//! qemu-io and qemu-storage-daemon: a desired chain of a disk no VM holds
//! is made offline (full, then incremental), reported from the records
//! alone, kept across an agent restart; a failure is reported and not
//! tried again; a deleted backup is removed and the one after it still
//! restores to the disk; a disk that is gone makes nothing new.

use super::*;
use crate::backup::img;
use crate::backup::tests::{qemu_io, same};
use cm_api::backup::BackupKind;

const MIB: u64 = 1 << 20;

fn desired(disk: Uuid, backups: &[Uuid], deleted: &[Uuid]) -> DesiredChain {
    DesiredChain {
        disk: DiskRef {
            of: SnapshotOf::Volume,
            disk,
            backup: None,
        },
        backups: backups.to_vec(),
        deleted: deleted.to_vec(),
        made: Vec::new(),
        mirror: None,
    }
}

/// What the agent does for one chain: the master's want, then the task.
pub(super) fn pass(c: &Chains, want: DesiredChain, disk: &Disk) {
    c.want(std::slice::from_ref(&want));
    let work = c.take_work();
    for w in work {
        c.pass(&w, disk);
    }
}

pub(super) fn by_id(c: &Chains, id: Uuid) -> ObservedBackup {
    c.report()
        .into_iter()
        .find(|b| b.id == id)
        .unwrap_or_else(|| panic!("{id} not reported: {:?}", c.report()))
}

#[test]
fn a_desired_chain_is_made_reported_kept_and_pruned() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("backups");
    let vol = Uuid::new_v4();
    let file = tmp.path().join("vol.qcow2");
    img::create(&file, 20 * MIB, None).unwrap();
    qemu_io(&file, "write -P 0x11 0 8M");
    let disk = Disk {
        file: file.clone(),
        holder: None,
    };
    let c = Chains::new(root.clone());
    let (b1, b2, b3) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());

    pass(&c, desired(vol, &[b1], &[]), &disk);
    let r1 = by_id(&c, b1);
    assert_eq!(r1.kind, Some(BackupKind::Full));
    assert_eq!(
        r1.full_reason.as_deref(),
        Some("the first backup of this chain")
    );
    assert_eq!(r1.consistency, Some(Consistency::Offline));
    assert_eq!(r1.size_bytes, 20 * MIB);
    assert!(r1.file_bytes >= 8 * MIB, "{r1:?}");
    assert_eq!(r1.error, None);
    // Nothing left to do: no task.
    c.want(&[desired(vol, &[b1], &[])]);
    assert!(c.take_work().is_empty());

    qemu_io(&file, "write -P 0x22 1M 2M");
    pass(&c, desired(vol, &[b1, b2], &[]), &disk);
    let r2 = by_id(&c, b2);
    assert_eq!(r2.kind, Some(BackupKind::Incremental));
    assert_eq!(r2.full_reason, None);
    assert!(r2.file_bytes < 4 * MIB, "{r2:?}");
    let rec = record::load(&root.join(chain_name(SnapshotOf::Volume, vol)), b2).unwrap();
    assert_eq!(rec.changed_bytes, 2 * MIB);

    // An agent restart: the same report from the records alone.
    let again = Chains::new(root.clone());
    again.scan().unwrap();
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&root).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o700);
    assert_eq!(again.report(), c.report());

    // Another increment, then the middle one and the first removed: the
    // last one still reads as the disk.
    qemu_io(&file, "write -P 0x33 12M 1M");
    pass(&c, desired(vol, &[b1, b2, b3], &[]), &disk);
    assert_eq!(by_id(&c, b3).kind, Some(BackupKind::Incremental));
    pass(&c, desired(vol, &[b1, b3], &[b2]), &disk);
    assert!(c.report().iter().all(|b| b.id != b2));
    pass(&c, desired(vol, &[b3], &[b1]), &disk);
    let ids: Vec<Uuid> = c.report().iter().map(|b| b.id).collect();
    assert_eq!(ids, vec![b3]);
    let flat = tmp.path().join("flat.qcow2");
    let name = chain_name(SnapshotOf::Volume, vol);
    Chain::open(&root, &name)
        .unwrap()
        .flatten(b3, &flat)
        .unwrap();
    assert!(same(&flat, &file));
    assert!(img::info(&flat, false).unwrap().backing.is_none());
    // Records go with their files.
    assert!(!root.join(&name).join(format!("{b1}.json")).exists());
    assert!(!root.join(&name).join(format!("{b2}.json")).exists());
}

#[test]
fn a_failure_is_reported_once_and_a_gone_disk_makes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let c = Chains::new(tmp.path().join("backups"));
    let vol = Uuid::new_v4();
    // Not a qcow2: the backup fails.
    let file = tmp.path().join("vol.qcow2");
    std::fs::write(&file, b"not an image").unwrap();
    let disk = Disk {
        file: file.clone(),
        holder: None,
    };
    let b = Uuid::new_v4();
    pass(&c, desired(vol, &[b], &[]), &disk);
    let r = by_id(&c, b);
    assert!(r.error.is_some(), "{r:?}");
    assert_eq!(r.kind, None);
    // Not tried again while listed.
    c.want(&[desired(vol, &[b], &[])]);
    assert!(c.take_work().is_empty());
    // Forgotten once the master stops listing it.
    c.want(&[desired(vol, &[], &[])]);
    assert!(c.report().is_empty());

    // A disk that is gone: nothing made, nothing failed.
    let gone = Disk {
        file: tmp.path().join("gone.qcow2"),
        holder: None,
    };
    let other = Uuid::new_v4();
    let b2 = Uuid::new_v4();
    pass(&c, desired(other, &[b2], &[]), &gone);
    assert!(c.report().is_empty(), "{:?}", c.report());
}

#[test]
fn chain_names_give_their_disks_back() {
    let id = Uuid::new_v4();
    for of in [SnapshotOf::Volume, SnapshotOf::InstanceRoot] {
        let d = disk_of(&chain_name(of, id)).unwrap();
        assert_eq!((d.of, d.disk, d.backup), (of, id, None));
    }
    assert!(disk_of("volume-nope").is_none());
    assert!(disk_of("other").is_none());
}

#[test]
fn after_the_newest_is_removed_the_next_backup_is_full_and_says_why() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("backups");
    let vol = Uuid::new_v4();
    let file = tmp.path().join("vol.qcow2");
    img::create(&file, 16 * MIB, None).unwrap();
    qemu_io(&file, "write -P 0x11 0 4M");
    let disk = Disk {
        file: file.clone(),
        holder: None,
    };
    let c = Chains::new(root.clone());
    let (b1, b2, b3) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    pass(&c, desired(vol, &[b1], &[]), &disk);
    qemu_io(&file, "write -P 0x22 8M 1M");
    pass(&c, desired(vol, &[b1, b2], &[]), &disk);
    assert_eq!(by_id(&c, b2).kind, Some(BackupKind::Incremental));
    // The newest removed: the bitmap counts from it, so an increment over
    // b1 would miss the 0x22 write.
    pass(&c, desired(vol, &[b1], &[b2]), &disk);
    qemu_io(&file, "write -P 0x33 12M 1M");
    pass(&c, desired(vol, &[b1, b3], &[]), &disk);
    let r3 = by_id(&c, b3);
    assert_eq!(r3.kind, Some(BackupKind::Full), "{r3:?}");
    assert_eq!(
        r3.full_reason,
        Some(format!("the chain's newest backup {b2} was removed"))
    );
    let flat = tmp.path().join("flat.qcow2");
    Chain::open(&root, &chain_name(SnapshotOf::Volume, vol))
        .unwrap()
        .flatten(b3, &flat)
        .unwrap();
    assert!(same(&flat, &file));
}

#[test]
fn a_launch_and_an_offline_backup_of_one_disk_never_overlap() {
    let tmp = tempfile::tempdir().unwrap();
    let c = Chains::new(tmp.path().join("backups"));
    let vol = Uuid::new_v4();
    let name = chain_name(SnapshotOf::Volume, vol);
    let want = desired(vol, &[Uuid::new_v4()], &[]);
    // A VM launching on the disk: its backup waits.
    assert!(c.begin_launch(std::slice::from_ref(&name)));
    c.want(std::slice::from_ref(&want));
    assert!(c.take_work().is_empty());
    c.end_launch(std::slice::from_ref(&name));
    // Launched: the backup may start; while it runs, a launch waits.
    assert_eq!(c.take_work().len(), 1);
    assert!(!c.begin_launch(std::slice::from_ref(&name)));
    // Other disks are not held back.
    let other = chain_name(SnapshotOf::Volume, Uuid::new_v4());
    assert!(c.begin_launch(&[other]));
}
