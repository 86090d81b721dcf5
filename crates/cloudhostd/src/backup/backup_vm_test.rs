//! Online backups of a running VM's disks: the test guest (`make image`)
//! started by this host's own launch code under TCG with a volume on its
//! command line, as the agent starts one. Writes go through QEMU itself
//! (HMP `qemu-io` on the volume's node: the guest need not help). A full
//! backup, 10 MiB written, an incremental one: each restores to what the
//! disk held; the root drive (found by its file) backs up too; after a
//! clean shutdown the bitmap QEMU kept is on the file, and an offline
//! increment continues the chain. What an agent that died mid-backup
//! leaves in QEMU is swept by the next backup, which is full. Figures printed beside `cp`.

use super::img::{self, Bitmap};
use super::job;
use super::*;
use crate::vm::guestnet::GuestNet;
use crate::vm::qemu::{self, Launch, VmPaths};
use cm_api::agent::{DesiredInstance, ImageRef, Power};
use cm_api::image::ImageKind;
use cm_api::instance::Accel;
use cm_api::words::ResolvedAccel;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use uuid::Uuid;

const MIB: u64 = 1 << 20;
/// The volume: 1 GiB with 512 MiB written, as `cmbench storage` measures.
const VOL: u64 = 1024 * MIB;
const T: Duration = Duration::from_secs(300);

pub(super) struct KillOnDrop(pub(super) PathBuf, pub(super) Uuid);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = qemu::read_pid(&self.0) {
            qemu::kill(pid, self.1);
        }
    }
}

pub(super) fn spec(id: Uuid, vol: Uuid) -> DesiredInstance {
    DesiredInstance {
        health: None,
        id,
        name: "backup-vm".into(),
        power: Power::Running,
        boot_gen: 1,
        reboot_gen: 0,
        stop_timeout_secs: 0,
        memory_mib: 192,
        vcpus: 1,
        accel: Accel::Tcg,
        image: ImageRef {
            id: Uuid::nil(),
            name: "cm-test-disk".into(),
            kind: ImageKind::Disk,
            files: vec![],
            cmdline: None,
        },
        ports: vec![],
        disk_gib: 0,
        boot: None,
        volumes: vec![cm_api::agent::DesiredAttachment {
            volume: vol,
            name: "data".into(),
        }],
        force_detach: vec![],
        root_snapshots: Vec::new(),
        root_deleted_snapshots: Vec::new(),
        root_revert: None,
        root_volume: None,
    }
}

/// Write through the guest's disk device itself (its qdev id is the
/// volume's node name, vm/hotplug.rs; the block backend is on its virtio
/// backend), as the guest's own writes go: the device does not share
/// write access with another user of the node.
pub(super) fn hmp_io(qmp: &Path, device: &str, cmd: &str) {
    let out = crate::vm::qmp::call(
        qmp,
        "human-monitor-command",
        Some(json!({ "command-line": format!("qemu-io -d /machine/peripheral/{device}/virtio-backend \"{cmd}\"") })),
    )
    .unwrap();
    let text = out.as_str().unwrap_or_default();
    // Quiet when it worked; an error is text.
    assert!(
        text.trim().is_empty() || text.starts_with("wrote "),
        "{text}"
    );
}

pub(super) fn qemu_io(file: &Path, cmd: &str) {
    let out = Command::new("qemu-io")
        .args(["-f", "qcow2", "-c", cmd])
        .arg(file)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success() && !text.contains("verification failed"),
        "{cmd}: {text}"
    );
}

/// Seconds and MB/s of `cp --sparse=always` of `file`.
fn cp_figure(file: &Path, dir: &Path) -> (f64, f64) {
    let dst = dir.join("cp-copy");
    let t = Instant::now();
    let st = Command::new("cp")
        .arg("--sparse=always")
        .arg(file)
        .arg(&dst)
        .status()
        .unwrap();
    assert!(st.success());
    let s = t.elapsed().as_secs_f64();
    let bytes = std::fs::metadata(file).unwrap().len() as f64;
    std::fs::remove_file(&dst).unwrap();
    (s, bytes / s / 1e6)
}

