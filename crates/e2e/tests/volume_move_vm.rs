//! Issue 12, point 3: a volume moved to another host keeps what a guest
//! wrote on it, on real QEMU guests (TCG, the test image) in a cloud of two
//! hosts, driven as a user (`cm` with the master's pointer file and its own
//! HOME). The guest's side is read through its serial console.

use cm_api::volume::{Volume, VolumeState};
use std::time::{Duration, Instant};
use test_infra::console::Console;
use test_infra::deploy::DeployUser;
use test_infra::guest_disks::{read_file, wait_disk, wait_disk_gone, write_file};
use test_infra::{Cloud, HostOpts};

const BOOT: Duration = Duration::from_secs(120);
const SEE: Duration = Duration::from_secs(60);

fn boot(cloud: &Cloud, user: &DeployUser, name: &str, host: &str) -> Console {
    user.ok(&[
        "instance", "create", name, "--image", "cm-test", "--flavor", "m1.tiny", "--host", host,
    ]);
    let con = cloud.console(name).unwrap();
    con.wait_for_boot(BOOT).unwrap();
    con
}

fn volume(user: &DeployUser, name: &str) -> Volume {
    user.json(&["volume", "show", name])
}

#[test]
fn a_moved_volume_brings_its_files_to_a_guest_on_the_other_host() {
    let mut cloud = Cloud::start().unwrap();
    cloud.add_host("h1", HostOpts::default()).unwrap();
    cloud.add_host("h2", HostOpts::default()).unwrap();
    cloud.add_test_image().unwrap();
    let user = DeployUser::new(&cloud, "mover");
    let mut a = boot(&cloud, &user, "a", "h1");
    let mut b = boot(&cloud, &user, "b", "h2");

    user.ok(&["volume", "create", "data", "--size", "256M", "--host", "h1"]);
    let v = volume(&user, "data");
    let t = Instant::now();
    user.ok(&["volume", "attach", "data", "a"]);
    let (dev, _) = wait_disk(&mut a, &v.serial, t, SEE).unwrap();
    write_file(&mut a, &dev, "note", "written-on-h1").unwrap();

    // Across hosts, an attach is refused and says what to do.
    user.ok(&["volume", "detach", "data"]);
    wait_disk_gone(&mut a, &v.serial, SEE).unwrap();
    let refused = user.cm(&["volume", "attach", "data", "b"]);
    assert_ne!(refused.code, 0, "{refused:?}");
    assert!(
        refused.stderr.contains("move"),
        "the refusal does not name cm volume move: {}",
        refused.stderr
    );

    // The move says how long it took; the old host's file is gone.
    let old_file = cloud
        .host("h1")
        .data_dir
        .join("volumes")
        .join(format!("{}.qcow2", v.id));
    assert!(old_file.exists());
    let t = Instant::now();
    let said = user.ok(&["volume", "move", "data", "--host", "h2"]);
    println!(
        "cm volume move (256 MiB volume): {:.2} s: {}",
        t.elapsed().as_secs_f64(),
        said.trim()
    );
    assert!(
        said.contains("h1") && said.contains("h2") && said.contains(" s"),
        "{said}"
    );
    let moved = volume(&user, "data");
    assert_eq!(
        (
            moved.host.as_str(),
            moved.state,
            moved.id,
            moved.serial.clone()
        ),
        ("h2", VolumeState::Available, v.id, v.serial.clone())
    );
    test_infra::wait_until("the old host removes its file", SEE, || {
        (!old_file.exists()).then_some(())
    })
    .unwrap();

    // Attached on the new host, the guest there reads what was written.
    let t = Instant::now();
    user.ok(&["volume", "attach", "data", "b"]);
    let (dev, _) = wait_disk(&mut b, &v.serial, t, SEE).unwrap();
    assert_eq!(read_file(&mut b, &dev, "note").unwrap(), "written-on-h1");
}
