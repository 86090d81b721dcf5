//! What the deployable tests on simulated hosts share: a cloud of
//! simulated hosts, `cm` run as a user on the master's machine, and the
//! deployable's slots and events as `cm` shows them.

use serde_json::Value;
use std::time::Duration;
use test_infra::deploy::DeployUser;
use test_infra::sim::{self, SimControl};
use test_infra::{wait_until, Cloud, MasterOpts};

/// Generous: the machine may be busy; the simulated steps take milliseconds.
pub const WAIT: Duration = Duration::from_secs(60);

/// A master and `hosts` simulated hosts (`sim-1`...), all ready, and an
/// image `img`.
pub fn cloud(hosts: u32) -> (Cloud, SimControl) {
    let mut cloud = Cloud::start_with(MasterOpts {
        report_interval_secs: 1,
        host_down_after_secs: 3,
        extra: vec![],
    })
    .unwrap();
    let control = SimControl::new(cloud.dir.path().join("sim.sock"));
    cloud
        .spawn_host_as("sim", "sim", sim::opts(hosts, 4096, &control.path))
        .unwrap();
    for n in 1..=hosts {
        cloud
            .wait_host_state(&format!("sim-{n}"), "ready", WAIT)
            .unwrap();
    }
    // The simulator never boots it: any two files make an image.
    cloud.add_fake_image("img");
    (cloud, control)
}

/// `cm` as a person on the master's machine runs it: no URL, token or
/// config given, only the master's pointer file and a home of its own.
pub fn cm(cloud: &Cloud, args: &[&str]) -> String {
    DeployUser::new(cloud, "").ok(args)
}

/// `cm --json ...`, parsed.
pub fn cm_json(cloud: &Cloud, args: &[&str]) -> Value {
    let mut a = vec!["--json"];
    a.extend_from_slice(args);
    let s = cm(cloud, &a);
    serde_json::from_str(&s).unwrap_or_else(|e| panic!("cm {args:?} gave no JSON ({e}): {s}"))
}

pub fn show(cloud: &Cloud) -> Value {
    cm_json(cloud, &["deploy", "show", "app"])
}

pub fn slot<'a>(d: &'a Value, name: &str) -> &'a Value {
    d["slots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no slot {name} in {d}"))
}

pub fn wait_healthy(cloud: &Cloud, what: &str) -> Value {
    wait_until(what, WAIT, || {
        let d = show(cloud);
        (d["state"] == "healthy").then_some(d)
    })
    .unwrap()
}

/// The deployable's events, as `cm --json deploy events app` prints them.
pub fn events(cloud: &Cloud) -> Vec<Value> {
    cm(cloud, &["--json", "deploy", "events", "app"])
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// The first event after `after` (a seq) that `ok` accepts.
pub fn wait_event(cloud: &Cloud, after: i64, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    wait_until(what, WAIT, || {
        events(cloud)
            .into_iter()
            .find(|e| e["seq"].as_i64().unwrap_or(0) > after && ok(e))
    })
    .unwrap()
}

/// The last event's seq so far.
pub fn last_seq(cloud: &Cloud) -> i64 {
    events(cloud)
        .iter()
        .filter_map(|e| e["seq"].as_i64())
        .max()
        .unwrap_or(0)
}

/// Live instances (not being deleted) of the deployable, by name.
pub fn live(cloud: &Cloud) -> Vec<(String, String)> {
    let v = cm_json(cloud, &["instance", "list"]);
    let mut out: Vec<(String, String)> = v
        .as_array()
        .or_else(|| v["instances"].as_array())
        .unwrap()
        .iter()
        .filter(|i| i["name"].as_str().unwrap_or("").starts_with("app-"))
        .filter(|i| i["state"] != "deleting")
        .map(|i| {
            (
                i["name"].as_str().unwrap().to_string(),
                i["host"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

/// The instance serving `slot` now.
pub fn instance_of(cloud: &Cloud, slot_name: &str) -> String {
    slot(&show(cloud), slot_name)["instance"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}
