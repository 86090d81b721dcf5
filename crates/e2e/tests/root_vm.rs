//! Issue 12, points 5, 7 and 9: persistent roots and images made from
//! instances, on real QEMU guests (TCG) booting the disk test guest
//! (`scripts/build-test-disk.sh`, `make image`), driven as a user drives
//! them: the real `cm` with the master's pointer file and its own HOME, the
//! guest's side through its serial console.

use cm_api::image::{FileRole, Image, ImageKind};
use cm_api::instance::{Instance, InstanceState};
use cm_api::volume::{Volume, VolumeState};
use sha2::{Digest, Sha256};
use std::time::{Duration, Instant};
use test_infra::console::{nth_ready, Console};
use test_infra::deploy::DeployUser;
use test_infra::paths::test_disk;
use test_infra::{Cloud, HostOpts};

/// A boot from disk takes about 10 s here alone; several times that on a
/// machine shared with other VM tests.
const BOOT: Duration = Duration::from_secs(150);
/// A command typed on the serial console.
const TYPED: Duration = Duration::from_secs(30);

fn cloud(hosts: &[&str]) -> (Cloud, DeployUser) {
    let mut cloud = Cloud::start().unwrap();
    for h in hosts {
        cloud.add_host(h, HostOpts::default()).unwrap();
    }
    cloud.add_disk_image("cm-test-disk", &test_disk()).unwrap();
    let user = DeployUser::new(&cloud, "roots");
    (cloud, user)
}

/// The console of `name` once its `n`th boot (of this instance) is ready.
fn ready_console(cloud: &Cloud, user: &DeployUser, name: &str, n: usize) -> Console {
    let i = user.instance(name);
    let host = i.host.expect("the instance has a host");
    let dir = cloud.host(&host).instance_dir(&i.id.to_string());
    let log = dir.join("console.log");
    let line = nth_ready(&log, n, BOOT).unwrap_or_else(|e| panic!("{name}: {e}"));
    println!("{name}: boot {n} ready: {line}");
    Console::connect(&dir.join("console.sock"), &log).expect("the console")
}

fn write_proof(con: &mut Console, path: &str, proof: &str) {
    let said = con
        .run(
            &format!("echo '{proof}' > {path} && sync && cat {path}"),
            TYPED,
        )
        .unwrap();
    assert_eq!(last_line(&said), proof);
}

/// The command's own answer: the console may carry the guest's messages
/// (cm-guest's start lines) before it.
fn last_line(said: &str) -> &str {
    said.lines().last().unwrap_or("")
}

fn read_proof(con: &mut Console, path: &str) -> String {
    let said = con.run(&format!("cat {path} 2>&1"), TYPED).unwrap();
    last_line(&said).to_string()
}

fn stop(user: &DeployUser, name: &str) {
    user.ok(&["instance", "stop", name]);
    let i = user.instance(name);
    assert_eq!(i.state, InstanceState::Stopped, "{i:?}");
}

