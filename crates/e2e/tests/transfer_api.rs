//! Issue 12 points 3 and 7: transfers through the real master and `cm`, on
//! two simulated hosts (which flatten a disk into a real small qcow2 with
//! qemu-img, PUT it to the master and GET it back as a real host does),
//! driven as a user on the master's machine runs `cm`. A volume moved from
//! sim-1 to sim-2 (host, state, event, the old copy removed), the refusals
//! of a move (same host, unknown host, attached, with snapshots, bad body),
//! changes refused while a volume moves, an image made from a stopped
//! instance and an instance made from that image, and a master killed (-9)
//! mid-move: the move finishes once after the restart.

use std::time::Duration;
use test_infra::cli::{json, ok, refused, volume};
use test_infra::sim::{self, SimControl};
use test_infra::{wait_until, Cloud};

const WAIT: Duration = Duration::from_secs(60);

fn cloud() -> (Cloud, SimControl) {
    sim::cloud(2)
}

#[test]
fn volumes_move_between_hosts_and_images_are_made_from_instances() {
    let (mut cloud, control) = cloud();
    ok(
        &cloud,
        &[
            "volume", "create", "data", "--size", "64M", "--host", "sim-1",
        ],
    );
    let id = volume(&cloud, "data")["id"].clone();

    // Refusals: same host, unknown host (409, host), a bad body.
    refused(
        &cloud,
        &["volume", "move", "data", "--host", "sim-1"],
        "already",
    );
    refused(
        &cloud,
        &["volume", "move", "data", "--host", "nowhere"],
        "no host 'nowhere'",
    );
    refused(
        &cloud,
        &["volume", "move", "data", "--host", "Bad Name"],
        "host",
    );
    // Attached, and with snapshots: 409, field name.
    ok(
        &cloud,
        &[
            "instance", "create", "web", "--image", "img", "--memory", "64", "--host", "sim-1",
        ],
    );
    ok(&cloud, &["volume", "attach", "data", "web"]);
    refused(
        &cloud,
        &["volume", "move", "data", "--host", "sim-2"],
        "attached to web",
    );
    ok(&cloud, &["volume", "detach", "data"]);
    ok(&cloud, &["snapshot", "create", "s1", "--volume", "data"]);
    refused(
        &cloud,
        &["volume", "move", "data", "--host", "sim-2"],
        "has snapshots",
    );
    ok(&cloud, &["snapshot", "delete", "s1"]);

    // The move: sim-1 sends a flattened qcow2, sim-2 fetches it.
    let out = ok(&cloud, &["volume", "move", "data", "--host", "sim-2"]);
    assert!(
        out.contains("moved data from sim-1 to sim-2: 64M ("),
        "{out}"
    );
    assert!(out.contains(" s"), "{out}");
    eprintln!("{}", out.trim());
    let v = volume(&cloud, "data");
    assert_eq!(v["host"], "sim-2", "{v}");
    assert_eq!(v["state"], "available", "{v}");
    assert_eq!(v["id"], id, "a moved volume keeps its id");
    let moved = ok(&cloud, &["event", "list", "--type", "volume.moved"]);
    assert_eq!(moved.matches("data").count(), 1, "{moved}");
    // It can be used on its new host.
    ok(
        &cloud,
        &[
            "instance", "create", "db", "--image", "img", "--memory", "64", "--host", "sim-2",
        ],
    );
    ok(&cloud, &["volume", "attach", "data", "db"]);
    ok(&cloud, &["volume", "detach", "data"]);

    // While it moves (sim-2, the source, held silent), changes are refused.
    control.send("mute sim-2").unwrap();
    let acc = json(
        &cloud,
        &["volume", "move", "data", "--host", "sim-1", "--no-wait"],
    );
    let op_id = acc["id"].as_str().unwrap().to_string();
    let v = volume(&cloud, "data");
    assert_eq!(v["state"], "moving", "{v}");
    assert_eq!(v["moving_to"], "sim-1", "{v}");
    refused(&cloud, &["volume", "delete", "data"], "is moving to sim-1");
    refused(
        &cloud,
        &["volume", "resize", "data", "--size", "128M"],
        "is moving to sim-1",
    );
    refused(
        &cloud,
        &["snapshot", "create", "s2", "--volume", "data"],
        "is moving to sim-1",
    );
    // The master killed mid-move: the move finishes once after the restart.
    cloud.stop_master(libc::SIGKILL);
    cloud.start_master().unwrap();
    control.send("unmute sim-2").unwrap();
    ok(&cloud, &["operation", "wait", &op_id]);
    let op = json(&cloud, &["operation", "show", &op_id]);
    assert_eq!(op["status"], "succeeded", "{op}");
    let v = volume(&cloud, "data");
    assert_eq!(v["host"], "sim-1", "{v}");
    let moved = ok(&cloud, &["event", "list", "--type", "volume.moved"]);
    assert_eq!(moved.matches("data").count(), 2, "{moved}");
    eprintln!("master killed mid-move: {}", op["progress"]);

    // An image from a stopped instance of a disk image.
    let disk = cloud.dir.path().join("base.qcow2");
    let made = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&disk)
        .arg("16M")
        .status()
        .unwrap();
    assert!(made.success());
    ok(
        &cloud,
        &["image", "add", "base", "--disk", &disk.to_string_lossy()],
    );
    ok(
        &cloud,
        &[
            "instance", "create", "src", "--image", "base", "--memory", "64", "--host", "sim-1",
        ],
    );
    refused(
        &cloud,
        &["image", "create", "golden", "--from-instance", "src"],
        "must be stopped",
    );
    refused(
        &cloud,
        &["image", "create", "golden", "--from-instance", "web"],
        "kernel image",
    );
    ok(&cloud, &["instance", "stop", "src"]);
    refused(
        &cloud,
        &["image", "create", "base", "--from-instance", "src"],
        "exists already",
    );
    // While it is made (sim-1 held silent), the instance is not started.
    control.send("mute sim-1").unwrap();
    let op = json(
        &cloud,
        &[
            "image",
            "create",
            "golden",
            "--from-instance",
            "src",
            "--no-wait",
        ],
    );
    let op_id = op["id"].as_str().unwrap().to_string();
    refused(
        &cloud,
        &["instance", "start", "src"],
        "image 'golden' is being made from instance 'src'",
    );
    refused(
        &cloud,
        &["image", "create", "golden", "--from-instance", "src"],
        "exists already",
    );
    control.send("unmute sim-1").unwrap();
    ok(&cloud, &["operation", "wait", &op_id]);
    let out = ok(&cloud, &["image", "show", "golden"]);
    assert!(out.contains("golden"), "{out}");
    assert!(out.contains("sha256:"), "{out}");
    eprintln!("{}", out.trim());
    let img = json(&cloud, &["image", "show", "golden"]);
    assert_eq!(img["kind"], "disk", "{img}");
    assert_eq!(img["files"][0]["format"], "qcow2", "{img}");
    let added = ok(&cloud, &["event", "list", "--type", "image.added"]);
    assert!(added.contains("golden"), "{added}");
    // An instance of the new image, on the other host.
    ok(
        &cloud,
        &[
            "instance", "create", "copy", "--image", "golden", "--memory", "64", "--host", "sim-2",
        ],
    );
    wait_until("copy to run", WAIT, || {
        let i = json(&cloud, &["instance", "show", "copy"]);
        (i["state"] == "running").then_some(())
    })
    .unwrap();
}
