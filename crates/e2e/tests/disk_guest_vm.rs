//! Issue 12, groundwork for persistent roots and images from instances
//! (points 5 and 7): the tiny test guest as a bootable disk
//! (`scripts/build-test-disk.sh`, `make image`) boots through cloudmaster
//! from its own disk under TCG in seconds, its init and its agent come up as
//! the test image's do, and what is written on its root survives a stop and
//! a start. Driven as a user: the real `cm` with the master's pointer file
//! and a home of its own, the serial console through its socket. The boot
//! times are printed.

use cm_api::image::{Image, ImageKind};
use cm_api::instance::{Instance, InstanceState};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use test_infra::console::Console;
use test_infra::deploy::DeployUser;
use test_infra::paths::test_disk;
use test_infra::{wait_until, Cloud, HostOpts};

/// A boot from disk takes about 10 s here alone (SeaBIOS, extlinux, the
/// kernel); on a machine shared with other VM tests, several times that.
const BOOT: Duration = Duration::from_secs(90);
/// A command typed on the serial console.
const TYPED: Duration = Duration::from_secs(30);

/// The console of `name`, through its socket on its host.
fn console(cloud: &Cloud, user: &DeployUser, name: &str) -> (Console, PathBuf) {
    let i = user.instance(name);
    let host = i.host.expect("the instance has a host");
    let dir = cloud.host(&host).instance_dir(&i.id.to_string());
    let log = dir.join("console.log");
    (
        Console::connect(&dir.join("console.sock"), &log).expect("the console"),
        log,
    )
}

/// Wait for the `n`th `cm-init: ready` in the instance's serial log (kept
/// across boots); its line, once whole.
fn ready(log: &std::path::Path, n: usize) -> String {
    test_infra::console::nth_ready(log, n, BOOT).unwrap_or_else(|e| panic!("{e}"))
}

/// The guest's agent heartbeats since `since`: `up`, and its sequence
/// moves on.
fn heartbeats(user: &DeployUser, name: &str, since: SystemTime) {
    let since = since
        .duration_since(UNIX_EPOCH)
        .map(|d| i128::try_from(d.as_nanos()).unwrap_or(i128::MAX))
        .unwrap_or(0);
    let fresh = |i: &Instance| {
        i.guest.state == "up"
            && i.guest
                .last_heartbeat
                .is_some_and(|t| t.unix_timestamp_nanos() > since)
    };
    let up: Instance = wait_until("the guest agent's heartbeats", BOOT, || {
        Some(user.instance(name)).filter(fresh)
    })
    .unwrap_or_else(|e| panic!("{e}: {:?}", user.instance(name).guest));
    assert_eq!(up.guest.via.as_deref(), Some("virtio-serial"));
    let seq = up.guest.seq.expect("a heartbeat's sequence number");
    wait_until("a later heartbeat", Duration::from_secs(30), || {
        Some(user.instance(name)).filter(|i| fresh(i) && i.guest.seq.unwrap_or(0) > seq)
    })
    .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn the_disk_guest_boots_from_its_disk_and_keeps_what_it_wrote() {
    let t_all = Instant::now();
    let disk = test_disk();
    let mut cloud = Cloud::start().unwrap();
    cloud.add_host("h1", HostOpts::default()).unwrap();
    let user = DeployUser::new(&cloud, "disk-user");
    user.ok(&[
        "image",
        "add",
        "cm-test-disk",
        "--disk",
        &disk.to_string_lossy(),
    ]);
    let img: Image = user.json(&["image", "show", "cm-test-disk"]);
    assert_eq!(img.kind, ImageKind::Disk, "{img:?}");

    // First boot.
    let (t0, wall0) = (Instant::now(), SystemTime::now());
    user.ok(&[
        "instance",
        "create",
        "dg",
        "--image",
        "cm-test-disk",
        "--flavor",
        "m1.tiny",
    ]);
    let (mut con, log) = console(&cloud, &user, "dg");
    let line = ready(&log, 1);
    let boot1 = t0.elapsed();
    println!("first boot: {boot1:?} from cm instance create to {line:?}");
    heartbeats(&user, "dg", wall0);
    println!(
        "first boot: agent heartbeating {:?} after create",
        t0.elapsed()
    );

    // Its root is its disk, read-write, and a file written there is synced.
    let mounts = con.run("grep ' / ' /proc/mounts", TYPED).unwrap();
    assert!(
        mounts.lines().any(|l| l.starts_with("/dev/vda1 / ext4 rw")),
        "root is not /dev/vda1 read-write: {mounts}"
    );
    let id = user.instance("dg").id.to_string();
    let proof = format!("written on the root of {id}");
    let said = con
        .run(
            &format!("echo '{proof}' > /root/disk-proof && sync && cat /root/disk-proof"),
            TYPED,
        )
        .unwrap();
    assert_eq!(said, proof);
    drop(con);

    // Stop (ACPI: the guest powers off, its root read-only first), start.
    let t_stop = Instant::now();
    user.ok(&["instance", "stop", "dg"]);
    let stopped = user.instance("dg");
    assert_eq!(stopped.state, InstanceState::Stopped, "{stopped:?}");
    println!("stop: {:?}", t_stop.elapsed());
    let (t1, wall1) = (Instant::now(), SystemTime::now());
    user.ok(&["instance", "start", "dg"]);
    let (mut con, log) = console(&cloud, &user, "dg");
    let line = ready(&log, 2);
    let boot2 = t1.elapsed();
    println!("second boot: {boot2:?} from cm instance start to {line:?}");
    heartbeats(&user, "dg", wall1);

    // The file is there, on a root that was left clean (no journal to
    // replay: the stop was a clean shutdown).
    let back = con.run("cat /root/disk-proof", TYPED).unwrap();
    assert_eq!(back, proof, "the file written before the stop");
    let ext4 = con.run("dmesg | grep 'EXT4-fs (vda1)'", TYPED).unwrap();
    assert!(ext4.contains("mounted filesystem"), "{ext4}");
    assert!(
        !ext4.contains("recovery"),
        "the root was not clean after the stop: {ext4}"
    );
    assert!(
        boot1 < BOOT && boot2 < BOOT,
        "boots took {boot1:?} and {boot2:?}"
    );
    println!("whole test: {:?}", t_all.elapsed());
}
