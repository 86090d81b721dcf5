//! A persistent root in a real guest (the test disk image under TCG, driven
//! by this host's code): a root volume made as an overlay on the cached
//! image, an instance booted from it (its start waits for the file), a file
//! written, an export of the disk refused while the VM runs on it, the VM
//! stopped and deleted (the volume stays), and a second instance booted
//! from the same volume reads the file. Then, stopped, its root is exported
//! to a stand-in master and imported as a new volume: a flat qcow2 with the
//! same content (`qemu-img compare`), as a moved volume would be.

use super::hotplug_vm_test::{observed, sh, wait, KillOnDrop};
use super::*;
use cm_api::agent::ObservedState;
use cm_api::agent::{
    DesiredExport, DesiredInstance, DesiredVolume, DiskImport, DiskRef, ImageRef, Power,
};
use cm_api::image::{FileRole, ImageFile, ImageKind};
use cm_api::instance::Accel;
use cm_api::snapshot::SnapshotOf;
use cm_api::words::ResolvedAccel;
use test_infra::console::Console;

fn state(
    gen: u64,
    instances: &[&DesiredInstance],
    volume: &[&DesiredVolume],
    deleted: Vec<Uuid>,
    exports: Vec<DesiredExport>,
) -> DesiredState {
    DesiredState {
        cloud_id: Uuid::nil(),
        generation: gen,
        instances: instances.iter().map(|i| (*i).clone()).collect(),
        requests: vec![],
        report_interval_secs: 1,
        deleted,
        volumes: volume.iter().map(|v| (*v).clone()).collect(),
        deleted_volumes: vec![],
        exports,
        chains: Vec::new(),
    }
}

