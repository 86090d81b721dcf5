//! Issue 12, points 1, 2 and 9: volumes on real QEMU guests (TCG, the test
//! image), driven as a user drives them (`cm` with the master's pointer
//! file and its own HOME). The guest's side is read through its serial
//! console: the disk is found by the serial cloudmaster gives it.

use cm_api::instance::{Instance, InstanceState};
use cm_api::volume::{Volume, VolumeState};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use test_infra::deploy::DeployUser;
use test_infra::guest_disks::{read_file, wait_disk, wait_disk_gone, write_file};
use test_infra::{wait_until, Cloud, HostOpts};

const BOOT: Duration = Duration::from_secs(120);
const SEE: Duration = Duration::from_secs(60);

fn cloud() -> (Cloud, DeployUser) {
    let mut cloud = Cloud::start().unwrap();
    cloud.add_host("h1", HostOpts::default()).unwrap();
    cloud.add_test_image().unwrap();
    let user = DeployUser::new(&cloud, "volumes");
    (cloud, user)
}

fn boot(
    cloud: &Cloud,
    user: &DeployUser,
    name: &str,
    more: &[&str],
) -> test_infra::console::Console {
    let mut args = vec![
        "instance", "create", name, "--image", "cm-test", "--flavor", "m1.tiny",
    ];
    args.extend_from_slice(more);
    user.ok(&args);
    let con = cloud.console(name).unwrap();
    con.wait_for_boot(BOOT).unwrap();
    con
}

fn volume(user: &DeployUser, name: &str) -> Volume {
    user.json(&["volume", "show", name])
}

fn file_of(cloud: &Cloud, v: &Volume) -> PathBuf {
    cloud
        .host(&v.host)
        .data_dir
        .join("volumes")
        .join(format!("{}.qcow2", v.id))
}

#[test]
fn a_volume_carries_its_files_from_one_guest_to_another() {
    let (cloud, user) = cloud();
    let mut a = boot(&cloud, &user, "a", &[]);
    let mut b = boot(&cloud, &user, "b", &[]);

    user.ok(&["volume", "create", "data", "--size", "64M"]);
    let v = volume(&user, "data");
    assert_eq!((v.state, v.size_bytes), (VolumeState::Available, 64 << 20));
    assert!(file_of(&cloud, &v).exists(), "{v:?}");

    // Hot-plugged into a running guest: it sees a new disk, no reboot.
    let t = Instant::now();
    user.ok(&["volume", "attach", "data", "a"]);
    let (dev, seen) = wait_disk(&mut a, &v.serial, t, SEE).unwrap();
    println!(
        "attach -> disk {dev} visible in the guest: {:.2} s",
        seen.as_secs_f64()
    );
    let v = volume(&user, "data");
    assert_eq!(v.state, VolumeState::Attached);
    assert_eq!(v.attached_to.as_deref(), Some("a"));
    let inst: Instance = user.json(&["instance", "show", "a"]);
    assert_eq!(inst.volumes, vec!["data".to_string()]);

    write_file(&mut a, &dev, "note", "written-by-a").unwrap();

    // Refusals change nothing.
    let out = user.cm(&["volume", "delete", "data"]);
    assert_ne!(out.code, 0, "deleted while attached: {out:?}");
    assert!(out.stderr.contains("attached"), "{}", out.stderr);
    let out = user.cm(&["volume", "attach", "data", "b"]);
    assert_ne!(out.code, 0, "attached twice: {out:?}");
    assert_eq!(volume(&user, "data").attached_to.as_deref(), Some("a"));

    // Detach: the guest releases the disk; then the other guest reads it.
    user.ok(&["volume", "detach", "data"]);
    wait_disk_gone(&mut a, &v.serial, SEE).unwrap();
    assert_eq!(volume(&user, "data").state, VolumeState::Available);
    let t = Instant::now();
    user.ok(&["volume", "attach", "data", "b"]);
    let (dev_b, _) = wait_disk(&mut b, &v.serial, t, SEE).unwrap();
    assert_eq!(read_file(&mut b, &dev_b, "note").unwrap(), "written-by-a");

    // Deleting the instance detaches its volume, which stays.
    user.ok(&["instance", "delete", "b"]);
    wait_until("the volume available again", SEE, || {
        (volume(&user, "data").state == VolumeState::Available).then_some(())
    })
    .unwrap();
    let file = file_of(&cloud, &v);
    assert!(file.exists());
    user.ok(&["volume", "delete", "data"]);
    let list: Vec<Volume> = user.json(&["volume", "list"]);
    assert!(list.iter().all(|x| x.name != "data"), "{list:?}");
    assert!(!file.exists(), "{} still there", file.display());
}

