//! Issue 12: volumes through the real master and `cm`, on simulated hosts
//! (`cloudhostd --simulate --sim-control`, which keep volume files in
//! memory and attach them at once), driven as a user on the master's
//! machine runs `cm` (the master's pointer file and a home of its own, no
//! URL or token given). Create, list, show, resize (a shrink refused),
//! attach, detach, delete (refused while attached), a volume too big for
//! any host (409, host), `instance create --volume` placed on the volume's
//! host, a cross-host attach refused, a guest that never releases its disk
//! (the detach fails and the volume stays attached; `--force` restarts the
//! VM without it), an instance deleted with a volume leaving it
//! `available`, and a master killed (-9) right after `cm volume create`
//! before the host made the file: one volume, its operation done once.

use std::time::Duration;
use test_infra::cli::{json, ok, refused, volume, wait_volume};
use test_infra::sim::{self, SimControl};
use test_infra::Cloud;

const WAIT: Duration = Duration::from_secs(60);

fn cloud() -> (Cloud, SimControl) {
    sim::cloud(2)
}

#[test]
fn volumes_are_made_attached_detached_and_deleted_as_a_user_asks() {
    let (mut cloud, control) = cloud();

    // Create, list, show.
    let began = std::time::Instant::now();
    let out = ok(
        &cloud,
        &[
            "volume", "create", "data", "--size", "64M", "--host", "sim-1",
        ],
    );
    assert!(
        out.contains("volume data is available on sim-1 (64M)"),
        "{out}"
    );
    eprintln!(
        "cm volume create → available: {:.2}s",
        began.elapsed().as_secs_f64()
    );
    let list = json(&cloud, &["volume", "list"]);
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    let v = volume(&cloud, "data");
    assert_eq!(v["size_bytes"], 64u64 << 20);
    assert!(v["serial"].as_str().unwrap().starts_with("cm"), "{v}");
    let host = json(&cloud, &["host", "show", "sim-1"]);
    assert_eq!(host["volume_count"], 1, "{host}");

    // Refusals change nothing.
    refused(
        &cloud,
        &["volume", "create", "data", "--size", "1M"],
        "exists",
    );
    let out = refused(
        &cloud,
        &["volume", "create", "huge", "--size", "4T"],
        "room",
    );
    assert!(out.stderr.contains("host"), "{}", out.stderr);
    refused(
        &cloud,
        &["volume", "create", "zero", "--size", "0"],
        "size_bytes",
    );
    refused(
        &cloud,
        &["volume", "resize", "data", "--size", "32M"],
        "never shrunk",
    );
    assert_eq!(
        json(&cloud, &["volume", "list"]).as_array().unwrap().len(),
        1
    );

    // Resize.
    let out = ok(&cloud, &["volume", "resize", "data", "--size", "128M"]);
    assert!(out.contains("(128M)"), "{out}");

    // An instance created with the volume runs on the volume's host.
    ok(
        &cloud,
        &[
            "instance", "create", "web", "--image", "img", "--memory", "64", "--volume", "data",
        ],
    );
    let web = json(&cloud, &["instance", "show", "web"]);
    assert_eq!(web["host"], "sim-1", "{web}");
    assert_eq!(web["volumes"][0], "data", "{web}");
    let v = wait_volume(&cloud, "data", "attached", WAIT);
    assert_eq!(v["attached_to"], "web");
    refused(
        &cloud,
        &[
            "instance", "create", "two", "--image", "img", "--memory", "64", "--volume", "data",
        ],
        "attached to web",
    );
    refused(&cloud, &["volume", "delete", "data"], "detach it first");

    // A volume of the other host cannot be attached to web.
    ok(
        &cloud,
        &[
            "volume", "create", "far", "--size", "16M", "--host", "sim-2",
        ],
    );
    refused(&cloud, &["volume", "attach", "far", "web"], "its own host");
    refused(
        &cloud,
        &[
            "instance", "create", "x", "--image", "img", "--memory", "64", "--volume", "far",
            "--host", "sim-1",
        ],
        "not sim-1",
    );

    // Detach and attach again (hot-plug on the running VM).
    let out = ok(&cloud, &["volume", "detach", "data"]);
    assert!(out.contains("is available"), "{out}");
    let began = std::time::Instant::now();
    let out = ok(&cloud, &["volume", "attach", "data", "web"]);
    assert!(out.contains("attached to web"), "{out}");
    eprintln!(
        "cm volume attach → attached: {:.2}s",
        began.elapsed().as_secs_f64()
    );

    // A guest that never releases the disk: the detach fails, the volume
    // stays attached; --force restarts the VM without it.
    control.send("hang data").unwrap();
    refused(&cloud, &["volume", "detach", "data"], "--force");
    let v = wait_volume(&cloud, "data", "attached", WAIT);
    assert_eq!(v["attached_to"], "web");
    let out = ok(&cloud, &["volume", "detach", "data", "--force"]);
    assert!(out.contains("is available"), "{out}");
    control.send("unhang data").unwrap();
    let web = json(&cloud, &["instance", "show", "web"]);
    assert!(web.get("volumes").is_none(), "{web}");
    ok(&cloud, &["volume", "delete", "data"]);
    refused(&cloud, &["volume", "show", "data"], "not found");

    // An instance deleted with its volume leaves it available.
    ok(
        &cloud,
        &[
            "instance", "create", "keeper", "--image", "img", "--memory", "64", "--host", "sim-2",
        ],
    );
    ok(&cloud, &["volume", "attach", "far", "keeper"]);
    ok(&cloud, &["instance", "delete", "keeper"]);
    wait_volume(&cloud, "far", "available", WAIT);

    // The master killed right after a create, before the host made the
    // file (the host is held silent): one volume, its operation done once.
    control.send("mute sim-2").unwrap();
    let op = json(
        &cloud,
        &[
            "volume",
            "create",
            "late",
            "--size",
            "8M",
            "--host",
            "sim-2",
            "--no-wait",
        ],
    );
    let op_id = op["id"].as_str().unwrap().to_string();
    assert_eq!(volume(&cloud, "late")["state"], "creating");
    cloud.stop_master(libc::SIGKILL);
    cloud.start_master().unwrap();
    control.send("unmute sim-2").unwrap();
    let out = ok(&cloud, &["operation", "wait", &op_id]);
    assert!(out.contains("succeeded") || out.contains("late"), "{out}");
    let op = json(&cloud, &["operation", "show", &op_id]);
    assert_eq!(op["status"], "succeeded", "{op}");
    let names: Vec<String> = json(&cloud, &["volume", "list"])
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["far", "late"]);
    eprintln!(
        "master killed after create: the operation ended {}",
        op["progress"]
    );
    let made = ok(&cloud, &["event", "list", "--type", "volume.created"]);
    assert_eq!(made.matches("late").count(), 1, "{made}");
}
