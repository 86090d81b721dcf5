//! The agent's backup path (backup/chains.rs, volumes/backups.rs) on a
//! running VM: the test guest started by this host's own launch code
//! under TCG with a volume of the host's volumes directory on its command
//! line. The master's desired chain of that attached volume: the disk is
//! found held by the VM (online, its node), a full backup is made and
//! reported; 10 MiB written through the guest's device, a second backup is
//! an increment of those bytes; the first deleted, the second still
//! flattens to the disk (`qemu-img compare`); an agent killed mid-backup
//! (its `pending`, `.part`, job and target node left behind) restarts, the
//! backup is made again, full and saying why, and reported once. Timings
//! printed.

use super::backup_vm_test::{hmp_io, qemu_io, spec, KillOnDrop};
use super::chains::Disk;
use super::*;
use crate::vm::guestnet::GuestNet;
use crate::vm::qemu::{self, Launch, VmPaths};
use crate::volumes::Volumes;
use cm_api::agent::{DesiredChain, DiskRef, ObservedBackup};
use cm_api::backup::{chain_name, BackupKind};
use cm_api::snapshot::{Consistency, SnapshotOf};
use cm_api::words::ResolvedAccel;
use serde_json::json;
use std::path::Path;
use std::process::Command;
use uuid::Uuid;

const MIB: u64 = 1 << 20;
const VOL: u64 = 1024 * MIB;

/// The agent's steps for a desired state: the want, the disk located with
/// the running QEMUs, one pass per chain with work.
fn agent_pass(vols: &Volumes, want: &DesiredChain, qemus: &[(Uuid, u32)]) -> Disk {
    vols.chains.want(std::slice::from_ref(want));
    let disk = vols.backup_disk(want.disk, qemus);
    for w in vols.chains.take_work() {
        vols.chains.pass(&w, &disk);
    }
    disk
}

fn reported(vols: &Volumes, id: Uuid) -> ObservedBackup {
    let all = vols.chains.report();
    let mine: Vec<_> = all.iter().filter(|b| b.id == id).cloned().collect();
    assert_eq!(mine.len(), 1, "{id} reported {} times: {all:?}", mine.len());
    mine[0].clone()
}

fn same_as_running_disk(flat: &Path, disk: &Path) -> bool {
    // -U: the running QEMU holds the disk's lock.
    Command::new("qemu-img")
        .args(["compare", "-q", "-U", "-f", "qcow2", "-F", "qcow2"])
        .arg(flat)
        .arg(disk)
        .status()
        .unwrap()
        .success()
}

