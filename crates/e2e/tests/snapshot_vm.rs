//! Issue 12, points 4 and 9: snapshots of a volume and of an instance's
//! root disk on real QEMU guests (TCG), driven as a user drives them (`cm`
//! with the master's pointer file and its own HOME): taken while the guest
//! runs (its file systems frozen by cm-guest), the disk changed, restored
//! with the guest stopped, the old content read again; and a clone.

use cm_api::snapshot::{Consistency, Snapshot, SnapshotState};
use cm_api::volume::{Volume, VolumeState};
use std::time::{Duration, Instant};
use test_infra::console::nth_ready;
use test_infra::deploy::DeployUser;
use test_infra::guest_disks::{must, read_file, wait_disk};
use test_infra::paths::test_disk;
use test_infra::{Cloud, HostOpts};

const BOOT: Duration = Duration::from_secs(120);
const SEE: Duration = Duration::from_secs(60);
const TYPED: Duration = Duration::from_secs(30);

fn cloud() -> (Cloud, DeployUser) {
    let mut cloud = Cloud::start().unwrap();
    cloud.add_host("h1", HostOpts::default()).unwrap();
    cloud.add_test_image().unwrap();
    let user = DeployUser::new(&cloud, "snapshots");
    (cloud, user)
}

fn console_log(cloud: &Cloud, user: &DeployUser, name: &str) -> std::path::PathBuf {
    let i = user.instance(name);
    cloud
        .host(i.host.as_deref().unwrap())
        .instance_dir(&i.id.to_string())
        .join("console.log")
}

fn snapshot(user: &DeployUser, name: &str) -> Snapshot {
    user.json(&["snapshot", "show", name])
}

#[test]
fn a_volume_snapshot_brings_back_what_was_written_and_clones_into_a_new_volume() {
    let (cloud, user) = cloud();
    user.ok(&["volume", "create", "sd", "--size", "32M"]);
    let v: Volume = user.json(&["volume", "show", "sd"]);
    let t = Instant::now();
    user.ok(&[
        "instance", "create", "a", "--image", "cm-test", "--flavor", "m1.tiny", "--volume", "sd",
    ]);
    let mut a = cloud.console("a").unwrap();
    a.wait_for_boot(BOOT).unwrap();
    let (dev, _) = wait_disk(&mut a, &v.serial, t, BOOT).unwrap();
    // Mounted while the snapshot is taken: cm-guest freezes it around it.
    must(
        &mut a,
        &format!(
            "mke2fs -q /dev/{dev} && mkdir -p /mnt/v && mount /dev/{dev} /mnt/v && \
             echo first > /mnt/v/f && sync"
        ),
    )
    .unwrap();
    let t = Instant::now();
    user.ok(&["snapshot", "create", "s1", "--volume", "sd"]);
    println!(
        "snapshot of a mounted volume: {:.2} s",
        t.elapsed().as_secs_f64()
    );
    let s = snapshot(&user, "s1");
    assert_eq!(s.state, SnapshotState::Ready, "{s:?}");
    assert_eq!(s.consistency, Some(Consistency::Filesystem), "{s:?}");
    assert_eq!(s.size_bytes, Some(32 << 20));
    let list: Vec<Snapshot> = user.json(&["snapshot", "list", "--volume", "sd"]);
    assert_eq!(list.len(), 1, "{list:?}");
    // The guest was thawed: it writes again.
    must(&mut a, "echo second > /mnt/v/f && sync && umount /mnt/v").unwrap();

    // Restore needs the disk's user stopped; refused, nothing changes.
    let out = user.cm(&["snapshot", "restore", "s1"]);
    assert_ne!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("stop"), "{}", out.stderr);
    assert_eq!(read_file(&mut a, &dev, "f").unwrap(), "second");
    drop(a);

    user.ok(&["instance", "stop", "a"]);
    let t = Instant::now();
    user.ok(&["snapshot", "restore", "s1"]);
    println!("restore: {:.2} s", t.elapsed().as_secs_f64());
    user.ok(&["instance", "start", "a"]);
    nth_ready(&console_log(&cloud, &user, "a"), 2, BOOT).unwrap();
    let mut a = cloud.console("a").unwrap();
    let (dev, _) = wait_disk(&mut a, &v.serial, Instant::now(), SEE).unwrap();
    assert_eq!(read_file(&mut a, &dev, "f").unwrap(), "first");

    // A clone is a new volume with the snapshot's content.
    user.ok(&["snapshot", "clone", "s1", "--volume", "sd-copy"]);
    let c: Volume = user.json(&["volume", "show", "sd-copy"]);
    assert_eq!(
        (c.state, c.size_bytes, c.host.as_str()),
        (VolumeState::Available, 32 << 20, "h1")
    );
    let t = Instant::now();
    user.ok(&["volume", "attach", "sd-copy", "a"]);
    let (dev_c, _) = wait_disk(&mut a, &c.serial, t, SEE).unwrap();
    assert_eq!(read_file(&mut a, &dev_c, "f").unwrap(), "first");

    // What refers to what: a volume with snapshots stays until they go.
    user.ok(&["volume", "detach", "sd"]);
    let out = user.cm(&["volume", "delete", "sd"]);
    assert_ne!(out.code, 0, "deleted with a snapshot: {out:?}");
    user.ok(&["snapshot", "delete", "s1"]);
    user.ok(&["volume", "delete", "sd"]);
    let left: Vec<Snapshot> = user.json(&["snapshot", "list"]);
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn a_root_disk_snapshot_brings_back_the_root_as_it_was() {
    let (cloud, user) = cloud();
    let disk = test_disk();
    user.ok(&[
        "image",
        "add",
        "cm-test-disk",
        "--disk",
        &disk.to_string_lossy(),
    ]);
    user.ok(&[
        "instance",
        "create",
        "r",
        "--image",
        "cm-test-disk",
        "--flavor",
        "m1.tiny",
    ]);
    let log = console_log(&cloud, &user, "r");
    nth_ready(&log, 1, BOOT).unwrap();
    let mut con = cloud.console("r").unwrap();
    con.run("echo before > /root/f && sync", TYPED).unwrap();
    user.ok(&["snapshot", "create", "r1", "--instance", "r"]);
    let s = snapshot(&user, "r1");
    assert_eq!(s.state, SnapshotState::Ready, "{s:?}");
    println!("root snapshot consistency: {:?}", s.consistency);
    assert!(s.consistency.is_some(), "{s:?}");
    con.run("echo after > /root/f && sync", TYPED).unwrap();
    drop(con);

    // An instance with a root snapshot is not deleted (its disk holds it).
    let out = user.cm(&["instance", "delete", "r"]);
    assert_ne!(out.code, 0, "{out:?}");
    user.ok(&["instance", "stop", "r"]);
    user.ok(&["snapshot", "restore", "r1"]);
    user.ok(&["instance", "start", "r"]);
    nth_ready(&log, 2, BOOT).unwrap();
    let mut con = cloud.console("r").unwrap();
    assert_eq!(con.run("cat /root/f", TYPED).unwrap(), "before");

    // A kernel image has no root disk to snapshot.
    user.ok(&[
        "instance",
        "create",
        "k",
        "--image",
        "cm-test",
        "--flavor",
        "m1.tiny",
        "--no-wait",
    ]);
    let out = user.cm(&["snapshot", "create", "k1", "--instance", "k"]);
    assert_ne!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("root disk"), "{}", out.stderr);
}
