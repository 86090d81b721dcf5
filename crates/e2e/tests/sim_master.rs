//! Issue 10, point 7: the real master against simulated hosts
//! (`cloudhostd --simulate N`: the agent's own registration, long-poll and
//! report, no QEMU). What needs hosts but not guests runs here in a second
//! or two: placement, every instance action and its states, the refusals
//! that need a host to exist, and a host that goes silent.

use serde_json::{json, Value};
use std::time::{Duration, Instant};
use test_infra::rest::{assert_error, get_json, post_json};
use test_infra::{wait_until, Cloud, HostOpts, MasterOpts};

/// Generous: the machine may be busy; the simulated steps take milliseconds.
const WAIT: Duration = Duration::from_secs(30);

/// Simulated hosts that prepare in 20 ms, boot in 200 ms, stop in 100 ms.
fn sim(n: u32, memory_mib: u64) -> HostOpts {
    HostOpts {
        memory_mib: Some(memory_mib),
        extra: [
            "--simulate",
            &n.to_string(),
            "--sim-prepare-ms",
            "20",
            "--sim-boot-ms",
            "200",
            "--sim-stop-ms",
            "100",
            "--sim-beat-ms",
            "500",
        ]
        .map(String::from)
        .to_vec(),
        ..Default::default()
    }
}

/// A master, `n` simulated hosts named `sim-1`... ready, and an image.
fn cloud(n: u32, master: MasterOpts) -> Cloud {
    let mut cloud = Cloud::start_with(master).unwrap();
    cloud.spawn_host_as("sim", "sim", sim(n, 4096)).unwrap();
    for i in 1..=n {
        cloud
            .wait_host_state(&format!("sim-{i}"), "ready", WAIT)
            .unwrap();
    }
    // The simulator never boots it: any two files make an image.
    let dir = cloud.dir.path().to_path_buf();
    let (k, i) = (dir.join("vmlinuz"), dir.join("initrd"));
    std::fs::write(&k, b"not a kernel").unwrap();
    std::fs::write(&i, b"not an initrd").unwrap();
    cloud.cm_ok(&[
        "image",
        "add",
        "img",
        "--kernel",
        k.to_str().unwrap(),
        "--initrd",
        i.to_str().unwrap(),
    ]);
    cloud
}

fn instance(cloud: &Cloud, name: &str) -> Option<Value> {
    match get_json(cloud, &format!("/v1/instances/{name}")) {
        (200, v) => Some(v),
        _ => None,
    }
}

fn wait_state(cloud: &Cloud, name: &str, state: &str) -> Value {
    wait_until(&format!("{name} to be {state}"), WAIT, || {
        instance(cloud, name).filter(|i| i["state"] == state)
    })
    .unwrap()
}

fn names(cloud: &Cloud) -> Vec<String> {
    let (s, v) = get_json(cloud, "/v1/instances");
    assert_eq!(s, 200, "{v}");
    let mut n: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap_or_default().to_string())
        .collect();
    n.sort();
    n
}

fn create(cloud: &Cloud, body: Value) -> (u16, Value) {
    post_json(cloud, "/v1/instances", &body)
}

#[test]
fn instances_are_placed_on_simulated_hosts_and_go_through_every_action() {
    let cloud = cloud(3, MasterOpts::default());
    let began = Instant::now();
    for i in 1..=6 {
        let (s, v) = create(
            &cloud,
            json!({"name": format!("w{i}"), "image": "img", "flavor": "m1.tiny"}),
        );
        assert!(s == 201 || s == 202, "create w{i}: {s} {v}");
    }
    let mut on = std::collections::BTreeSet::new();
    for i in 1..=6 {
        let v = wait_state(&cloud, &format!("w{i}"), "running");
        on.insert(v["host"].as_str().unwrap().to_string());
        assert_eq!(v["accel"], "auto", "{v}");
    }
    assert!(on.iter().all(|h| h.starts_with("sim-")), "{on:?}");
    assert_eq!(names(&cloud), ["w1", "w2", "w3", "w4", "w5", "w6"]);
    // The relayed guest heartbeats reach the master.
    wait_until("w1's guest to beat", WAIT, || {
        instance(&cloud, "w1").filter(|i| i["guest"]["state"] == "up")
    })
    .unwrap();

    // (action, body, state reached, reason then)
    let table: [(&str, Value, &str, Option<&str>); 5] = [
        ("stop", json!({}), "stopped", Some("stopped")),
        ("start", json!({}), "running", None),
        ("reboot", json!({}), "running", None),
        (
            "stop",
            json!({"force": true}),
            "stopped",
            Some("stopped (forced off)"),
        ),
        ("start", json!({}), "running", None),
    ];
    for (action, body, state, reason) in table {
        let (s, v) = post_json(&cloud, &format!("/v1/instances/w1/{action}"), &body);
        assert!(s < 300, "{action}: {s} {v}");
        let v = wait_state(&cloud, "w1", state);
        match reason {
            Some(r) => assert_eq!(v["reason"], r, "{action}: {v}"),
            None => assert!(v["reason"].is_null(), "{action}: {v}"),
        }
    }
    let v = instance(&cloud, "w1").unwrap();
    assert_eq!(v["restart_count"], 0, "{v}");

    let (s, v) = http_delete(&cloud, "/v1/instances/w1");
    assert!(s < 300, "delete: {s} {v}");
    wait_until("w1 to be gone", WAIT, || {
        instance(&cloud, "w1").is_none().then_some(())
    })
    .unwrap();
    assert_eq!(names(&cloud), ["w2", "w3", "w4", "w5", "w6"]);
    eprintln!(
        "six instances placed, acted on and one deleted in {:?}",
        began.elapsed()
    );
}

