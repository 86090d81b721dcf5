//! Issue 11: a deployable kept healthy by the policy engine, on simulated
//! hosts (`cloudhostd --simulate --sim-control`) behind the real master,
//! driven with the real `cm` as a user on the master's machine runs it (no URL,
//! token or config given: the master's pointer file). Faults are injected into the
//! simulator: a crashed VM is restarted in place, a frozen guest is found
//! silent and restarted, a silent host's stateless slot is replaced on the
//! other host while its stateful slot waits, and when the host comes back
//! the old copy is removed: exactly one instance per slot.

use serde_json::Value;
use std::time::{Duration, Instant};
use test_infra::sim::{self, SimControl};
use test_infra::{wait_until, Cloud, MasterOpts};

/// Generous: the machine may be busy; the simulated steps take milliseconds.
const WAIT: Duration = Duration::from_secs(60);

const SPEC: &str = "\
name: app
policy:
  heartbeat_interval: 500ms
  heartbeat_timeout: 2s
  boot_grace: 20s
assemblies:
  - name: web
    image: img
    memory_mib: 128
    count: 2
    ports: [{name: http, guest: 8080}]
    services:
      - name: httpd
        run: busybox httpd -f -p 8080
  - name: db
    image: img
    memory_mib: 128
    stateful: true
    services:
      - {name: db, run: nc -lk -p 5432}
";

fn cloud() -> (Cloud, SimControl) {
    let mut cloud = Cloud::start_with(MasterOpts {
        report_interval_secs: 1,
        host_down_after_secs: 3,
        extra: vec![],
    })
    .unwrap();
    let control = SimControl::new(cloud.dir.path().join("sim.sock"));
    cloud
        .spawn_host_as("sim", "sim", sim::opts(2, 4096, &control.path))
        .unwrap();
    cloud.wait_host_state("sim-1", "ready", WAIT).unwrap();
    cloud.wait_host_state("sim-2", "ready", WAIT).unwrap();
    // The simulator never boots it: any two files make an image.
    cloud.add_fake_image("img");
    (cloud, control)
}

/// `cm` as a person on the master's machine runs it: no URL, token or
/// config given, only the master's pointer file and a home of its own.
fn cm(cloud: &Cloud, args: &[&str]) -> String {
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

/// `cm --json ...`, parsed.
fn cm_json(cloud: &Cloud, args: &[&str]) -> Value {
    let mut a = vec!["--json"];
    a.extend_from_slice(args);
    let s = cm(cloud, &a);
    serde_json::from_str(&s).unwrap_or_else(|e| panic!("cm {args:?} gave no JSON ({e}): {s}"))
}

fn show(cloud: &Cloud) -> Value {
    cm_json(cloud, &["deploy", "show", "app"])
}

fn slot<'a>(d: &'a Value, name: &str) -> &'a Value {
    d["slots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no slot {name} in {d}"))
}

fn wait_healthy(cloud: &Cloud, what: &str) -> Value {
    wait_until(what, WAIT, || {
        let d = show(cloud);
        (d["state"] == "healthy").then_some(d)
    })
    .unwrap()
}

