//! deploy_pool.rs's helpers: `cm` as a user, HAProxy's own view of the
//! backend, and a bounded load loop through HAProxy.

use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use test_infra::haproxy::{get, Haproxy};
use test_infra::{wait_until, Cloud};

/// Generous: the machine may be busy; the simulated steps take milliseconds.
pub const WAIT: Duration = Duration::from_secs(90);

/// `cm` as a person on the master's machine runs it (the master's
/// pointer file, a home of its own; no URL or token given).
pub fn cm(cloud: &Cloud, args: &[&str]) -> String {
    let home = cloud.dir.path().join("user-home");
    std::fs::create_dir_all(&home).unwrap();
    let out = cloud.cm_local(args, &cloud.runtime_dir(), &home);
    assert_eq!(
        out.code,
        0,
        "cm {}: {}{}",
        args.join(" "),
        out.stderr,
        out.stdout
    );
    out.stdout
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

/// HAProxy's own view, `show servers state web`: server name → (address
/// `ip:port`, operational state, admin state).
pub fn servers(h: &Haproxy) -> BTreeMap<String, (String, u32, u32)> {
    let text = h.api("show servers state web").unwrap();
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    assert_eq!(lines.next().map(str::trim), Some("1"), "{text}");
    let header: Vec<&str> = lines
        .next()
        .unwrap_or_else(|| panic!("no header: {text}"))
        .trim_start_matches("# ")
        .split(' ')
        .collect();
    let col = |n: &str| header.iter().position(|c| *c == n).unwrap();
    let (name, addr, port, op, admin) = (
        col("srv_name"),
        col("srv_addr"),
        col("srv_port"),
        col("srv_op_state"),
        col("srv_admin_state"),
    );
    lines
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (
                f[name].to_string(),
                (
                    format!("{}:{}", f[addr], f[port]),
                    f[op].parse().unwrap(),
                    f[admin].parse().unwrap(),
                ),
            )
        })
        .collect()
}

/// The servers HAProxy has, once they are exactly `names`, up and ready
/// (op state 2 = running, admin state 0 = neither drain nor maintenance).
pub fn wait_members(
    h: &Haproxy,
    names: &[String],
    what: &str,
) -> BTreeMap<String, (String, u32, u32)> {
    let mut want: Vec<String> = names.to_vec();
    want.sort();
    wait_until(what, WAIT, || {
        let s = servers(h);
        let have: Vec<String> = s.keys().cloned().collect();
        (have == want && s.values().all(|(_, op, admin)| *op == 2 && *admin == 0)).then_some(s)
    })
    .unwrap()
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

pub type Tally = (u32, Vec<String>, std::collections::BTreeSet<String>);

/// GET `path` through HAProxy again and again, `pause` apart, until
/// `stop` (bounded: at most 6000 requests and 240 s): answered, failures,
/// the distinct answers.
pub fn load(
    front: &str,
    path: &'static str,
    pause: Duration,
    stop: &Arc<AtomicBool>,
) -> std::thread::JoinHandle<Tally> {
    let (stop, front) = (stop.clone(), front.to_string());
    std::thread::spawn(move || {
        let (mut ok, mut failed) = (0u32, Vec::new());
        let mut answers = std::collections::BTreeSet::new();
        let t0 = Instant::now();
        while !stop.load(Ordering::Relaxed)
            && ok as usize + failed.len() < 6000
            && t0.elapsed() < Duration::from_secs(240)
        {
            match get(&front, path) {
                Ok(body) => {
                    ok += 1;
                    answers.insert(body.trim().to_string());
                }
                Err(e) => failed.push(format!("{:.2}s {path}: {e}", t0.elapsed().as_secs_f64())),
            }
            std::thread::sleep(pause);
        }
        (ok, failed, answers)
    })
}