fn http_delete(cloud: &Cloud, path: &str) -> (u16, Value) {
    test_infra::http(
        "DELETE",
        &format!("{}{path}", cloud.url),
        Some(&cloud.token),
        None,
    )
}

#[test]
fn refusals_that_need_hosts_change_nothing() {
    let cloud = cloud(2, MasterOpts::default());
    let (s, v) = create(
        &cloud,
        json!({"name": "a", "image": "img", "flavor": "m1.tiny", "host": "sim-2",
               "ports": [{"guest": 80, "host": 18080}]}),
    );
    assert!(s < 300, "{s} {v}");
    assert_eq!(wait_state(&cloud, "a", "running")["host"], "sim-2");

    // (what, request body, status, code, field)
    let table: Vec<(&str, Value, u16, &str, Option<&str>)> = vec![
        (
            "more memory than any host has",
            json!({"name": "b", "image": "img", "memory_mib": 1 << 20}),
            409,
            "no_capacity",
            Some("memory_mib"),
        ),
        (
            "no such host",
            json!({"name": "b", "image": "img", "flavor": "m1.tiny", "host": "nope"}),
            404,
            "not_found",
            Some("host"),
        ),
        (
            "a name in use",
            json!({"name": "a", "image": "img", "flavor": "m1.tiny"}),
            409,
            "already_exists",
            Some("name"),
        ),
        (
            "no such image",
            json!({"name": "b", "image": "nope", "flavor": "m1.tiny"}),
            404,
            "not_found",
            Some("image"),
        ),
        (
            "no such flavor",
            json!({"name": "b", "image": "img", "flavor": "m9.huge"}),
            404,
            "not_found",
            Some("flavor"),
        ),
        (
            "a host port taken on that host",
            json!({"name": "b", "image": "img", "flavor": "m1.tiny", "host": "sim-2",
                   "ports": [{"guest": 22, "host": 18080}]}),
            409,
            "no_capacity",
            Some("ports"),
        ),
        (
            "an invalid name",
            json!({"name": "B_", "image": "img", "flavor": "m1.tiny"}),
            400,
            "invalid_input",
            Some("name"),
        ),
    ];
    for (what, body, status, code, field) in table {
        let began = Instant::now();
        assert_error(what, create(&cloud, body), status, code, field);
        assert!(began.elapsed() < WAIT, "{what}");
        assert_eq!(names(&cloud), ["a"], "{what} changed the instances");
    }
    // Actions on what does not exist.
    for action in ["start", "stop", "reboot"] {
        let got = post_json(&cloud, &format!("/v1/instances/nope/{action}"), &json!({}));
        assert_error(action, got, 404, "not_found", None);
    }
    let (s, hosts) = get_json(&cloud, "/v1/hosts");
    assert_eq!(s, 200);
    let count: u64 = hosts
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["instance_count"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(count, 1, "{hosts}");
}

#[test]
fn a_silent_host_is_declared_down_and_comes_back_as_itself() {
    let opts = MasterOpts {
        host_down_after_secs: 2,
        extra: vec!["--down-host-op-timeout".into(), "1".into()],
        ..Default::default()
    };
    let mut cloud = cloud(1, opts);
    cloud.spawn_host_as("lone", "lone", sim(1, 4096)).unwrap();
    cloud.wait_host_state("lone-1", "ready", WAIT).unwrap();
    let body = json!({"name": "v", "image": "img", "flavor": "m1.tiny", "host": "lone-1"});
    let (s, v) = create(&cloud, body);
    assert!(s < 300, "{s} {v}");
    wait_state(&cloud, "v", "running");

    // Killed: its hosts go silent; the other simulator keeps reporting.
    let silent = Instant::now();
    cloud.stop_host("lone", libc::SIGKILL);
    cloud.wait_host_state("lone-1", "down", WAIT).unwrap();
    let took = silent.elapsed();
    eprintln!("lone-1 declared down {took:?} after it went silent (limit 2 s)");
    // Silent since its last report, up to one report interval (1 s) before.
    assert!(took >= Duration::from_secs(1), "down after {took:?}");
    assert_eq!(cloud.host_state("sim-1").as_deref(), Some("ready"));
    // An action on its instance waits for it, then fails, and says why.
    let got = post_json(&cloud, "/v1/instances/v/stop", &json!({}));
    let op = match got {
        (202, v) => v,
        other => panic!("stop on a down host: {other:?}"),
    };
    let id = op["operation"]["id"]
        .as_str()
        .or_else(|| op["id"].as_str())
        .unwrap()
        .to_string();
    let done = wait_until("the stop to fail", WAIT, || {
        let (_, o) = get_json(&cloud, &format!("/v1/operations/{id}"));
        (o["status"] == "failed").then_some(o)
    })
    .unwrap();
    assert_eq!(done["error"]["code"], "host_unavailable", "{done}");

    // Started again on its data dir: the same host, ready again.
    cloud.restart_host("lone").unwrap();
    cloud.wait_host_state("lone-1", "ready", WAIT).unwrap();
    let (_, hosts) = get_json(&cloud, "/v1/hosts");
    let lones = hosts
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["name"] == "lone-1")
        .count();
    assert_eq!(lones, 1, "{hosts}");
}
