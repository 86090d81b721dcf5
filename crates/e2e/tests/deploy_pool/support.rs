//! deploy_pool.rs's helpers: `cm` as a user and the deployable's view
//! (HAProxy's own view and the load loop are `test_infra::balancer`).

use serde_json::Value;
use std::time::Duration;
use test_infra::deploy::DeployUser;
use test_infra::{wait_until, Cloud};

/// Generous: the machine may be busy; the simulated steps take milliseconds.
pub const WAIT: Duration = Duration::from_secs(90);

/// `cm` as a person on the master's machine runs it (the master's
/// pointer file, a home of its own; no URL or token given).
pub fn cm(cloud: &Cloud, args: &[&str]) -> String {
    DeployUser::new(cloud, "").ok(args)
}

pub fn show(cloud: &Cloud) -> Value {
    let s = cm(cloud, &["--json", "deploy", "show", "shop"]);
    serde_json::from_str(&s).unwrap_or_else(|e| panic!("{e}: {s}"))
}

pub fn apply(cloud: &Cloud, text: &str) {
    let file = cloud.dir.path().join("shop.yaml");
    std::fs::write(&file, text).unwrap();
    cm(
        cloud,
        &["deploy", "apply", "--file", file.to_str().unwrap()],
    );
}

/// Healthy, every slot at `generation`.
pub fn wait_healthy(cloud: &Cloud, generation: u64, what: &str) -> Value {
    wait_until(what, WAIT, || {
        let d = show(cloud);
        let at_gen = d["slots"]
            .as_array()
            .is_some_and(|s| s.iter().all(|s| s["generation"] == generation));
        (d["state"] == "healthy" && d["generation"] == generation && at_gen).then_some(d)
    })
    .unwrap()
}

pub fn events(cloud: &Cloud) -> Vec<Value> {
    cm(cloud, &["--json", "deploy", "events", "shop"])
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

pub fn pool_events(cloud: &Cloud) -> Vec<Value> {
    events(cloud)
        .into_iter()
        .filter(|e| e["type"] == "pool.member")
        .collect()
}

pub fn member_names(d: &Value) -> Vec<String> {
    d["slots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            format!(
                "cm-shop-{}-{}",
                s["name"].as_str().unwrap(),
                s["incarnation"]
            )
        })
        .collect()
}

/// The forwarded host port of an instance (`cm instance show`).
pub fn host_port(cloud: &Cloud, instance: &str) -> u64 {
    let s = cm(cloud, &["--json", "instance", "show", instance]);
    let v: Value = serde_json::from_str(&s).unwrap();
    v["ports"][0]["host"]
        .as_u64()
        .unwrap_or_else(|| panic!("no forwarded port: {v}"))
}