#[test]
fn a_guest_that_does_not_release_a_disk_keeps_it_unless_forced() {
    let (cloud, user) = cloud();
    let mut a = boot(&cloud, &user, "a", &[]);
    user.ok(&["volume", "create", "stuck", "--size", "16M"]);
    let v = volume(&user, "stuck");
    let t = Instant::now();
    user.ok(&["volume", "attach", "stuck", "a"]);
    wait_disk(&mut a, &v.serial, t, SEE).unwrap();

    // A paused guest never answers the ACPI eject.
    let inst: Instance = user.json(&["instance", "show", "a"]);
    let qmp = cloud
        .host("h1")
        .instance_dir(&inst.id.to_string())
        .join("qmp.sock");
    test_infra::qmp::call(&qmp, "stop").unwrap();
    let t = Instant::now();
    let out = user.cm(&["volume", "detach", "stuck"]);
    println!(
        "detach of a paused guest's disk failed after {:.1} s",
        t.elapsed().as_secs_f64()
    );
    assert_ne!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("--force"), "{}", out.stderr);
    let v = volume(&user, "stuck");
    assert_eq!(v.attached_to.as_deref(), Some("a"), "{v:?}");

    // --force restarts the VM without it; the volume is free.
    user.ok(&["volume", "detach", "stuck", "--force"]);
    let v = volume(&user, "stuck");
    assert_eq!((v.state, v.attached_to), (VolumeState::Available, None));
    let inst: Instance = user.json(&["instance", "show", "a"]);
    assert_eq!(inst.state, InstanceState::Running, "{inst:?}");
    assert!(inst.volumes.is_empty(), "{inst:?}");
    let a = cloud.console("a").unwrap();
    a.wait_for_boot(BOOT).unwrap();
}

#[test]
fn a_volume_given_at_create_is_there_at_boot_and_grows_online() {
    let (cloud, user) = cloud();
    user.ok(&["volume", "create", "boot-data", "--size", "32M"]);
    let v = volume(&user, "boot-data");
    let t = Instant::now();
    let mut c = boot(&cloud, &user, "c", &["--volume", "boot-data"]);
    let (dev, _) = wait_disk(&mut c, &v.serial, t, BOOT).unwrap();
    assert_eq!(
        test_infra::guest_disks::disk_bytes(&mut c, &dev).unwrap(),
        32 << 20
    );
    assert_eq!(volume(&user, "boot-data").state, VolumeState::Attached);

    // Shrinking is refused; growing is seen by the running guest.
    let out = user.cm(&["volume", "resize", "boot-data", "--size", "16M"]);
    assert_ne!(out.code, 0, "{out:?}");
    user.ok(&["volume", "resize", "boot-data", "--size", "48M"]);
    wait_until("the guest to see 48 MiB", SEE, || {
        (test_infra::guest_disks::disk_bytes(&mut c, &dev).ok()? == 48 << 20).then_some(())
    })
    .unwrap();
    assert_eq!(volume(&user, "boot-data").size_bytes, 48 << 20);
}

#[test]
fn an_agent_killed_in_the_middle_of_an_attach_finishes_it_once() {
    let (mut cloud, user) = cloud();
    let mut a = boot(&cloud, &user, "a", &[]);
    user.ok(&["volume", "create", "half", "--size", "16M"]);
    let v = volume(&user, "half");
    let t = Instant::now();
    user.ok(&["volume", "attach", "half", "a", "--no-wait"]);
    // Killed at once: the attach may be done, half done or not begun.
    cloud.stop_host("h1", libc::SIGKILL);
    cloud.restart_host("h1").unwrap();
    wait_until("the volume attached", SEE, || {
        (volume(&user, "half").state == VolumeState::Attached).then_some(())
    })
    .unwrap();
    wait_disk(&mut a, &v.serial, t, SEE).unwrap();
    // Exactly one disk with its serial, and QEMU holds it once.
    let all = a
        .run(
            "cat /sys/block/vd*/serial 2>/dev/null",
            Duration::from_secs(30),
        )
        .unwrap();
    assert_eq!(all.matches(&v.serial).count(), 1, "{all}");
    let inst: Instance = user.json(&["instance", "show", "a"]);
    let qmp = cloud
        .host("h1")
        .instance_dir(&inst.id.to_string())
        .join("qmp.sock");
    let blocks = test_infra::qmp::call(&qmp, "query-block").unwrap();
    let node = cm_api::volume::qemu_node(v.id);
    assert_eq!(
        blocks.to_string().matches(&format!("\"{node}\"")).count(),
        1,
        "{blocks}"
    );
}

/// A guest asked to release a disk while its OS is still booting never
/// hears it (Linux clears pending ACPI events as it starts): the host asks
/// again until it does, so a user who attaches and detaches at once, as
/// the README does, gets the detach.
#[test]
fn a_disk_detached_while_its_guest_boots_is_released_once_it_is_up() {
    let (cloud, user) = cloud();
    user.ok(&["volume", "create", "early", "--size", "16M"]);
    let v = volume(&user, "early");
    user.ok(&[
        "instance", "create", "e", "--image", "cm-test", "--flavor", "m1.tiny",
    ]);
    let t = Instant::now();
    user.ok(&["volume", "attach", "early", "e"]);
    user.ok(&["volume", "detach", "early"]);
    println!(
        "attach + detach during boot: {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let v2 = volume(&user, "early");
    assert_eq!((v2.state, v2.attached_to), (VolumeState::Available, None));
    let mut con = cloud.console("e").unwrap();
    con.wait_for_boot(BOOT).unwrap();
    wait_disk_gone(&mut con, &v.serial, SEE).unwrap();
}
