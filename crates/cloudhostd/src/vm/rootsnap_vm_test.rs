//! Snapshots of an instance's root disk in a real guest (the test disk
//! image under TCG, driven by this host's code): taken while it runs
//! (QMP on the root drive `virtio0`, its root file system frozen by
//! cm-guest), a change written, the VM stopped, the root reverted before
//! the next launch: the old content is read.

use super::hotplug_vm_test::{observed, sh, wait, KillOnDrop};
use super::*;
use cm_api::agent::{DesiredInstance, DesiredRevert, ImageRef, ObservedState, Power};
use cm_api::image::{FileRole, ImageFile, ImageKind};
use cm_api::instance::Accel;
use cm_api::snapshot::Consistency;
use test_infra::console::Console;

fn state(gen: u64, spec: &DesiredInstance) -> DesiredState {
    DesiredState {
        cloud_id: Uuid::nil(),
        generation: gen,
        instances: vec![spec.clone()],
        requests: vec![],
        report_interval_secs: 1,
        deleted: vec![],
        volumes: vec![],
        deleted_volumes: vec![],
        exports: Vec::new(),
        chains: Vec::new(),
    }
}

/// The test disk image in the host's image cache.
fn cached_disk_image(data: &std::path::Path) -> ImageRef {
    let src = test_infra::workspace_root().join("var/images/cm-test-disk.qcow2");
    let size = std::fs::metadata(&src)
        .unwrap_or_else(|e| panic!("{}: {e} (run make image)", src.display()))
        .len();
    let id = Uuid::new_v4();
    let at = data.join("images").join(id.to_string()).join("disk");
    std::fs::create_dir_all(at.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(&src, &at).unwrap();
    ImageRef {
        id,
        name: "cm-test-disk".into(),
        kind: ImageKind::Disk,
        files: vec![ImageFile {
            role: FileRole::Disk,
            size,
            sha256: String::new(),
            format: Some("qcow2".into()),
            virtual_size: Some(256 << 20),
        }],
        cmdline: None,
    }
}

/// The `n`th `cm-init: ready` in the serial log (kept across boots).
fn booted(log: &std::path::Path, n: usize) {
    wait("the guest booted", 120, || {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        (text.matches("cm-init: ready").count() >= n).then_some(())
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_root_disk_snapshot_of_a_running_guest_is_frozen_and_reverted_before_launch() {
    let tmp = tempfile::Builder::new()
        .prefix("cmroot")
        .tempdir_in("/tmp")
        .unwrap();
    let data = tmp.path();
    let (id, s1) = (Uuid::new_v4(), Uuid::new_v4());
    let paths = qemu::VmPaths::new(data.join("instances").join(id.to_string()));
    let _kill = KillOnDrop(paths.pidfile(), id);
    let mut spec = DesiredInstance {
        id,
        name: "root-snap-vm".into(),
        power: Power::Running,
        boot_gen: 1,
        reboot_gen: 0,
        stop_timeout_secs: 30,
        memory_mib: 192,
        vcpus: 1,
        accel: Accel::Tcg,
        image: cached_disk_image(data),
        ports: vec![],
        disk_gib: 0,
        boot: None,
        health: None,
        volumes: vec![],
        force_detach: vec![],
        root_snapshots: Vec::new(),
        root_deleted_snapshots: Vec::new(),
        root_revert: None,
        root_volume: None,
    };
    let vms = Vms::adopt(super::hotplug_vm_test::context(data)).unwrap();
    vms.apply(&state(1, &spec));
    wait("the VM running", 60, || {
        observed(&vms, id).filter(|o| o.state == ObservedState::Running)
    });
    booted(&paths.console_log(), 1);
    let mut console = Console::connect(&paths.console_sock(), &paths.console_log()).unwrap();
    let out = sh(
        &mut console,
        "echo before > /root/proof && sync && echo WROTE",
    );
    assert!(out.contains("WROTE"), "{out}");
    wait("a heartbeat", 60, || vms.ctx.beats_map().get(&id).cloned());

    spec.root_snapshots = vec![s1];
    vms.apply(&state(2, &spec));
    let snap = wait("the root snapshot taken", 60, || {
        let o = observed(&vms, id)?;
        o.root_snapshots.into_iter().find(|s| s.id == s1)
    });
    println!("root snapshot: {snap:?}");
    assert_eq!(snap.error, None, "{snap:?}");
    assert_eq!(snap.consistency, Some(Consistency::Filesystem), "{snap:?}");
    let log = std::fs::read_to_string(paths.console_log()).unwrap();
    assert!(log.contains("cm-guest: froze [\"/\"]"), "{log}");
    let out = sh(
        &mut console,
        "echo after > /root/proof && sync && echo CHANGED",
    );
    assert!(out.contains("CHANGED"), "{out}");

    // Stopped; then started with a revert asked: reverted first.
    spec.power = Power::Stopped;
    vms.apply(&state(3, &spec));
    wait("the VM stopped", 90, || {
        observed(&vms, id).filter(|o| o.state == ObservedState::Stopped && o.pid.is_none())
    });
    spec.power = Power::Running;
    spec.boot_gen = 2;
    spec.root_revert = Some(DesiredRevert {
        snapshot: s1,
        gen: 1,
    });
    vms.apply(&state(4, &spec));
    wait("running again, reverted", 60, || {
        observed(&vms, id).filter(|o| {
            o.state == ObservedState::Running && o.boot_gen == 2 && o.root_reverted_gen == 1
        })
    });
    booted(&paths.console_log(), 2);
    let mut console = Console::connect(&paths.console_sock(), &paths.console_log()).unwrap();
    let out = sh(&mut console, "cat /root/proof");
    assert!(out.contains("before") && !out.contains("after"), "{out}");
}
