//! Issue 12 point 5: persistent roots through the real master and `cm`, on
//! simulated hosts (`cloudhostd --simulate`, which make a root volume's
//! file at once and boot the instance only once it exists), driven as a
//! user on the master's machine runs `cm` (the master's pointer file and a
//! home of its own). `--persistent` makes `NAME-root` and `cm instance
//! show` says so; the volume is `attached` with `root_of` and cannot be
//! deleted; a snapshot `--instance` goes to the volume; deleting the
//! instance leaves the volume `available`; `--root-volume` boots it again
//! (no `--image`); refusals: an image given with it, an empty volume, a
//! volume in use, neither image nor root volume; a restore of the root
//! volume's snapshot only once the instance is stopped; a master killed (-9)
//! right after `cm instance create --persistent`: one instance, one root
//! volume, the operation done once.

use serde_json::Value;
use std::time::Duration;
use test_infra::cli::{json, ok, refused, volume, wait_volume};
use test_infra::sim::{self, SimControl};
use test_infra::Cloud;

const WAIT: Duration = Duration::from_secs(60);

/// The simulated cloud with a real (small, empty) qcow2 disk image `disk`.
fn cloud() -> (Cloud, SimControl) {
    let (cloud, control) = sim::cloud(2);
    let path = cloud.dir.path().join("disk.qcow2");
    let out = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&path)
        .arg("32M")
        .output()
        .expect("qemu-img");
    assert!(out.status.success(), "{out:?}");
    cloud.add_disk_image("disk", &path).unwrap();
    (cloud, control)
}

