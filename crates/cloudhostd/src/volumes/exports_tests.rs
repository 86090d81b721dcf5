//! A restore's export: a backup of a chain flattened into the export file
//! (real qemu-img), and where a chain's disk is found.

use super::*;
use crate::backup::chains::Disk;
use crate::backup::tests::{qemu_io, same};
use cm_api::agent::DesiredChain;

const MIB: u64 = 1 << 20;

#[test]
fn a_backup_flattens_into_the_export_and_a_missing_or_busy_chain_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let vols = Volumes::open(&tmp.path().join("volumes"), &tmp.path().join("instances")).unwrap();
    let vol = Uuid::new_v4();
    let file = vols.path(vol);
    crate::backup::img::create(&file, 16 * MIB, None).unwrap();
    qemu_io(&file, "write -P 0x44 0 4M");
    let disk = Disk {
        file: file.clone(),
        holder: None,
    };
    let dref = DiskRef {
        of: SnapshotOf::Volume,
        disk: vol,
        backup: None,
    };
    let (b1, b2) = (Uuid::new_v4(), Uuid::new_v4());
    let c = &vols.chains;
    c.want(&[DesiredChain {
        disk: dref,
        backups: vec![b1],
        deleted: vec![],
        made: Vec::new(),
        mirror: None,
    }]);
    for w in c.take_work() {
        c.pass(&w, &disk);
    }
    let at_b1 = tmp.path().join("at-b1.qcow2");
    std::fs::copy(&file, &at_b1).unwrap();
    qemu_io(&file, "write -P 0x55 2M 4M");
    c.want(&[DesiredChain {
        disk: dref,
        backups: vec![b1, b2],
        deleted: vec![],
        made: Vec::new(),
        mirror: None,
    }]);
    for w in c.take_work() {
        c.pass(&w, &disk);
    }
    assert_eq!(c.report().len(), 2, "{:?}", c.report());

    let name = cm_api::backup::chain_name(SnapshotOf::Volume, vol);
    let out = vols.exports_dir().join("e1.qcow2");
    flatten_backup(c, &name, b2, &out).unwrap();
    assert!(same(&out, &file));
    let out1 = vols.exports_dir().join("e2.qcow2");
    flatten_backup(c, &name, b1, &out1).unwrap();
    assert!(same(&out1, &at_b1));

    let dst = vols.exports_dir().join("e3.qcow2");
    assert!(matches!(
        flatten_backup(c, &name, Uuid::new_v4(), &dst),
        Err(Fail::Refused(_))
    ));
    assert!(matches!(
        flatten_backup(c, "volume-nothing", b1, &dst),
        Err(Fail::Refused(_))
    ));
    let held = crate::backup::Chain::open(c.root(), &name).unwrap();
    assert!(matches!(
        flatten_backup(c, &name, b1, &dst),
        Err(Fail::Transient(_))
    ));
    drop(held);
    assert!(!dst.exists());
}

#[test]
fn a_chains_disk_is_the_volume_or_the_root_and_its_holder_the_running_vm() {
    let tmp = tempfile::tempdir().unwrap();
    let vols = Volumes::open(&tmp.path().join("volumes"), &tmp.path().join("instances")).unwrap();
    let (vm, vol, rootvol) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let of = |of, disk| DiskRef {
        of,
        disk,
        backup: None,
    };
    // Nothing runs: offline, the files where the host keeps them.
    let d = vols.backup_disk(of(SnapshotOf::Volume, vol), &[]);
    assert_eq!(d.file, vols.path(vol));
    assert!(d.holder.is_none());
    let d = vols.backup_disk(of(SnapshotOf::InstanceRoot, vm), &[]);
    assert_eq!(
        d.file,
        tmp.path()
            .join("instances")
            .join(vm.to_string())
            .join("disk.qcow2")
    );
    assert!(d.holder.is_none());
    // Its QEMU runs: the root drive, found by its file.
    let d = vols.backup_disk(of(SnapshotOf::InstanceRoot, vm), &[(vm, 1)]);
    let h = d.holder.unwrap();
    assert_eq!((h.vm, h.node), (vm, None));
    assert!(h.qmp.ends_with(format!("{vm}/qmp.sock")));
    // An instance booting from a root volume: that volume's file.
    vols.want_roles(&[], [(vm, rootvol)].into_iter().collect());
    let d = vols.backup_disk(of(SnapshotOf::InstanceRoot, vm), &[]);
    assert_eq!(d.file, vols.path(rootvol));
}
