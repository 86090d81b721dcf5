//! Volumes in a real guest: the test image (`make image`) under QEMU's TCG
//! (KVM hangs nested on these machines), driven by this host's own code
//! (`Vms::apply` with desired states, as the agent does), seen from inside
//! through the serial console. A volume made with the VM and on its command
//! line, a file system on it, hot-unplug, hot-plug (the file still there),
//! a grow the guest sees, an agent restart half-way, a paused guest that
//! never releases (the timeout, then `force`), and delete.

use super::*;
use crate::volumes::Volumes;
use cm_api::agent::{
    AttachmentState, DesiredAttachment, DesiredInstance, DesiredVolume, ImageRef, ObservedInstance,
    ObservedState, Power,
};
use cm_api::image::{FileRole, ImageFile, ImageKind};
use cm_api::instance::Accel;
use std::path::Path;
use std::time::{Duration, Instant};
use test_infra::console::Console;

const DETACH_TIMEOUT: Duration = Duration::from_secs(8);

pub(super) fn context(data: &Path) -> Arc<VmContext> {
    let volumes = Volumes::open(&data.join("volumes"), &data.join("instances")).unwrap();
    let master = Arc::new(Master::new("http://127.0.0.1:9", String::new()).unwrap());
    let mut ctx = VmContext::new(
        PathBuf::from("qemu-system-x86_64"),
        data.join("instances"),
        ImageCache::new(data.join("images")),
        master,
        ResolvedAccel::Tcg,
        "127.0.0.1".into(),
        "10.0.2.2:8107".into(),
    )
    .with_volumes(Arc::new(volumes));
    ctx.detach_timeout = DETACH_TIMEOUT;
    Arc::new(ctx)
}

/// The test image in the host's image cache, as if fetched from a master.
pub(super) fn cached_test_image(data: &Path) -> ImageRef {
    let dir = test_infra::image_dir();
    let id = Uuid::new_v4();
    let mut files = Vec::new();
    for (role, name) in [
        (FileRole::Kernel, "vmlinuz"),
        (FileRole::Initrd, "initrd.img"),
    ] {
        let src = dir.join(name);
        let size = std::fs::metadata(&src)
            .unwrap_or_else(|e| panic!("{}: {e} (run make image)", src.display()))
            .len();
        let at = data.join("images").join(id.to_string()).join(role.as_str());
        std::fs::create_dir_all(at.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(&src, &at).unwrap();
        files.push(ImageFile {
            role,
            size,
            sha256: String::new(),
            format: None,
            virtual_size: None,
        });
    }
    ImageRef {
        id,
        name: "cm-test".into(),
        kind: ImageKind::Kernel,
        files,
        cmdline: Some("quiet".into()),
    }
}

/// Kills the VM's QEMU however the test ends.
pub(super) struct KillOnDrop(pub(super) PathBuf, pub(super) Uuid);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = qemu::read_pid(&self.0) {
            qemu::kill(pid, self.1);
        }
    }
}

struct Case {
    spec: DesiredInstance,
    generation: u64,
}

impl Case {
    fn state(
        &mut self,
        attached: &[Uuid],
        force: &[Uuid],
        volumes: &[(Uuid, u64)],
        deleted: &[Uuid],
    ) -> DesiredState {
        self.generation += 1;
        let mut spec = self.spec.clone();
        spec.volumes = attached
            .iter()
            .map(|v| DesiredAttachment {
                volume: *v,
                name: "data".into(),
            })
            .collect();
        spec.force_detach = force.to_vec();
        DesiredState {
            cloud_id: Uuid::nil(),
            generation: self.generation,
            instances: vec![spec],
            requests: vec![],
            report_interval_secs: 1,
            deleted: vec![],
            volumes: volumes
                .iter()
                .map(|(id, mib)| DesiredVolume {
                    id: *id,
                    name: "data".into(),
                    size_bytes: mib << 20,
                    snapshots: Vec::new(),
                    deleted_snapshots: Vec::new(),
                    revert: None,
                    clone_from: None,
                    image: None,
                    import: None,
                })
                .collect(),
            deleted_volumes: deleted.to_vec(),
            exports: Vec::new(),
            chains: Vec::new(),
        }
    }
}

pub(super) fn observed(vms: &Vms, id: Uuid) -> Option<ObservedInstance> {
    vms.ctx.observed().into_iter().find(|o| o.id == id)
}