/// The test disk image (built if missing) in the host's image cache.
fn cached_disk_image(data: &std::path::Path) -> ImageRef {
    let src = test_infra::paths::test_disk();
    let size = std::fs::metadata(&src).unwrap().len();
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

fn instance(id: Uuid, name: &str, image: &ImageRef, root: Uuid) -> DesiredInstance {
    DesiredInstance {
        id,
        name: name.into(),
        power: Power::Running,
        boot_gen: 1,
        reboot_gen: 0,
        stop_timeout_secs: 30,
        memory_mib: 192,
        vcpus: 1,
        accel: Accel::Tcg,
        image: image.clone(),
        ports: vec![],
        disk_gib: 0,
        boot: None,
        health: None,
        volumes: vec![],
        force_detach: vec![],
        root_snapshots: Vec::new(),
        root_deleted_snapshots: Vec::new(),
        root_revert: None,
        root_volume: Some(root),
    }
}

/// The host's context (as `hotplug_vm_test::context`) with the stand-in
/// master at `base`.
fn context(data: &std::path::Path, base: &str) -> Arc<VmContext> {
    let volumes =
        crate::volumes::Volumes::open(&data.join("volumes"), &data.join("instances")).unwrap();
    let master = Arc::new(Master::new(base, "host-token".into()).unwrap());
    Arc::new(
        VmContext::new(
            PathBuf::from("qemu-system-x86_64"),
            data.join("instances"),
            ImageCache::new(data.join("images")),
            master,
            ResolvedAccel::Tcg,
            "127.0.0.1".into(),
            "10.0.2.2:8107".into(),
        )
        .with_volumes(Arc::new(volumes)),
    )
}

fn booted(log: &std::path::Path) {
    wait("the guest booted", 180, || {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        text.contains("cm-init: ready").then_some(())
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_instance_boots_from_the_root_volume_the_first_wrote() {
    let tmp = tempfile::Builder::new()
        .prefix("cmrootvol")
        .tempdir_in("/tmp")
        .unwrap();
    let data = tmp.path();
    let image = cached_disk_image(data);
    let (a, b, v) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let pa = qemu::VmPaths::new(data.join("instances").join(a.to_string()));
    let pb = qemu::VmPaths::new(data.join("instances").join(b.to_string()));
    let (_ka, _kb) = (KillOnDrop(pa.pidfile(), a), KillOnDrop(pb.pidfile(), b));
    let volume = DesiredVolume {
        id: v,
        name: "first-root".into(),
        size_bytes: 384 << 20,
        snapshots: Vec::new(),
        deleted_snapshots: Vec::new(),
        revert: None,
        clone_from: None,
        image: Some(image.clone()),
        import: None,
    };
    let mut first = instance(a, "first", &image, v);
    let (base, received) = crate::volumes::test_master::relay().await;
    let vms = Vms::adopt(context(data, &base)).unwrap();
    let began = std::time::Instant::now();
    // The volume and its instance in one desired state: the start waits
    // for the volume's file, made in the background.
    vms.apply(&state(1, &[&first], &[&volume], vec![], vec![]));
    wait("the VM running", 90, || {
        observed(&vms, a).filter(|o| o.state == ObservedState::Running)
    });
    println!("root volume made and QEMU up in {:?}", began.elapsed());
    let file = vms.ctx.volumes.path(v);
    let info = crate::volumes::files::virtual_size(&file).unwrap();
    assert_eq!(info, 384 << 20, "grown to the volume's size");
    assert!(!pa.disk().exists(), "no overlay of its own");
    booted(&pa.console_log());
    println!("booted from the root volume in {:?}", began.elapsed());
    let mut console = Console::connect(&pa.console_sock(), &pa.console_log()).unwrap();
    let out = sh(
        &mut console,
        "echo persistent-$((6*7)) > /root/proof && sync && echo WROTE",
    );
    assert!(out.contains("WROTE"), "{out}");

    // An export of the disk while the VM runs on it: refused, reported.
    let (e1, e2) = (Uuid::new_v4(), Uuid::new_v4());
    let exports = vec![
        DesiredExport {
            id: e1,
            disk: DiskRef {
                of: SnapshotOf::Volume,
                disk: v,
                backup: None,
            },
        },
        DesiredExport {
            id: e2,
            disk: DiskRef {
                of: SnapshotOf::InstanceRoot,
                disk: a,
                backup: None,
            },
        },
    ];
    vms.apply(&state(2, &[&first], &[&volume], vec![], exports));
    let errs = wait("the exports refused", 30, || {
        let e = vms.ctx.volumes.export_errors();
        (e.len() == 2).then_some(e)
    });
    for e in &errs {
        assert!(
            e.error.contains(&format!("instance {a} runs on it")),
            "{e:?}"
        );
    }

    // Stopped, then deleted: its volume stays.
    first.power = Power::Stopped;
    vms.apply(&state(3, &[&first], &[&volume], vec![], vec![]));
    wait("the VM stopped", 90, || {
        observed(&vms, a).filter(|o| o.state == ObservedState::Stopped && o.pid.is_none())
    });
    assert!(vms.ctx.volumes.export_errors().is_empty());
    vms.apply(&state(4, &[], &[&volume], vec![a], vec![]));
    wait("the first VM removed", 30, || {
        (!pa.dir.exists() && observed(&vms, a).is_none()).then_some(())
    });
    assert!(file.exists(), "the root volume outlives its instance");

    // A new instance from the same volume: what the first wrote is there.
    let second = instance(b, "second", &image, v);
    vms.apply(&state(5, &[&second], &[&volume], vec![a], vec![]));
    wait("the second VM running", 90, || {
        observed(&vms, b).filter(|o| o.state == ObservedState::Running)
    });
    booted(&pb.console_log());
    let mut console = Console::connect(&pb.console_sock(), &pb.console_log()).unwrap();
    let out = sh(&mut console, "cat /root/proof");
    assert!(out.contains("persistent-42"), "{out}");

    // Stopped: its root (the volume) exported, then imported as another
    // volume of this host, as a move's new host would.
    let mut second = second;
    second.power = Power::Stopped;
    vms.apply(&state(6, &[&second], &[&volume], vec![a], vec![]));
    wait("the second VM stopped", 90, || {
        observed(&vms, b).filter(|o| o.state == ObservedState::Stopped && o.pid.is_none())
    });
    let e3 = Uuid::new_v4();
    let export = DesiredExport {
        id: e3,
        disk: DiskRef {
            of: SnapshotOf::InstanceRoot,
            disk: b,
            backup: None,
        },
    };
    let sent = std::time::Instant::now();
    vms.apply(&state(7, &[&second], &[&volume], vec![a], vec![export]));
    let flat = vms.ctx.volumes.exports_dir().join(format!("{e3}.qcow2"));
    let (sha, size) = wait("the export sent", 60, || {
        let r = received.lock().unwrap().clone();
        r.filter(|_| !flat.exists())
    });
    println!("exported {size} bytes in {:?}", sent.elapsed());
    assert!(vms.ctx.volumes.export_errors().is_empty());
    let w = Uuid::new_v4();
    let moved = DesiredVolume {
        id: w,
        name: "moved".into(),
        image: None,
        import: Some(DiskImport {
            transfer: e3,
            size,
            sha256: sha,
        }),
        ..volume.clone()
    };
    vms.apply(&state(8, &[&second], &[&volume, &moved], vec![a], vec![]));
    let wfile = vms.ctx.volumes.path(w);
    wait("the import done", 60, || wfile.exists().then_some(()));
    let out = std::process::Command::new("qemu-img")
        .args(["compare", "-U"])
        .arg(&file)
        .arg(&wfile)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = std::process::Command::new("qemu-img")
        .args(["info", "--output=json", "-U"])
        .arg(&wfile)
        .output()
        .unwrap();
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(info.get("backing-filename").is_none(), "{info}");
    assert_eq!(info["virtual-size"], 384u64 << 20);
}
