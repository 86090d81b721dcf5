//! Snapshots of a volume in a real guest (the test image under TCG, driven
//! by this host's code as in hotplug_vm_test.rs): taken while the guest
//! runs, with its file system frozen by cm-guest (consistency
//! `filesystem`; the console shows the freeze and the thaw), a change
//! written, the VM stopped, the volume reverted, started again: the old
//! content is read.

use super::hotplug_vm_test::{cached_test_image, context, observed, sh, wait, KillOnDrop};
use super::*;
use cm_api::agent::{
    AttachmentState, DesiredAttachment, DesiredInstance, DesiredRevert, DesiredVolume,
    ObservedState, Power,
};
use cm_api::instance::Accel;
use cm_api::snapshot::Consistency;
use std::time::{Duration, Instant};
use test_infra::console::Console;

fn state(gen: u64, spec: &DesiredInstance, vol: DesiredVolume) -> DesiredState {
    DesiredState {
        cloud_id: Uuid::nil(),
        generation: gen,
        instances: vec![spec.clone()],
        requests: vec![],
        report_interval_secs: 1,
        deleted: vec![],
        volumes: vec![vol],
        deleted_volumes: vec![],
        exports: Vec::new(),
        chains: Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_volume_snapshot_of_a_running_guest_is_frozen_and_reverted() {
    let tmp = tempfile::Builder::new()
        .prefix("cmsnap")
        .tempdir_in("/tmp")
        .unwrap();
    let data = tmp.path();
    let (id, vol, s1) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let serial = cm_api::volume::disk_serial(vol);
    let paths = qemu::VmPaths::new(data.join("instances").join(id.to_string()));
    let _kill = KillOnDrop(paths.pidfile(), id);
    let mut spec = DesiredInstance {
        id,
        name: "snap-vm".into(),
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
    let mut volume = DesiredVolume {
        id: vol,
        name: "data".into(),
        size_bytes: 32 << 20,
        snapshots: Vec::new(),
        deleted_snapshots: Vec::new(),
        revert: None,
        clone_from: None,
        image: None,
        import: None,
    };
    let vms = Vms::adopt(context(data)).unwrap();
    vms.apply(&state(1, &spec, volume.clone()));
    wait("the VM running", 30, || {
        observed(&vms, id).filter(|o| o.state == ObservedState::Running)
    });
    wait("the volume attached", 20, || {
        observed(&vms, id)
            .filter(|o| o.volumes.len() == 1 && o.volumes[0].state == AttachmentState::Attached)
    });
    let boot = |console: &mut Console| {
        tokio::task::block_in_place(|| console.wait_for_boot(Duration::from_secs(90)).unwrap());
        let find = format!(
            "for d in /sys/block/vd*; do [ \"$(cat $d/serial 2>/dev/null)\" = {serial} ] && echo DEV=${{d##*/}}; done"
        );
        let out = sh(console, &find);
        out.lines()
            .find_map(|l| l.trim().strip_prefix("DEV="))
            .filter(|d| d.chars().all(|c| c.is_ascii_alphanumeric()))
            .map(str::to_string)
            .unwrap_or_else(|| panic!("no disk: {out}"))
    };
    let mut console = Console::connect(&paths.console_sock(), &paths.console_log()).unwrap();
    let dev = boot(&mut console);
    let out = sh(
        &mut console,
        &format!(
            "mke2fs -q /dev/{dev} && mkdir -p /mnt/v && mount /dev/{dev} /mnt/v && \
             echo before-the-snapshot > /mnt/v/f && echo MOUNTED"
        ),
    );
    assert!(out.contains("MOUNTED"), "{out}");
    // cm-guest has connected its port (heartbeats come).
    wait("a heartbeat", 60, || {
        vms.ctx.observed().into_iter().find(|o| o.id == id)?;
        vms.ctx.beats_map().get(&id).cloned()
    });

    // The snapshot, taken while the guest runs: frozen around it.
    let t = Instant::now();
    volume.snapshots = vec![s1];
    vms.apply(&state(2, &spec, volume.clone()));
    let snap = wait("the snapshot taken", 60, || {
        vms.ctx.volumes.converge(&vms.ctx.qemus());
        let r = vms.ctx.volumes.report();
        let v = r.into_iter().find(|v| v.id == vol)?;
        v.snapshots
            .into_iter()
            .find(|s| s.id == s1 && s.consistency.is_some())
    });
    println!("snapshot taken in {:?}: {snap:?}", t.elapsed());
    let log = std::fs::read_to_string(paths.console_log()).unwrap();
    let tail: String = log
        .lines()
        .filter(|l| l.contains("cm-guest"))
        .collect::<Vec<_>>()
        .join("\n");
    assert_eq!(
        snap.consistency,
        Some(Consistency::Filesystem),
        "{snap:?} {tail}"
    );
    assert_eq!(snap.size_bytes, 32 << 20);
    assert!(log.contains("cm-guest: froze [\"/mnt/v\"]"), "{log}");
    assert!(log.contains(" ms, thawed"), "{log}");
    // Thawed: the guest writes again.
    let out = sh(
        &mut console,
        "echo after-the-snapshot > /mnt/v/f && sync && umount /mnt/v && echo CHANGED",
    );
    assert!(out.contains("CHANGED"), "{out}");

    // Stopped, reverted, started: the old content.
    spec.power = Power::Stopped;
    vms.apply(&state(3, &spec, volume.clone()));
    wait("the VM stopped", 30, || {
        observed(&vms, id).filter(|o| o.state == ObservedState::Stopped && o.pid.is_none())
    });
    volume.revert = Some(DesiredRevert {
        snapshot: s1,
        gen: 1,
    });
    vms.apply(&state(4, &spec, volume.clone()));
    let v = wait("the volume reverted", 30, || {
        vms.ctx.volumes.converge(&vms.ctx.qemus());
        let r = vms.ctx.volumes.report();
        r.into_iter().find(|v| v.id == vol && v.reverted_gen == 1)
    });
    assert_eq!(v.revert_error, None);
    spec.power = Power::Running;
    spec.boot_gen = 2;
    vms.apply(&state(5, &spec, volume.clone()));
    wait("the VM running again", 30, || {
        observed(&vms, id).filter(|o| o.state == ObservedState::Running && o.boot_gen == 2)
    });
    let mut console = Console::connect(&paths.console_sock(), &paths.console_log()).unwrap();
    let dev = boot(&mut console);
    let out = sh(
        &mut console,
        &format!("mkdir -p /mnt/v && mount /dev/{dev} /mnt/v && cat /mnt/v/f"),
    );
    assert!(out.contains("before-the-snapshot"), "{out}");
    assert!(!out.contains("after-the-snapshot"), "{out}");
    // Started again with the revert still desired: not reverted twice.
    assert_eq!(
        crate::volumes::snapfiles::reverted_gen(&vms.ctx.volumes.path(vol)).unwrap(),
        1
    );
}