fn names(cloud: &Cloud, what: &str) -> Vec<String> {
    json(cloud, &[what, "list"])
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_persistent_root_outlives_its_instance_and_boots_another() {
    let (mut cloud, control) = cloud();

    // --persistent: the root is the volume db-root, and show says so.
    let began = std::time::Instant::now();
    let out = ok(
        &cloud,
        &[
            "instance",
            "create",
            "db",
            "--image",
            "disk",
            "--memory",
            "64",
            "--persistent",
            "--host",
            "sim-1",
        ],
    );
    assert!(out.contains("instance db is running on sim-1"), "{out}");
    eprintln!(
        "cm instance create --persistent → running: {:.2}s",
        began.elapsed().as_secs_f64()
    );
    let show = ok(&cloud, &["instance", "show", "db"]);
    assert!(
        show.lines()
            .any(|l| l.trim() == "root: persistent, volume db-root"),
        "{show}"
    );
    let v = wait_volume(&cloud, "db-root", "attached", WAIT);
    assert_eq!(
        (&v["root_of"], &v["attached_to"], &v["image"], &v["host"]),
        (
            &Value::from("db"),
            &Value::from("db"),
            &Value::from("disk"),
            &Value::from("sim-1")
        ),
        "{v}"
    );
    assert_eq!(v["size_bytes"], 32u64 << 20, "the image's virtual size");
    let shown = ok(&cloud, &["volume", "show", "db-root"]);
    assert!(shown.contains("root of: db"), "{shown}");
    let listed = ok(&cloud, &["volume", "list"]);
    assert!(listed.contains("db (root)"), "{listed}");

    // An ephemeral instance says what its root is too.
    ok(
        &cloud,
        &[
            "instance", "create", "tmp", "--image", "disk", "--memory", "64", "--host", "sim-1",
        ],
    );
    let show = ok(&cloud, &["instance", "show", "tmp"]);
    assert!(
        show.lines()
            .any(|l| l.trim() == "root: ephemeral (overlay on disk, deleted with the instance)"),
        "{show}"
    );
    ok(&cloud, &["instance", "delete", "tmp"]);

    // While db boots from it: no delete, no attach elsewhere, no image delete.
    refused(&cloud, &["volume", "delete", "db-root"], "root disk of db");
    refused(&cloud, &["volume", "detach", "db-root"], "root disk of db");
    refused(&cloud, &["image", "delete", "disk"], "origin of volumes");

    // A snapshot of the instance is a snapshot of its root volume.
    ok(&cloud, &["snapshot", "create", "s1", "--instance", "db"]);
    let s = json(&cloud, &["snapshot", "show", "s1"]);
    assert_eq!(s["of"], "volume", "{s}");
    ok(&cloud, &["snapshot", "delete", "s1"]);

    // Deleting the instance keeps the volume, available, with its image.
    ok(&cloud, &["instance", "delete", "db"]);
    let v = wait_volume(&cloud, "db-root", "available", WAIT);
    assert!(v.get("root_of").is_none(), "{v}");
    assert_eq!(v["image"], "disk", "{v}");

    // Refusals of --root-volume change nothing.
    refused(
        &cloud,
        &[
            "instance",
            "create",
            "x",
            "--root-volume",
            "db-root",
            "--image",
            "disk",
            "--memory",
            "64",
        ],
        "leave image out",
    );
    ok(
        &cloud,
        &[
            "volume", "create", "empty", "--size", "8M", "--host", "sim-1",
        ],
    );
    refused(
        &cloud,
        &[
            "instance",
            "create",
            "x",
            "--root-volume",
            "empty",
            "--memory",
            "64",
        ],
        "made empty",
    );
    refused(
        &cloud,
        &["instance", "create", "x", "--memory", "64"],
        "--image",
    );
    assert!(!names(&cloud, "instance").contains(&"x".to_string()));

    // --root-volume boots it again, on its host, with its image.
    let out = ok(
        &cloud,
        &[
            "instance",
            "create",
            "db2",
            "--root-volume",
            "db-root",
            "--memory",
            "64",
        ],
    );
    assert!(out.contains("instance db2 is running on sim-1"), "{out}");
    let db2 = json(&cloud, &["instance", "show", "db2"]);
    assert_eq!(
        (&db2["image"], &db2["root_volume"]),
        (&Value::from("disk"), &Value::from("db-root")),
        "{db2}"
    );
    let v = wait_volume(&cloud, "db-root", "attached", WAIT);
    assert_eq!(v["root_of"], "db2", "{v}");
    refused(
        &cloud,
        &[
            "instance",
            "create",
            "x",
            "--root-volume",
            "db-root",
            "--memory",
            "64",
        ],
        "in use by db2",
    );

    // A restore of its root volume's snapshot needs the instance stopped.
    ok(&cloud, &["snapshot", "create", "s2", "--instance", "db2"]);
    refused(&cloud, &["snapshot", "restore", "s2"], "stop db2 first");
    ok(&cloud, &["instance", "stop", "db2"]);
    ok(&cloud, &["snapshot", "restore", "s2"]);
    ok(&cloud, &["instance", "start", "db2"]);
    ok(&cloud, &["snapshot", "delete", "s2"]);

    // The master killed right after a persistent create, before the host
    // heard of it: one instance, one root volume, the operation done once.
    control.send("mute sim-2").unwrap();
    let op = json(
        &cloud,
        &[
            "instance",
            "create",
            "late",
            "--image",
            "disk",
            "--memory",
            "64",
            "--persistent",
            "--host",
            "sim-2",
            "--no-wait",
        ],
    );
    let op_id = op["id"].as_str().unwrap().to_string();
    assert_eq!(volume(&cloud, "late-root")["state"], "creating");
    cloud.stop_master(libc::SIGKILL);
    cloud.start_master().unwrap();
    control.send("unmute sim-2").unwrap();
    ok(&cloud, &["operation", "wait", &op_id]);
    let op = json(&cloud, &["operation", "show", &op_id]);
    assert_eq!(op["status"], "succeeded", "{op}");
    let v = wait_volume(&cloud, "late-root", "attached", WAIT);
    assert_eq!(v["root_of"], "late", "{v}");
    assert_eq!(names(&cloud, "volume"), ["db-root", "empty", "late-root"]);
    let instances = names(&cloud, "instance");
    assert_eq!(
        instances.iter().filter(|n| *n == "late").count(),
        1,
        "{instances:?}"
    );
    let made = ok(&cloud, &["event", "list", "--type", "instance.created"]);
    assert_eq!(made.matches("late").count(), 1, "{made}");
}