/// Wait (off the runtime's async threads) until `check` holds.
pub(super) fn wait<T>(what: &str, secs: u64, check: impl FnMut() -> Option<T>) -> T {
    tokio::task::block_in_place(|| {
        test_infra::wait_until(what, Duration::from_secs(secs), check).unwrap()
    })
}

pub(super) fn sh(console: &mut Console, cmd: &str) -> String {
    tokio::task::block_in_place(|| console.run(cmd, Duration::from_secs(30)).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn volumes_hot_plug_into_a_real_guest_and_out() {
    let tmp = tempfile::Builder::new()
        .prefix("cmvol")
        .tempdir_in("/tmp")
        .unwrap();
    let data = tmp.path();
    let image = cached_test_image(data);
    let id = Uuid::new_v4();
    let vol = Uuid::new_v4();
    let serial = cm_api::volume::disk_serial(vol);
    let node = cm_api::volume::qemu_node(vol);
    let dir = data.join("instances").join(id.to_string());
    let paths = qemu::VmPaths::new(dir.clone());
    let _kill = KillOnDrop(paths.pidfile(), id);
    let mut case = Case {
        spec: DesiredInstance {
            id,
            name: "vol-vm".into(),
            power: Power::Running,
            boot_gen: 1,
            reboot_gen: 0,
            stop_timeout_secs: 0,
            memory_mib: 192,
            vcpus: 1,
            accel: Accel::Tcg,
            image,
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
        },
        generation: 0,
    };
    let vms = Vms::adopt(context(data)).unwrap();

    // Made in the same desired state that starts the VM: on its command line.
    let t0 = Instant::now();
    vms.apply(&case.state(&[vol], &[], &[(vol, 64)], &[]));
    let pid = wait("the VM running", 30, || {
        observed(&vms, id)
            .filter(|o| o.state == ObservedState::Running)
            .and_then(|o| o.pid)
    });
    let args = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(String::from_utf8_lossy(&args).contains(&node));
    wait("the volume attached at boot", 20, || {
        observed(&vms, id).filter(|o| {
            o.volumes.len() == 1
                && o.volumes[0].volume == vol
                && o.volumes[0].state == AttachmentState::Attached
        })
    });
    let r = vms.ctx.volumes.report();
    assert!(
        r.iter().any(|v| v.id == vol && v.size_bytes == 64 << 20),
        "{r:?}"
    );
    let mut console = Console::connect(&paths.console_sock(), &paths.console_log()).unwrap();
    tokio::task::block_in_place(|| console.wait_for_boot(Duration::from_secs(90)).unwrap());
    let disk_of = format!(
        "for d in /sys/block/vd*; do [ -e \"$d/serial\" ] && [ \"$(cat \"$d/serial\")\" = {serial} ] && echo DEV=${{d##*/}}; done"
    );
    let find_disk = |console: &mut Console| {
        wait("the disk in the guest", 30, || {
            let out = sh(console, &disk_of);
            out.lines()
                .find_map(|l| l.trim().strip_prefix("DEV="))
                .filter(|d| d.chars().all(|c| c.is_ascii_alphanumeric()))
                .map(str::to_string)
        })
    };
    let dev = find_disk(&mut console);
    println!("booted with the volume as /dev/{dev} in {:?}", t0.elapsed());
    let out = sh(
        &mut console,
        &format!(
            "mke2fs -q /dev/{dev} && mkdir -p /mnt/v && mount /dev/{dev} /mnt/v && \
             echo written-on-a-volume > /mnt/v/f && sync && cat /mnt/v/f && umount /mnt/v && echo FS-OK"
        ),
    );
    assert!(
        out.contains("written-on-a-volume") && out.contains("FS-OK"),
        "{out}"
    );
    // The guest's writes are in the file on the host.
    let allocated = wait("the writes on the host", 20, || {
        vms.ctx.volumes.converge(&vms.ctx.qemus());
        vms.ctx
            .volumes
            .report()
            .into_iter()
            .find(|v| v.id == vol && v.allocated_bytes > 1 << 20)
            .map(|v| v.allocated_bytes)
    });
    println!("allocated after mke2fs: {allocated} bytes");

    // Hot-unplug: the guest releases it (DEVICE_DELETED), the node goes.
    let t = Instant::now();
    vms.apply(&case.state(&[], &[], &[(vol, 64)], &[]));
    wait("the volume detached", 20, || {
        observed(&vms, id).filter(|o| o.volumes.is_empty())
    });
    println!("hot-unplugged in {:?}", t.elapsed());
    let nodes = tokio::task::block_in_place(|| {
        test_infra::qmp::call(&paths.qmp(), "query-named-block-nodes").unwrap()
    });
    assert!(!nodes.to_string().contains(&node), "{nodes}");
    let out = sh(&mut console, &format!("ls /sys/block; {disk_of}"));
    assert!(!out.contains("DEV="), "{out}");

    // Hot-plug: the guest sees the disk by its serial, with the file on it.
    let t = Instant::now();
    vms.apply(&case.state(&[vol], &[], &[(vol, 64)], &[]));
    wait("the volume hot-plugged", 20, || {
        observed(&vms, id).filter(|o| o.volumes.len() == 1)
    });
    let dev = find_disk(&mut console);
    println!("hot-plugged as /dev/{dev} in {:?}", t.elapsed());
    let out = sh(
        &mut console,
        &format!("mount /dev/{dev} /mnt/v && cat /mnt/v/f && umount /mnt/v"),
    );
    assert!(out.contains("written-on-a-volume"), "{out}");

    // Grown while attached (block_resize): the guest sees it at once.
    vms.apply(&case.state(&[vol], &[], &[(vol, 96)], &[]));
    wait("the volume grown", 20, || {
        vms.ctx
            .volumes
            .report()
            .into_iter()
            .find(|v| v.id == vol && v.size_bytes == 96 << 20 && v.error.is_none())
    });
    let sectors = sh(&mut console, &format!("cat /sys/block/{dev}/size"));
    assert_eq!(sectors, (96u64 << 20 >> 9).to_string());

    // The agent restarts: its successor learns from QEMU what the VM holds
    // and adds nothing twice.
    drop(vms);
    let vms = Vms::adopt(context(data)).unwrap();
    vms.apply(&case.state(&[vol], &[], &[(vol, 96)], &[]));
    wait("the volume attached after a restart", 20, || {
        observed(&vms, id)
            .filter(|o| o.pid == Some(pid) && o.volumes.len() == 1 && o.volumes[0].volume == vol)
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    let v = vms.ctx.volumes.report();
    assert!(v.iter().all(|v| v.error.is_none()), "{v:?}");

    // A paused guest never answers the eject: the detach times out, the
    // disk stays, with the reason.
    tokio::task::block_in_place(|| test_infra::qmp::call(&paths.qmp(), "stop").unwrap());
    let t = Instant::now();
    vms.apply(&case.state(&[], &[], &[(vol, 96)], &[]));
    let o = wait("the detach to time out", 40, || {
        observed(&vms, id).filter(|o| {
            o.volumes.len() == 1
                && o.volumes[0].state == AttachmentState::Detaching
                && o.volumes[0].error.is_some()
        })
    });
    let took = t.elapsed();
    let err = o.volumes[0].error.clone().unwrap();
    assert!(err.contains("did not release"), "{err}");
    assert!(took >= DETACH_TIMEOUT, "{took:?}");
    println!("detach timed out after {took:?}: {err}");

    // With force: asked once more, then QEMU is stopped hard and
    // launched again without it.
    let t = Instant::now();
    vms.apply(&case.state(&[], &[vol], &[(vol, 96)], &[]));
    let o = wait("the VM restarted without the volume", 60, || {
        observed(&vms, id).filter(|o| {
            o.state == ObservedState::Running && o.pid != Some(pid) && o.volumes.is_empty()
        })
    });
    println!(
        "forced detach: running again without it after {:?}",
        t.elapsed()
    );
    assert!(t.elapsed() >= DETACH_TIMEOUT);
    let args = std::fs::read(format!("/proc/{}/cmdline", o.pid.unwrap())).unwrap();
    assert!(!String::from_utf8_lossy(&args).contains(&node));

    // Stopped: it has what its next command line will have.
    case.spec.power = Power::Stopped;
    vms.apply(&case.state(&[vol], &[], &[(vol, 96)], &[]));
    wait("the stopped VM with the volume", 20, || {
        observed(&vms, id).filter(|o| {
            o.state == ObservedState::Stopped
                && o.volumes.len() == 1
                && o.volumes[0].state == AttachmentState::Attached
        })
    });

    // Deleted: its file goes (no VM holds it now).
    vms.apply(&case.state(&[], &[], &[], &[vol]));
    wait("the volume deleted", 20, || {
        (!vms.ctx.volumes.path(vol).exists() && vms.ctx.volumes.report().is_empty()).then_some(())
    });
    wait("the stopped VM without it", 10, || {
        observed(&vms, id).filter(|o| o.volumes.is_empty())
    });
    println!("whole test: {:?}", t0.elapsed());
}