fn figure(what: &str, b: &Backup) {
    let s = b.took.as_secs_f64();
    let bytes = match b.kind {
        BackupKind::Incremental { changed_bytes } => changed_bytes,
        BackupKind::Full { .. } => b.file_bytes,
    };
    println!(
        "{what}: {:?}, file {:.1} MiB, {s:.3} s, {:.0} MB/s of data copied",
        b.kind,
        b.file_bytes as f64 / MIB as f64,
        bytes as f64 / s / 1e6
    );
}

#[test]
fn a_running_vm_backs_up_full_then_incrementally_and_restores() {
    let tmp = tempfile::Builder::new()
        .prefix("cmbk")
        .tempdir_in("/tmp")
        .unwrap();
    let data = tmp.path();
    let (id, vol) = (Uuid::new_v4(), Uuid::new_v4());
    let paths = VmPaths::new(data.join("instances").join(id.to_string()));
    std::fs::create_dir_all(paths.disk().parent().unwrap()).unwrap();
    let base = test_infra::paths::test_disk();
    img::run(
        "create",
        &[
            "create".as_ref(),
            "-q".as_ref(),
            "-f".as_ref(),
            "qcow2".as_ref(),
            "-b".as_ref(),
            base.as_os_str(),
            "-F".as_ref(),
            "qcow2".as_ref(),
            paths.disk().as_os_str(),
        ],
    )
    .unwrap();
    let vfile = data.join("vol.qcow2");
    img::create(&vfile, VOL, None).unwrap();
    qemu_io(&vfile, "write -P 0x11 0 512M");
    let s = spec(id, vol);
    let net = GuestNet {
        restricted: true,
        master_port: 8107,
        relay: "/bin/false".into(),
    };
    let _kill = KillOnDrop(paths.pidfile(), id);
    let volumes = [(vol, vfile.clone())];
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
        volumes: &volumes,
    })
    .unwrap();
    let qmp = paths.qmp();
    let node = cm_api::volume::qemu_node(vol);
    let chain = Chain::open(&data.join("backups"), "vol").unwrap();
    let online = Source::Online {
        qmp: &qmp,
        node: &node,
    };

    let full = backup(&chain, online, T).unwrap();
    assert_eq!(
        full.kind,
        BackupKind::Full {
            reason: FullReason::FirstInChain
        }
    );
    assert_eq!(job::node_state(&qmp, &node).unwrap().1, Bitmap::Consistent);
    hmp_io(&qmp, &node, "write -P 0x5a 0 10M");
    let inc = backup(&chain, online, T).unwrap();
    assert_eq!(
        inc.kind,
        BackupKind::Incremental {
            changed_bytes: 10 * MIB
        }
    );
    assert!(inc.file_bytes < 12 * MIB, "{}", inc.file_bytes);
    figure("online full", &full);
    figure("online incremental", &inc);
    let (cp_s, cp_mbs) = cp_figure(&vfile, data);
    println!(
        "cp --sparse=always of the volume file ({} MiB allocated): {cp_s:.3} s, {cp_mbs:.0} MB/s of its apparent size",
        std::os::unix::fs::MetadataExt::blocks(&std::fs::metadata(&vfile).unwrap()) * 512 / MIB
    );

    let r1 = data.join("r1.qcow2");
    chain.flatten(full.file.id, &r1).unwrap();
    qemu_io(&r1, "read -P 0x11 0 512M");
    qemu_io(&r1, "read -P 0 512M 512M");
    let r2 = data.join("r2.qcow2");
    chain.flatten(inc.file.id, &r2).unwrap();
    qemu_io(&r2, "read -P 0x5a 0 10M");
    qemu_io(&r2, "read -P 0x11 10M 502M");
    qemu_io(&r2, "read -P 0 512M 512M");

    // An agent that died mid-backup: `pending`, a `.part`, and in QEMU its
    // job and target node. Reopened, the next backup clears QEMU of them
    // and is full, saying why.
    let dead = Uuid::new_v4();
    let (tnode, jobname) = job::names(dead);
    chain.set_pending(dead).unwrap();
    let part = Chain::part(&chain.next(chain.list().unwrap().last(), dead));
    img::create(&part, VOL, None).unwrap();
    let call = |cmd: &str, args: serde_json::Value| {
        crate::vm::qmp::call(&qmp, cmd, Some(args)).unwrap();
    };
    call(
        "blockdev-add",
        json!({ "driver": "qcow2", "node-name": tnode,
                "file": { "driver": "file", "filename": part.display().to_string() } }),
    );
    call(
        "blockdev-backup",
        json!({ "device": node, "target": tnode, "sync": "full",
                "job-id": jobname, "auto-dismiss": false }),
    );
    drop(chain);
    let chain = Chain::open(&data.join("backups"), "vol").unwrap();
    assert!(!part.exists());
    let after = backup(&chain, online, T).unwrap();
    assert_eq!(
        after.kind,
        BackupKind::Full {
            reason: FullReason::Interrupted(dead.to_string())
        }
    );
    let jobs = crate::vm::qmp::call(&qmp, "query-jobs", None).unwrap();
    assert_eq!(jobs, json!([]));
    let nodes = crate::vm::qmp::call(&qmp, "query-named-block-nodes", None).unwrap();
    assert!(!nodes.to_string().contains(&tnode), "{nodes}");
    let r3 = data.join("r3.qcow2");
    chain.flatten(after.file.id, &r3).unwrap();
    qemu_io(&r3, "read -P 0x5a 0 10M");
    qemu_io(&r3, "read -P 0x11 10M 502M");

    // The root drive, made with -drive: its node is found by its file.
    let root_node = job::node_of_file(&qmp, &paths.disk()).unwrap();
    let roots = Chain::open(&data.join("backups"), "root").unwrap();
    let root = backup(
        &roots,
        Source::Online {
            qmp: &qmp,
            node: &root_node,
        },
        T,
    )
    .unwrap();
    figure("online full of the root drive", &root);
    let rr = data.join("root-restored.qcow2");
    roots.flatten(root.file.id, &rr).unwrap();
    assert_eq!(
        img::info(&rr, false).unwrap().virtual_size,
        img::info(&paths.disk(), true).unwrap().virtual_size
    );

    // A clean shutdown stores the bitmap; the chain goes on offline.
    crate::vm::qmp::call(&qmp, "quit", None).unwrap();
    let pid = qemu::read_pid(&paths.pidfile()).unwrap_or(0);
    test_infra::wait_until("QEMU gone", Duration::from_secs(20), || {
        (!qemu::is_ours(pid, id)).then_some(())
    })
    .unwrap();
    assert_eq!(img::info(&vfile, false).unwrap().bitmap, Bitmap::Consistent);
    qemu_io(&vfile, "write -P 0x77 200M 1M");
    let off = backup(&chain, Source::Offline(&vfile), T).unwrap();
    assert_eq!(off.kind, BackupKind::Incremental { changed_bytes: MIB });
    let r4 = data.join("r4.qcow2");
    chain.flatten(off.file.id, &r4).unwrap();
    let same = Command::new("qemu-img")
        .args(["compare", "-q"])
        .arg(&r4)
        .arg(&vfile)
        .status()
        .unwrap();
    assert!(same.success());

    // For the figures: the same disk's offline full (qemu-img convert) into
    // a chain of its own (it resets the disk's bitmap: done last).
    let other = Chain::open(&data.join("backups"), "offline").unwrap();
    let off_full = backup(&other, Source::Offline(&vfile), T).unwrap();
    figure("offline full", &off_full);
    figure("offline incremental", &off);
    assert_eq!(
        off_full.kind,
        BackupKind::Full {
            reason: FullReason::FirstInChain
        }
    );
    let r5 = data.join("r5.qcow2");
    other.flatten(off_full.file.id, &r5).unwrap();
    let same = Command::new("qemu-img")
        .args(["compare", "-q"])
        .arg(&r5)
        .arg(&vfile)
        .status()
        .unwrap();
    assert!(same.success());
}