#[test]
fn a_persistent_root_outlives_stops_agent_restarts_and_its_instance() {
    let t_all = Instant::now();
    let (mut cloud, user) = cloud(&["h1"]);
    user.ok(&[
        "instance",
        "create",
        "p1",
        "--image",
        "cm-test-disk",
        "--flavor",
        "m1.tiny",
        "--persistent",
    ]);
    // The choice is stated.
    let p1: Instance = user.json(&["instance", "show", "p1"]);
    assert_eq!(p1.root_volume.as_deref(), Some("p1-root"), "{p1:?}");
    let shown = user.ok(&["instance", "show", "p1"]);
    assert!(
        shown.contains("root: persistent, volume p1-root"),
        "cm instance show does not state the root:\n{shown}"
    );
    let v: Volume = user.json(&["volume", "show", "p1-root"]);
    assert_eq!(v.root_of.as_deref(), Some("p1"), "{v:?}");
    assert_eq!(v.image.as_deref(), Some("cm-test-disk"), "{v:?}");
    assert_eq!(v.state, VolumeState::Attached, "{v:?}");

    let mut con = ready_console(&cloud, &user, "p1", 1);
    let proof = format!("kept on the root volume of {}", p1.id);
    write_proof(&mut con, "/root/proof", &proof);
    drop(con);

    // Stop and start: the same disk.
    stop(&user, "p1");
    user.ok(&["instance", "start", "p1"]);
    let mut con = ready_console(&cloud, &user, "p1", 2);
    assert_eq!(read_proof(&mut con, "/root/proof"), proof);
    drop(con);

    // The host agent restarts under the running VM: still the same disk,
    // and a stop and start after it too.
    cloud.stop_host("h1", libc::SIGKILL);
    cloud.restart_host("h1").unwrap();
    stop(&user, "p1");
    user.ok(&["instance", "start", "p1"]);
    let mut con = ready_console(&cloud, &user, "p1", 3);
    assert_eq!(read_proof(&mut con, "/root/proof"), proof);
    drop(con);

    // The volume is not deleted while an instance boots from it.
    let refused = user.cm(&["volume", "delete", "p1-root"]);
    assert_ne!(refused.code, 0, "{refused:?}");
    assert!(refused.stderr.contains("p1"), "{}", refused.stderr);

    // The instance goes; its root stays, available.
    user.ok(&["instance", "delete", "p1"]);
    let v: Volume = user.json(&["volume", "show", "p1-root"]);
    assert_eq!(
        (v.state, v.root_of.as_deref()),
        (VolumeState::Available, None)
    );

    // A new instance boots from it and finds the file.
    user.ok(&[
        "instance",
        "create",
        "p2",
        "--root-volume",
        "p1-root",
        "--flavor",
        "m1.tiny",
    ]);
    let p2: Instance = user.json(&["instance", "show", "p2"]);
    assert_eq!(p2.root_volume.as_deref(), Some("p1-root"), "{p2:?}");
    assert_eq!(p2.image, "cm-test-disk", "{p2:?}");
    let mut con = ready_console(&cloud, &user, "p2", 1);
    assert_eq!(read_proof(&mut con, "/root/proof"), proof);
    drop(con);

    // A root volume does not move without its instance.
    let refused = user.cm(&["volume", "move", "p1-root", "--host", "h1"]);
    assert_ne!(refused.code, 0, "{refused:?}");
    assert!(
        refused.stderr.contains("root disk of instance p2"),
        "{}",
        refused.stderr
    );

    // An image of a persistent instance is its root volume's content.
    stop(&user, "p2");
    user.ok(&["image", "create", "kept", "--from-instance", "p2"]);
    let img: Image = user.json(&["image", "show", "kept"]);
    let on_master = cloud
        .master_dir()
        .join("images")
        .join(img.id.to_string())
        .join("disk");
    let v: Volume = user.json(&["volume", "show", "p1-root"]);
    let on_host = cloud
        .host("h1")
        .data_dir
        .join("volumes")
        .join(format!("{}.qcow2", v.id));
    let same = std::process::Command::new("qemu-img")
        .args(["compare", "-U"])
        .arg(&on_master)
        .arg(&on_host)
        .output()
        .unwrap();
    assert!(
        same.status.success(),
        "the image is not the root volume's content: {}",
        String::from_utf8_lossy(&same.stdout)
    );

    // An ephemeral instance says so.
    let e = user.cm(&[
        "instance",
        "create",
        "e1",
        "--image",
        "cm-test-disk",
        "--flavor",
        "m1.tiny",
        "--no-wait",
    ]);
    if e.code == 0 {
        let shown = user.ok(&["instance", "show", "e1"]);
        assert!(
            shown.contains("root: ephemeral (overlay on cm-test-disk"),
            "cm instance show does not state the root:\n{shown}"
        );
    } else {
        panic!("cm instance create e1: {}", e.stderr);
    }
    println!("whole test: {:?}", t_all.elapsed());
}

#[test]
fn an_image_made_from_an_instance_boots_on_another_host_with_its_file() {
    let t_all = Instant::now();
    let (cloud, user) = cloud(&["h1", "h2"]);
    user.ok(&[
        "instance",
        "create",
        "src",
        "--image",
        "cm-test-disk",
        "--flavor",
        "m1.tiny",
        "--host",
        "h1",
    ]);
    let src = user.instance("src");
    let mut con = ready_console(&cloud, &user, "src", 1);
    let proof = format!("bundled from {}", src.id);
    write_proof(&mut con, "/root/bundled", &proof);
    drop(con);

    // A running instance is refused; a stopped one is bundled.
    let refused = user.cm(&["image", "create", "golden", "--from-instance", "src"]);
    assert_ne!(refused.code, 0, "{refused:?}");
    assert!(refused.stderr.contains("stop"), "{}", refused.stderr);
    stop(&user, "src");
    let t = Instant::now();
    let out = user.ok(&["image", "create", "golden", "--from-instance", "src"]);
    println!(
        "cm image create --from-instance: {:.2} s",
        t.elapsed().as_secs_f64()
    );
    let img: Image = user.json(&["image", "show", "golden"]);
    assert_eq!(img.kind, ImageKind::Disk, "{img:?}");
    let file = img.file(FileRole::Disk).expect("a disk file").clone();
    assert!(out.contains(&file.sha256), "the sha256 is not said:\n{out}");
    assert_eq!(file.format.as_deref(), Some("qcow2"), "{file:?}");

    // The master's copy is what the record says: flat, with that sha256.
    let on_master = cloud
        .master_dir()
        .join("images")
        .join(img.id.to_string())
        .join("disk");
    let bytes = std::fs::read(&on_master).expect("the image's file on the master");
    assert_eq!(bytes.len() as u64, file.size);
    assert_eq!(hex::encode(Sha256::digest(&bytes)), file.sha256);
    let info = std::process::Command::new("qemu-img")
        .args(["info", "--output=json", "-U"])
        .arg(&on_master)
        .output()
        .unwrap();
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert!(info.get("backing-filename").is_none(), "{info}");

    // It boots on the other host, with the file in it.
    user.ok(&[
        "instance", "create", "copy", "--image", "golden", "--flavor", "m1.tiny", "--host", "h2",
    ]);
    let mut con = ready_console(&cloud, &user, "copy", 1);
    assert_eq!(read_proof(&mut con, "/root/bundled"), proof);
    println!("whole test: {:?}", t_all.elapsed());
}
