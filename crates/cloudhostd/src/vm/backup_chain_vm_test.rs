//! Backups through the whole agent (desired state in, report out) of a
//! volume a real guest has mounted (the test image under TCG, cm-guest in
//! it): the volume pass starts the chain's task, the backup is online and
//! frozen by cm-guest around the job's start (consistency `filesystem`),
//! reported by `HostReport.backups`; a change written, the next one an
//! increment; the first deleted, the second still holds the file written.

use super::hotplug_vm_test::{cached_test_image, context, observed, sh, wait, KillOnDrop};
use super::*;
use crate::runtime::Runtime;
use cm_api::agent::{
    AttachmentState, DesiredAttachment, DesiredChain, DesiredInstance, DesiredVolume, DiskRef,
    ObservedBackup, ObservedState, Power,
};
use cm_api::backup::{chain_name, BackupKind};
use cm_api::instance::Accel;
use cm_api::snapshot::{Consistency, SnapshotOf};
use std::time::{Duration, Instant};
use test_infra::console::Console;

fn state(
    gen: u64,
    spec: &DesiredInstance,
    vol: &DesiredVolume,
    chain: DesiredChain,
) -> DesiredState {
    DesiredState {
        cloud_id: Uuid::nil(),
        generation: gen,
        instances: vec![spec.clone()],
        requests: vec![],
        report_interval_secs: 1,
        deleted: vec![],
        volumes: vec![vol.clone()],
        deleted_volumes: vec![],
        exports: Vec::new(),
        chains: vec![chain],
    }
}

fn reported(vms: &Vms, id: Uuid) -> Option<ObservedBackup> {
    vms.backups().into_iter().find(|b| b.id == id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_mounted_volume_is_backed_up_frozen_through_the_agent() {
    let tmp = tempfile::Builder::new()
        .prefix("cmbkchain")
        .tempdir_in("/tmp")
        .unwrap();
    let data = tmp.path();
    let (id, vol) = (Uuid::new_v4(), Uuid::new_v4());
    let (b1, b2) = (Uuid::new_v4(), Uuid::new_v4());
    let serial = cm_api::volume::disk_serial(vol);
    let paths = qemu::VmPaths::new(data.join("instances").join(id.to_string()));
    let _kill = KillOnDrop(paths.pidfile(), id);
    let spec = DesiredInstance {
        id,
        name: "backup-vm".into(),
        power: Power::Running,
        boot_gen: 1,
        reboot_gen: 0,
        stop_timeout_secs: 0,
        memory_mib: 192,
        vcpus: 1,
        accel: Accel::Tcg,
        image: cached_test_image(data),
        ports: vec![],
        disk_gib: 0,
        boot: None,
        health: None,
        volumes: vec![DesiredAttachment {
            volume: vol,
            name: "data".into(),
        }],
        force_detach: vec![],
        root_snapshots: Vec::new(),
        root_deleted_snapshots: Vec::new(),
        root_revert: None,
        root_volume: None,
    };
    let volume = DesiredVolume {
        id: vol,
        name: "data".into(),
        size_bytes: 64 << 20,
        snapshots: Vec::new(),
        deleted_snapshots: Vec::new(),
        revert: None,
        clone_from: None,
        image: None,
        import: None,
    };
    let chain = |backups: Vec<Uuid>, deleted: Vec<Uuid>| DesiredChain {
        disk: DiskRef {
            of: SnapshotOf::Volume,
            disk: vol,
            backup: None,
        },
        backups,
        deleted,
        made: Vec::new(),
        mirror: None,
    };
    let vms = Vms::adopt(context(data)).unwrap();
    vms.apply(&state(1, &spec, &volume, chain(vec![], vec![])));
    wait("the volume attached", 40, || {
        observed(&vms, id).filter(|o| {
            o.state == ObservedState::Running
                && o.volumes.len() == 1
                && o.volumes[0].state == AttachmentState::Attached
        })
    });
    let mut console = Console::connect(&paths.console_sock(), &paths.console_log()).unwrap();
    tokio::task::block_in_place(|| console.wait_for_boot(Duration::from_secs(90)).unwrap());
    let find = format!(
        "for d in /sys/block/vd*; do [ \"$(cat $d/serial 2>/dev/null)\" = {serial} ] && echo DEV=${{d##*/}}; done"
    );
    let out = sh(&mut console, &find);
    let dev = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("DEV="))
        .filter(|d| d.chars().all(|c| c.is_ascii_alphanumeric()))
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no disk: {out}"));
    let out = sh(
        &mut console,
        &format!(
            "mke2fs -q /dev/{dev} && mkdir -p /mnt/v && mount /dev/{dev} /mnt/v && \
             echo first > /mnt/v/f && echo MOUNTED"
        ),
    );
    assert!(out.contains("MOUNTED"), "{out}");
    wait("a heartbeat", 60, || vms.ctx.beats_map().get(&id).cloned());

    // The first backup: the desired state alone starts it.
    let t = Instant::now();
    vms.apply(&state(2, &spec, &volume, chain(vec![b1], vec![])));
    let r1 = wait("the first backup reported", 60, || reported(&vms, b1));
    println!(
        "full backup reported {:?} after the desired state: {r1:?}",
        t.elapsed()
    );
    assert_eq!(r1.error, None);
    assert_eq!(r1.kind, Some(BackupKind::Full));
    assert_eq!(r1.consistency, Some(Consistency::Filesystem), "{r1:?}");
    let log = std::fs::read_to_string(paths.console_log()).unwrap();
    assert!(log.contains("cm-guest: froze [\"/mnt/v\"]"), "{log}");

    // A change, then the second: an increment, frozen too.
    let out = sh(
        &mut console,
        "dd if=/dev/urandom of=/mnt/v/g bs=1M count=4 2>/dev/null; echo second > /mnt/v/f && sync && echo WROTE",
    );
    assert!(out.contains("WROTE"), "{out}");
    vms.apply(&state(3, &spec, &volume, chain(vec![b1, b2], vec![])));
    let r2 = wait("the second backup reported", 60, || reported(&vms, b2));
    println!("incremental backup reported: {r2:?}");
    assert_eq!(r2.kind, Some(BackupKind::Incremental), "{r2:?}");
    assert_eq!(r2.consistency, Some(Consistency::Filesystem));
    assert!(r2.file_bytes < 16 << 20, "{r2:?}");

    // The first deleted: the second, made standalone, still holds the
    // file system as it was frozen.
    vms.apply(&state(4, &spec, &volume, chain(vec![b2], vec![b1])));
    wait("the first backup removed", 60, || {
        reported(&vms, b1).is_none().then_some(())
    });
    assert!(reported(&vms, b2).is_some());
    let flat = data.join("flat.qcow2");
    let name = chain_name(SnapshotOf::Volume, vol);
    tokio::task::block_in_place(|| {
        crate::backup::Chain::open(vms.ctx.volumes.chains.root(), &name)
            .unwrap()
            .flatten(b2, &flat)
            .unwrap()
    });
    // The second write is there (debugfs reads it without mounting).
    let st = std::process::Command::new("qemu-img")
        .args(["convert", "-O", "raw"])
        .arg(&flat)
        .arg(data.join("flat.raw"))
        .status()
        .unwrap();
    assert!(st.success());
    let cat = std::process::Command::new("debugfs")
        .args(["-R", "cat /f"])
        .arg(data.join("flat.raw"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&cat.stdout);
    assert!(text.contains("second"), "{text}");
}
