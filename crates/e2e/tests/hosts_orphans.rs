//! Issue 9, point 16: a host never deletes a disk because an instance is
//! merely absent from the desired state. The master's data dir is swapped
//! for an empty one while instances run: their VMs are stopped, their disks
//! stay, and once the host re-joins they are listed as orphans; only
//! `cm host orphans NAME --purge` removes them.

use cm_api::agent::ObservedState;
use cm_api::host::Orphan;
use cm_api::instance::{Instance, InstanceState};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;
use test_infra::cloud::is_qemu;
use test_infra::{wait_until, Cloud, HostOpts};

const BOOT: Duration = Duration::from_secs(120);

fn orphan_ids(cloud: &Cloud) -> Vec<String> {
    let v: Vec<Orphan> = cloud.cm_as(&["host", "orphans", "h"]);
    let mut ids: Vec<String> = v.iter().map(|o| o.id.to_string()).collect();
    ids.sort();
    ids
}

fn inode(p: &Path) -> u64 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .ino()
}

#[test]
fn a_master_swapped_for_an_empty_one_leaves_disks_and_lists_orphans() {
    let mut cloud = Cloud::start().unwrap();
    cloud.add_host("h", HostOpts::default()).unwrap();
    cloud.add_test_image().unwrap();
    // A real qcow2 disk image (blank: the VM sits in its firmware), so that
    // the instance has a disk overlay of its own.
    let blank = cloud.dir.path().join("blank.qcow2");
    let ok = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&blank)
        .arg("64M")
        .status()
        .unwrap()
        .success();
    assert!(ok, "qemu-img create");
    cloud.add_disk_image("blank", &blank).unwrap();
    cloud.cm_ok(&[
        "instance", "create", "v1", "--image", "cm-test", "--flavor", "m1.tiny",
    ]);
    cloud.cm_ok(&[
        "instance",
        "create",
        "d1",
        "--image",
        "blank",
        "--memory",
        "128",
        "--stop-timeout",
        "3",
    ]);
    let v1 = cloud
        .wait_instance_state("v1", InstanceState::Running, BOOT)
        .unwrap();
    let d1 = cloud
        .wait_instance_state("d1", InstanceState::Running, BOOT)
        .unwrap();
    cloud.console("v1").unwrap().wait_for_boot(BOOT).unwrap();
    let (v1_id, d1_id) = (v1.id.to_string(), d1.id.to_string());
    let pids = [v1.pid.unwrap(), d1.pid.unwrap()];
    let disk = cloud.host("h").instance_dir(&d1_id).join("disk.qcow2");
    let disk_inode = inode(&disk);
    let v1_dir = cloud.host("h").instance_dir(&v1_id);

    // The master's data dir is replaced by an empty one (a new cloud).
    cloud.stop_master(libc::SIGTERM);
    let old = cloud.dir.path().join("master.old");
    std::fs::rename(cloud.master_dir(), &old).unwrap();
    cloud.start_master().unwrap();
    cloud.token = std::fs::read_to_string(cloud.master_dir().join("admin.token"))
        .unwrap()
        .trim()
        .to_string();

    // The host's token is refused: its VMs are stopped, nothing is deleted.
    wait_until("both VMs to be stopped", BOOT, || {
        pids.iter().all(|p| !is_qemu(*p)).then_some(())
    })
    .unwrap();
    assert_eq!(inode(&disk), disk_inode, "the same disk, kept");
    assert!(v1_dir.join("console.log").exists());

    // The operator joins the host to the new cloud: the VMs are orphans.
    cloud.stop_host("h", libc::SIGTERM);
    cloud.set_host_extra("h", vec!["--rejoin".into()]);
    cloud.restart_host("h").unwrap();
    cloud
        .wait_host_state("h", "ready", Duration::from_secs(60))
        .unwrap();
    let mut both = vec![v1_id.clone(), d1_id.clone()];
    both.sort();
    wait_until(
        "both VMs listed as orphans",
        Duration::from_secs(30),
        || (orphan_ids(&cloud) == both).then_some(()),
    )
    .unwrap();
    let list: Vec<Orphan> = cloud.cm_as(&["host", "orphans", "h"]);
    for o in &list {
        assert_eq!(o.state, ObservedState::Stopped, "{o:?}");
        assert!(!o.purge_requested);
    }
    let d = list.iter().find(|o| o.id == d1.id).unwrap();
    assert_eq!(d.name, "d1");
    assert!(d.disk_bytes > 0, "{d:?}");
    let table = cloud.cm_ok(&["host", "orphans", "h"]);
    assert!(table.contains("d1") && table.contains("v1"), "{table}");
    assert!(cloud
        .cm_as::<Vec<Instance>>(&["instance", "list"])
        .is_empty());
    let events = cloud.events(Some("host.orphan"));
    assert!(
        events.iter().any(|e| e.message.contains(d1_id.as_str())),
        "{events:?}"
    );
    // Desired states come and go; nothing is deleted or started.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(inode(&disk), disk_inode);
    assert!(cloud.qemu_pids().is_empty());

    // Purge one: only its files go.
    let out = cloud.cm_ok(&["host", "orphans", "h", "--purge", "--id", &d1_id]);
    assert!(out.contains("purged 1 orphan"), "{out}");
    assert!(!disk.exists(), "purged");
    assert!(!cloud.host("h").instance_dir(&d1_id).exists());
    assert!(v1_dir.join("console.log").exists());
    assert_eq!(orphan_ids(&cloud), vec![v1_id.clone()]);
    // An unknown id is refused and changes nothing.
    let out = cloud.cm(&[
        "host",
        "orphans",
        "h",
        "--purge",
        "--id",
        "00000000-0000-4000-8000-000000000000",
    ]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(v1_dir.exists());
    // Purge the rest.
    cloud.cm_ok(&["host", "orphans", "h", "--purge"]);
    assert!(!v1_dir.exists());
    assert!(orphan_ids(&cloud).is_empty());
}