#[test]
fn the_agent_backs_up_a_running_vms_volume_from_its_desired_chain() {
    let tmp = tempfile::Builder::new()
        .prefix("cmbkc")
        .tempdir_in("/tmp")
        .unwrap();
    let data = tmp.path();
    let (id, vol) = (Uuid::new_v4(), Uuid::new_v4());
    let vols = Volumes::open(&data.join("volumes"), &data.join("instances")).unwrap();
    let paths = VmPaths::new(data.join("instances").join(id.to_string()));
    std::fs::create_dir_all(paths.disk().parent().unwrap()).unwrap();
    let base = test_infra::paths::test_disk();
    let st = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
        .arg(&base)
        .arg(paths.disk())
        .status()
        .unwrap();
    assert!(st.success());
    let vfile = vols.path(vol);
    img::create(&vfile, VOL, None).unwrap();
    qemu_io(&vfile, "write -P 0x11 0 512M");
    let s = spec(id, vol);
    let net = GuestNet {
        restricted: true,
        master_port: 8107,
        relay: "/bin/false".into(),
    };
    let _kill = KillOnDrop(paths.pidfile(), id);
    qemu::launch(&Launch {
        qemu: Path::new("qemu-system-x86_64"),
        spec: &s,
        paths: &paths,
        accel: ResolvedAccel::Tcg,
        forward_bind: "127.0.0.1",
        kernel: None,
        root: None,
        boot_file: None,
        smbios_file: None,
        net: &net,
        volumes: &[(vol, vfile.clone())],
    })
    .unwrap();
    let pid = qemu::read_pid(&paths.pidfile()).unwrap();
    let qemus = [(id, pid)];
    let dref = DiskRef {
        of: SnapshotOf::Volume,
        disk: vol,
        backup: None,
    };
    let want = |backups: &[Uuid], deleted: &[Uuid]| DesiredChain {
        disk: dref,
        backups: backups.to_vec(),
        deleted: deleted.to_vec(),
        made: Vec::new(),
        mirror: None,
    };
    let (b1, b2, b3) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());

    // The first: online (the VM holds the volume), full.
    let disk = agent_pass(&vols, &want(&[b1], &[]), &qemus);
    let h = disk
        .holder
        .as_ref()
        .expect("the running VM holds the volume");
    assert_eq!(
        (h.vm, h.node.clone()),
        (id, Some(cm_api::volume::qemu_node(vol)))
    );
    let r1 = reported(&vols, b1);
    assert_eq!(r1.error, None, "{r1:?}");
    assert_eq!(r1.kind, Some(BackupKind::Full));
    assert_eq!(
        r1.full_reason.as_deref(),
        Some("the first backup of this chain")
    );
    // No cm-guest in this guest: crash-consistent.
    assert_eq!(r1.consistency, Some(Consistency::Crash));
    assert_eq!(r1.size_bytes, VOL);
    assert!(r1.file_bytes >= 512 * MIB, "{r1:?}");

    // 10 MiB written through the guest's device: an increment of them.
    hmp_io(
        &paths.qmp(),
        &cm_api::volume::qemu_node(vol),
        "write -P 0x5a 100M 10M",
    );
    agent_pass(&vols, &want(&[b1, b2], &[]), &qemus);
    let r2 = reported(&vols, b2);
    assert_eq!(r2.kind, Some(BackupKind::Incremental), "{r2:?}");
    assert_eq!(r2.consistency, Some(Consistency::Crash));
    assert!(r2.file_bytes < 12 * MIB, "{r2:?}");
    let cdir = vols.chains.root().join(chain_name(SnapshotOf::Volume, vol));
    let rec2 = record::load(&cdir, b2).unwrap();
    assert_eq!(rec2.changed_bytes, 10 * MIB);
    println!(
        "agent path, online full of the volume (1 GiB, 512 MiB written): {} ms, file {:.1} MiB",
        r1.took_ms,
        r1.file_bytes as f64 / MIB as f64
    );
    println!(
        "agent path, online incremental after 10 MiB written: {} ms, {} bytes changed, file {:.1} MiB",
        r2.took_ms,
        rec2.changed_bytes,
        r2.file_bytes as f64 / MIB as f64
    );

    // The first deleted: the second, rebased standalone, is still the disk.
    agent_pass(&vols, &want(&[b2], &[b1]), &qemus);
    let ids: Vec<Uuid> = vols.chains.report().iter().map(|b| b.id).collect();
    assert_eq!(ids, vec![b2]);
    let flat = data.join("flat.qcow2");
    let name = chain_name(SnapshotOf::Volume, vol);
    Chain::open(vols.chains.root(), &name)
        .unwrap()
        .flatten(b2, &flat)
        .unwrap();
    assert!(same_as_running_disk(&flat, &vfile));

    // An agent killed while making b3: its pending id, a `.part`, and in
    // QEMU its target node and a running job.
    {
        let chain = Chain::open(vols.chains.root(), &name).unwrap();
        chain.set_pending(b3).unwrap();
        let part = Chain::part(&chain.next(chain.list().unwrap().last(), b3));
        img::create(&part, VOL, None).unwrap();
        let (tnode, jobname) = job::names(b3);
        let call = |cmd: &str, args: serde_json::Value| {
            crate::vm::qmp::call(&paths.qmp(), cmd, Some(args)).unwrap();
        };
        call(
            "blockdev-add",
            json!({ "driver": "qcow2", "node-name": tnode,
                    "file": { "driver": "file", "filename": part.display().to_string() } }),
        );
        call(
            "blockdev-backup",
            json!({ "device": cm_api::volume::qemu_node(vol), "target": tnode,
                    "sync": "full", "job-id": jobname, "auto-dismiss": false }),
        );
    }
    drop(vols);
    // The agent starts again: no `.part`, b3 not reported.
    let vols = Volumes::open(&data.join("volumes"), &data.join("instances")).unwrap();
    let left: Vec<String> = std::fs::read_dir(&cdir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(left.iter().all(|n| !n.ends_with(".part")), "{left:?}");
    let ids: Vec<Uuid> = vols.chains.report().iter().map(|b| b.id).collect();
    assert_eq!(ids, vec![b2]);
    // The master still lists it: made again, full, saying why, once.
    agent_pass(&vols, &want(&[b2, b3], &[]), &qemus);
    let r3 = reported(&vols, b3);
    assert_eq!(r3.kind, Some(BackupKind::Full), "{r3:?}");
    assert_eq!(
        r3.full_reason,
        Some(format!("the previous backup {b3} did not finish"))
    );
    reported(&vols, b2);
    let jobs = crate::vm::qmp::call(&paths.qmp(), "query-jobs", None).unwrap();
    assert_eq!(jobs, json!([]));
    let flat3 = data.join("flat3.qcow2");
    Chain::open(vols.chains.root(), &name)
        .unwrap()
        .flatten(b3, &flat3)
        .unwrap();
    assert!(same_as_running_disk(&flat3, &vfile));
    println!("agent path, full after a killed backup: {} ms", r3.took_ms);
}
