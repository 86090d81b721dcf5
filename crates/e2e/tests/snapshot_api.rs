//! Issue 12 point 4: snapshots through the real master and `cm`, on a
//! simulated host (`cloudhostd --simulate --sim-control`, which takes,
//! reverts and removes snapshots at once in memory), driven as a user on
//! the master's machine runs `cm` (the master's pointer file and a home of
//! its own). Create (with its consistency: not `offline` while the VM
//! runs, `offline` once stopped), list and show, the refusals (a bad name,
//! no disk named, a kernel image's instance, restore while the instance
//! runs, delete of a volume with snapshots), restore once stopped, clone
//! into a new volume that attaches, deletes, and a master killed (-9) right
//! after `cm snapshot create` before the host took it: one snapshot, its
//! operation done once.

use serde_json::Value;
use std::time::Duration;
use test_infra::cli::{json, ok};
use test_infra::deploy::DeployUser;
use test_infra::sim::{self, SimControl};
use test_infra::{wait_until, Cloud};

const WAIT: Duration = Duration::from_secs(60);

fn cloud() -> (Cloud, SimControl) {
    sim::cloud(1)
}

/// A refusal: `cm` exits non-zero, says `words`, and nothing changes.
fn refused(cloud: &Cloud, args: &[&str], words: &str) {
    let before = json(cloud, &["snapshot", "list"]);
    let out = DeployUser::new(cloud, "").cm(args);
    assert_ne!(out.code, 0, "cm {args:?} should fail: {}", out.stdout);
    assert!(
        out.stderr.contains(words),
        "cm {args:?}: {words:?} not in {}",
        out.stderr
    );
    assert_eq!(json(cloud, &["snapshot", "list"]), before, "cm {args:?}");
    eprintln!("refused as it should be: {}", out.stderr.trim());
}

fn snapshot(cloud: &Cloud, name: &str) -> Value {
    json(cloud, &["snapshot", "show", name])
}

fn names(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn snapshots_are_taken_restored_cloned_and_deleted_as_a_user_asks() {
    let (mut cloud, control) = cloud();
    ok(&cloud, &["volume", "create", "data", "--size", "8M"]);
    ok(
        &cloud,
        &[
            "instance", "create", "web", "--image", "img", "--memory", "64", "--volume", "data",
        ],
    );
    wait_until("web to run", WAIT, || {
        let i = json(&cloud, &["instance", "show", "web"]);
        (i["state"] == "running").then_some(())
    })
    .unwrap();

    // Taken while the VM runs: frozen by its guest or crash-consistent.
    let out = ok(&cloud, &["snapshot", "create", "s1", "--volume", "data"]);
    assert!(out.contains("snapshot s1 of volume data is ready"), "{out}");
    let s1 = snapshot(&cloud, "s1");
    assert_eq!(s1["state"], "ready", "{s1}");
    assert_eq!(s1["of"], "volume");
    assert_eq!(s1["source"], "data");
    assert_eq!(s1["host"], "sim-1");
    assert_eq!(s1["size_bytes"], 8 << 20);
    assert!(
        s1["consistency"] == "filesystem" || s1["consistency"] == "crash",
        "{s1}"
    );
    let table = ok(&cloud, &["snapshot", "list", "--volume", "data"]);
    assert!(table.contains("CONSISTENCY"), "{table}");
    assert!(
        table.contains(s1["consistency"].as_str().unwrap()),
        "{table}"
    );

    // Refusals: a 4xx with the field at fault; nothing changes.
    refused(
        &cloud,
        &["snapshot", "create", "Bad_Name", "--volume", "data"],
        "name",
    );
    refused(&cloud, &["snapshot", "create", "s9"], "--volume");
    refused(
        &cloud,
        &["snapshot", "create", "s1", "--volume", "data"],
        "exists",
    );
    refused(
        &cloud,
        &["snapshot", "create", "s9", "--volume", "nope"],
        "not found",
    );
    refused(
        &cloud,
        &["snapshot", "create", "s9", "--instance", "web"],
        "no root disk",
    );
    refused(&cloud, &["snapshot", "restore", "s1"], "stop web first");
    refused(&cloud, &["volume", "delete", "data"], "detach it first");

    // Stopped: restored in place; a new one is offline.
    ok(&cloud, &["instance", "stop", "web"]);
    let out = ok(&cloud, &["snapshot", "restore", "s1"]);
    assert!(out.contains("is ready"), "{out}");
    let ops = json(&cloud, &["operation", "list"]);
    let restore = ops
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["kind"] == "snapshot.restore")
        .cloned()
        .unwrap();
    assert_eq!(restore["status"], "succeeded", "{restore}");
    ok(&cloud, &["snapshot", "create", "s2", "--volume", "data"]);
    assert_eq!(snapshot(&cloud, "s2")["consistency"], "offline");
    assert_eq!(
        names(&json(&cloud, &["snapshot", "list", "--volume", "data"])),
        ["s1", "s2"]
    );

    // A clone is a new volume on the snapshot's host, of its size, that
    // attaches like any other.
    let out = ok(&cloud, &["snapshot", "clone", "s1", "--volume", "copy"]);
    assert!(out.contains("volume copy is available on sim-1"), "{out}");
    let copy = json(&cloud, &["volume", "show", "copy"]);
    assert_eq!(copy["size_bytes"], 8 << 20);
    ok(&cloud, &["volume", "attach", "copy", "web"]);
    assert_eq!(
        json(&cloud, &["volume", "show", "copy"])["state"],
        "attached"
    );

    // A volume with snapshots is not deleted; its snapshots are, then it is.
    ok(&cloud, &["volume", "detach", "data"]);
    refused(
        &cloud,
        &["volume", "delete", "data"],
        "delete its snapshots first",
    );
    ok(&cloud, &["snapshot", "delete", "s1"]);
    ok(&cloud, &["snapshot", "delete", "s2"]);
    assert!(names(&json(&cloud, &["snapshot", "list"])).is_empty());
    ok(&cloud, &["volume", "delete", "data"]);

    // The master killed right after a create, before the host took it
    // (the host is held silent): one snapshot, its operation done once.
    control.send("mute sim-1").unwrap();
    let op = json(
        &cloud,
        &[
            "snapshot",
            "create",
            "late",
            "--volume",
            "copy",
            "--no-wait",
        ],
    );
    let op_id = op["id"].as_str().unwrap().to_string();
    assert_eq!(snapshot(&cloud, "late")["state"], "creating");
    cloud.stop_master(libc::SIGKILL);
    cloud.start_master().unwrap();
    control.send("unmute sim-1").unwrap();
    ok(&cloud, &["operation", "wait", &op_id]);
    let op = json(&cloud, &["operation", "show", &op_id]);
    assert_eq!(op["status"], "succeeded", "{op}");
    eprintln!(
        "master killed after create: the operation ended {}",
        op["progress"]
    );
    assert_eq!(names(&json(&cloud, &["snapshot", "list"])), ["late"]);
    let made = ok(&cloud, &["event", "list", "--type", "snapshot.created"]);
    assert_eq!(made.matches("late").count(), 1, "{made}");
}