/// The deployable's events, as `cm --json deploy events app` prints them.
fn events(cloud: &Cloud) -> Vec<Value> {
    cm(cloud, &["--json", "deploy", "events", "app"])
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// The first event after `after` (a seq) that `ok` accepts.
fn wait_event(cloud: &Cloud, after: i64, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    wait_until(what, WAIT, || {
        events(cloud)
            .into_iter()
            .find(|e| e["seq"].as_i64().unwrap_or(0) > after && ok(e))
    })
    .unwrap()
}

/// The last event's seq so far.
fn last_seq(cloud: &Cloud) -> i64 {
    events(cloud)
        .iter()
        .filter_map(|e| e["seq"].as_i64())
        .max()
        .unwrap_or(0)
}

/// Live instances (not being deleted) of the deployable, by name.
fn live(cloud: &Cloud) -> Vec<(String, String)> {
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

#[test]
fn a_deployable_heals_crashes_freezes_and_a_silent_host_on_simulated_hosts() {
    let (cloud, control) = cloud();
    let file = cloud.dir.path().join("app.yaml");
    std::fs::write(&file, SPEC).unwrap();
    cm(
        &cloud,
        &["deploy", "apply", "--file", file.to_str().unwrap()],
    );
    let d = wait_healthy(&cloud, "app to be healthy");
    assert_eq!(d["slots"].as_array().unwrap().len(), 3, "{d}");
    // spread (prefer, the default) puts the two web slots on different hosts.
    assert_ne!(slot(&d, "web-0")["host"], slot(&d, "web-1")["host"], "{d}");

    // A crashed VM: seen at once, restarted in place (same instance).
    let web0 = slot(&d, "web-0")["instance"].as_str().unwrap().to_string();
    let mark = last_seq(&cloud);
    let crashed = Instant::now();
    control.send(&format!("crash {web0}")).unwrap();
    let seen = wait_event(&cloud, mark, "the crash to be seen", |e| {
        // Seen as `down` (while a back-off holds the restart), or acted on
        // in the same pass.
        e["object"] == "web-0" && (e["to"] == "down" || e["action"] == "restart-assembly")
    });
    eprintln!(
        "crash → observed: {:.2}s ({})",
        crashed.elapsed().as_secs_f64(),
        seen["reason"]
    );
    wait_event(&cloud, mark, "web-0 to be restarted", |e| {
        e["type"] == "deployable.action"
            && e["object"] == "web-0"
            && e["action"] == "restart-assembly"
    });
    let d = wait_healthy(&cloud, "app to be healthy after the crash");
    assert_eq!(slot(&d, "web-0")["instance"], web0.as_str(), "{d}");
    eprintln!("crash → healthy: {:.2}s", crashed.elapsed().as_secs_f64());

    // A frozen guest: silent after the 2 s timeout, then restarted.
    let web1 = slot(&d, "web-1")["instance"].as_str().unwrap().to_string();
    let mark = last_seq(&cloud);
    let frozen = Instant::now();
    control.send(&format!("freeze {web1}")).unwrap();
    let silent = wait_event(&cloud, mark, "web-1 to be found silent", |e| {
        e["object"] == "web-1" && e["reason"].as_str().unwrap_or("").contains("silent")
    });
    eprintln!(
        "freeze → silent: {:.2}s ({})",
        frozen.elapsed().as_secs_f64(),
        silent["reason"]
    );
    wait_event(&cloud, mark, "web-1 to be restarted", |e| {
        e["type"] == "deployable.action"
            && e["object"] == "web-1"
            && e["action"] == "restart-assembly"
    });
    eprintln!("freeze → restart: {:.2}s", frozen.elapsed().as_secs_f64());
    control.send(&format!("thaw {web1}")).unwrap();
    let d = wait_healthy(&cloud, "app to be healthy after the freeze");

    // The host of db-0 goes silent (its VMs may still run): its web slot
    // is replaced on the other host, db-0 (stateful) waits for it.
    let db_host = slot(&d, "db-0")["host"].as_str().unwrap().to_string();
    let db0 = slot(&d, "db-0")["instance"].as_str().unwrap().to_string();
    let web_there = ["web-0", "web-1"]
        .into_iter()
        .find(|w| slot(&d, w)["host"] == db_host.as_str())
        .expect("one web slot shares db-0's host (spread over two hosts)");
    let old_web = slot(&d, web_there)["instance"]
        .as_str()
        .unwrap()
        .to_string();
    let mark = last_seq(&cloud);
    control.send(&format!("mute {db_host}")).unwrap();
    cloud.wait_host_state(&db_host, "down", WAIT).unwrap();
    wait_event(
        &cloud,
        mark,
        "the web slot on the silent host to be replaced",
        |e| {
            e["type"] == "deployable.action" && e["object"] == web_there && e["action"] == "replace"
        },
    );
    let d = show(&cloud);
    assert_eq!(slot(&d, "db-0")["instance"], db0.as_str(), "{d}");
    assert_ne!(slot(&d, web_there)["instance"], old_web.as_str(), "{d}");
    assert!(
        !events(&cloud)
            .iter()
            .any(|e| e["object"] == "db-0" && e["action"] == "replace"),
        "a stateful slot is never replaced while its host may still run it"
    );

    // The host comes back: the old web copy is removed, db-0 is kept.
    control.send(&format!("unmute {db_host}")).unwrap();
    cloud.wait_host_state(&db_host, "ready", WAIT).unwrap();
    wait_healthy(&cloud, "app to be healthy with its host back");
    let rows = wait_until("exactly one instance per slot", WAIT, || {
        let rows = live(&cloud);
        (rows.len() == 3 && !rows.iter().any(|(n, _)| *n == old_web)).then_some(rows)
    })
    .unwrap();
    assert!(rows.iter().any(|(n, _)| *n == db0), "{rows:?}");

    // Delete: every instance goes, then the deployable.
    cm(&cloud, &["deploy", "delete", "app"]);
    wait_until("the deployable to be gone", WAIT, || {
        let l = cm_json(&cloud, &["deploy", "list"]);
        (l["deployables"].as_array().unwrap().is_empty() && live(&cloud).is_empty()).then_some(())
    })
    .unwrap();
}

/// One web assembly whose restart budget is 0: a crash replaces it.
const REPLACING: &str = "\
name: app
policy:
  heartbeat_interval: 500ms
  heartbeat_timeout: 2s
  boot_grace: 20s
assemblies:
  - name: web
    image: img
    memory_mib: 128
    escalation: {failures: 0, period: 10m}
    services:
      - name: httpd
        run: busybox httpd -f -p 8080
";

/// The instance serving `slot` now.
fn instance_of(cloud: &Cloud, slot_name: &str) -> String {
    slot(&show(cloud), slot_name)["instance"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn a_panicked_engine_is_restarted_and_a_master_killed_mid_replacement_finishes_it_once() {
    let mut cloud = Cloud::start_with(MasterOpts {
        report_interval_secs: 1,
        host_down_after_secs: 3,
        extra: vec!["--debug-routes".into()],
    })
    .unwrap();
    let control = SimControl::new(cloud.dir.path().join("sim.sock"));
    // VMs that take 5 s to boot: the master is killed while one does.
    let mut opts = sim::opts(2, 4096, &control.path);
    let boot = opts
        .extra
        .iter()
        .position(|a| a == "--sim-boot-ms")
        .unwrap();
    opts.extra[boot + 1] = "5000".into();
    cloud.spawn_host_as("sim", "sim", opts).unwrap();
    cloud.wait_host_state("sim-1", "ready", WAIT).unwrap();
    cloud.add_fake_image("img");
    let file = cloud.dir.path().join("app.yaml");
    std::fs::write(&file, REPLACING).unwrap();
    cm(
        &cloud,
        &["deploy", "apply", "--file", file.to_str().unwrap()],
    );
    wait_healthy(&cloud, "app to be healthy");

    // The DPE panics (a debug build's test route): the CPE restarts it,
    // says so, and the deployable goes on healing.
    let mark = last_seq(&cloud);
    let answer = reqwest::blocking::Client::new()
        .post(format!("{}/v1/debug/deployables/app/panic", cloud.url))
        .bearer_auth(&cloud.token)
        .send()
        .unwrap();
    assert_eq!(answer.status().as_u16(), 202);
    let ev = wait_event(&cloud, mark, "the engine to be restarted", |e| {
        e["type"] == "deployable.engine"
    });
    assert!(
        ev["reason"].as_str().unwrap_or("").contains("panic"),
        "{ev}"
    );
    let first = instance_of(&cloud, "web-0");
    let mark = last_seq(&cloud);
    control.send(&format!("crash {first}")).unwrap();
    wait_event(&cloud, mark, "web-0 to be replaced", |e| {
        e["object"] == "web-0" && e["action"] == "replace"
    });
    wait_healthy(&cloud, "app to be healthy after the replacement");
    let second = instance_of(&cloud, "web-0");
    assert_ne!(first, second);

    // Killed right after it decided a replacement: the restarted master
    // finishes that one and makes no other.
    let mark = last_seq(&cloud);
    control.send(&format!("crash {second}")).unwrap();
    wait_event(&cloud, mark, "web-0 to be replaced again", |e| {
        e["object"] == "web-0" && e["action"] == "replace"
    });
    let d = show(&cloud);
    assert_ne!(slot(&d, "web-0")["state"], "healthy", "still booting: {d}");
    cloud.stop_master(libc::SIGKILL);
    cloud.start_master().unwrap();
    let d = wait_healthy(&cloud, "app to be healthy after the master's restart");
    let third = slot(&d, "web-0");
    assert_eq!(third["incarnation"], 3, "{d}");
    let rows = wait_until("one instance of web-0", WAIT, || {
        let rows = live(&cloud);
        (rows.len() == 1).then_some(rows)
    })
    .unwrap();
    assert_eq!(rows[0].0, third["instance"].as_str().unwrap(), "{rows:?}");
    let replaces = events(&cloud)
        .iter()
        .filter(|e| e["object"] == "web-0" && e["action"] == "replace")
        .count();
    assert_eq!(replaces, 2, "one replacement per crash, none repeated");
}
