//! Issue 11, the move rung, on simulated hosts behind the real master and
//! driven with the real `cm`: a worker slot whose replace budget is spent is
//! `failed` and its service (`may_move_to: [web]`) runs in web-0's guest as
//! `worker-0.job` (web-0's rendered config has it, with its reference
//! resolved; its simulated guest reports it running, because its health
//! policy expects it). `cm deploy repair app worker-0` lets the ladder run
//! again; once worker-0 is healthy it takes `job` back and web-0's config
//! loses it. Each step is one `move` event.

#[path = "deploy_sim/helpers.rs"]
mod helpers;

use helpers::*;
use serde_json::Value;
use test_infra::wait_until;

/// A worker replaced at most once in the window (its own restarts: none),
/// its `job` movable to the web assembly.
const SPEC: &str = "\
name: app
policy:
  heartbeat_interval: 500ms
  heartbeat_timeout: 2s
  boot_grace: 20s
  restart_backoff: {initial: 500ms, max: 1s}
  escalation: {failures: 1, period: 10m}
assemblies:
  - name: web
    image: img
    memory_mib: 128
    services:
      - name: httpd
        run: busybox httpd -f -p 8080
  - name: worker
    image: img
    memory_mib: 128
    escalation: {failures: 0, period: 10m}
    services:
      - name: job
        run: sleep 100000
        may_move_to: [web]
        env: {WEB: {ref: web.ipaddress}}
";

fn config_of(cloud: &test_infra::Cloud, instance: &str) -> String {
    let id = cm_json(cloud, &["instance", "show", instance])["id"]
        .as_str()
        .unwrap()
        .to_string();
    cm(cloud, &["config", "show", &id, "--raw"])
}

fn reported(cloud: &test_infra::Cloud, instance: &str) -> Vec<String> {
    let v = cm_json(cloud, &["instance", "show", instance]);
    v["guest"]["services"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|s| s["state"] == "running")
                .filter_map(|s| s["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn moves(cloud: &test_infra::Cloud, mark: i64) -> Vec<Value> {
    events(cloud)
        .into_iter()
        .filter(|e| e["seq"].as_i64().unwrap_or(0) > mark && e["action"] == "move")
        .collect()
}

#[test]
fn a_failed_slots_service_moves_to_another_assembly_and_comes_back_after_repair() {
    let (cloud, control) = cloud(2);
    let file = cloud.dir.path().join("app.yaml");
    std::fs::write(&file, SPEC).unwrap();
    cm(
        &cloud,
        &["deploy", "apply", "--file", file.to_str().unwrap()],
    );
    wait_healthy(&cloud, "app to be healthy");
    let web0 = instance_of(&cloud, "web-0");
    assert!(!config_of(&cloud, &web0).contains("worker-0.job"));

    // Crash, replaced (its one replace); crash again: failed, and moved.
    let mark = last_seq(&cloud);
    let first = instance_of(&cloud, "worker-0");
    control.send(&format!("crash {first}")).unwrap();
    wait_until("worker-0 to be replaced and healthy", WAIT, || {
        let d = show(&cloud);
        let s = slot(&d, "worker-0");
        (s["instance"] != first.as_str() && s["state"] == "healthy").then_some(())
    })
    .unwrap();
    let second = instance_of(&cloud, "worker-0");
    control.send(&format!("crash {second}")).unwrap();
    let ev = wait_event(&cloud, mark, "worker-0's job to be moved", |e| {
        e["action"] == "move"
    });
    assert_eq!(ev["object"], "worker-0.job", "{ev}");
    assert_eq!(
        (&ev["from"], &ev["to"]),
        (&"worker-0".into(), &"web-0".into()),
        "{ev}"
    );
    assert!(
        ev["reason"]
            .as_str()
            .unwrap()
            .contains("worker-0 failed: job moved to web-0"),
        "{ev}"
    );
    let d = show(&cloud);
    let w = slot(&d, "worker-0");
    assert_eq!(w["state"], "failed", "{d}");
    let why = w["reason"].as_str().unwrap_or_default();
    assert!(
        why.contains("replace budget") && why.contains("moved: job → web-0"),
        "{why}"
    );

    // web-0's guest runs it, under a name that cannot collide, with its
    // reference resolved as for its own slot; its guest reports it.
    let body = config_of(&cloud, &web0);
    assert!(body.contains("name = \"worker-0.job\""), "{body}");
    assert!(body.contains("run = \"sleep 100000\""), "{body}");
    assert!(body.contains("WEB = \"127.0.0.1\""), "{body}");
    assert!(body.contains("name = \"httpd\""), "{body}");
    wait_until("web-0's guest to report worker-0.job running", WAIT, || {
        let r = reported(&cloud, &web0);
        (r.contains(&"worker-0.job".to_string()) && r.contains(&"httpd".to_string())).then_some(())
    })
    .unwrap();
    wait_until("web-0 healthy with it", WAIT, || {
        (slot(&show(&cloud), "web-0")["state"] == "healthy").then_some(())
    })
    .unwrap();
    assert_eq!(moves(&cloud, mark).len(), 1, "one move, once");

    // The way out: repair clears worker-0's counters; the ladder replaces
    // it; healthy again, it takes its service back.
    let mark = last_seq(&cloud);
    let out = cm(&cloud, &["deploy", "repair", "app", "worker-0"]);
    assert!(out.contains("repaired worker-0"), "{out}");
    let ev = wait_event(&cloud, mark, "job to be taken back", |e| {
        e["action"] == "move"
    });
    assert_eq!(
        (&ev["from"], &ev["to"]),
        (&"web-0".into(), &"worker-0".into()),
        "{ev}"
    );
    assert!(
        ev["reason"].as_str().unwrap().contains("taken back"),
        "{ev}"
    );
    let d = wait_healthy(&cloud, "app to be healthy again");
    let third = slot(&d, "worker-0")["instance"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(third, second, "repaired by a new instance");
    assert!(!config_of(&cloud, &web0).contains("worker-0.job"));
    assert!(config_of(&cloud, &third).contains("name = \"job\""));
    wait_until("web-0's guest to stop reporting it", WAIT, || {
        (!reported(&cloud, &web0).contains(&"worker-0.job".to_string())).then_some(())
    })
    .unwrap();
    let evs = events(&cloud);
    assert!(
        evs.iter()
            .any(|e| e["action"] == "repair" && e["object"] == "worker-0"),
        "the repair is an event"
    );
    assert_eq!(moves(&cloud, mark).len(), 1, "one take-back");
    wait_until("one live instance per slot", WAIT, || {
        (live(&cloud).len() == 2).then_some(())
    })
    .unwrap();

    // Nothing failed: a repair (or its retry) changes nothing.
    let out = cm(&cloud, &["deploy", "repair", "app"]);
    assert!(out.contains("none is failed"), "{out}");
    // A slot that does not exist: refused, with the field.
    let home = cloud.dir.path().join("user-home");
    let bad = cloud.cm_local(
        &["deploy", "repair", "app", "worker-9"],
        &cloud.runtime_dir(),
        &home,
    );
    assert_ne!(bad.code, 0);
    assert!(bad.stderr.contains("not a slot"), "{}", bad.stderr);
}

/// Two web slots replaced at most once each; the worker as above.
const TWO_WEBS: &str = "\
name: app
policy:
  heartbeat_interval: 500ms
  heartbeat_timeout: 2s
  boot_grace: 20s
  restart_backoff: {initial: 500ms, max: 1s}
  escalation: {failures: 1, period: 10m}
assemblies:
  - name: web
    image: img
    memory_mib: 128
    count: 2
    escalation: {failures: 0, period: 10m}
    services:
      - name: httpd
        run: busybox httpd -f -p 8080
  - name: worker
    image: img
    memory_mib: 128
    escalation: {failures: 0, period: 10m}
    services:
      - name: job
        run: sleep 100000
        may_move_to: [web]
";

/// Crash `slot`'s instance, wait for its replacement to be healthy, crash
/// that one: the slot's replace budget (1) is spent.
fn fail(cloud: &test_infra::Cloud, control: &test_infra::sim::SimControl, slot_name: &str) {
    let first = instance_of(cloud, slot_name);
    control.send(&format!("crash {first}")).unwrap();
    wait_until(&format!("{slot_name} replaced and healthy"), WAIT, || {
        let d = show(cloud);
        let s = slot(&d, slot_name);
        (s["instance"] != first.as_str() && s["state"] == "healthy").then_some(())
    })
    .unwrap();
    let second = instance_of(cloud, slot_name);
    control.send(&format!("crash {second}")).unwrap();
}

#[test]
fn a_moved_service_whose_host_slot_fails_moves_on_to_the_next() {
    let (cloud, control) = cloud(2);
    let file = cloud.dir.path().join("app.yaml");
    std::fs::write(&file, TWO_WEBS).unwrap();
    cm(
        &cloud,
        &["deploy", "apply", "--file", file.to_str().unwrap()],
    );
    wait_healthy(&cloud, "app to be healthy");
    let mark = last_seq(&cloud);
    fail(&cloud, &control, "worker-0");
    let ev = wait_event(&cloud, mark, "job to move to web-0", |e| {
        e["action"] == "move"
    });
    assert_eq!(
        (&ev["from"], &ev["to"]),
        (&"worker-0".into(), &"web-0".into()),
        "{ev}"
    );
    wait_until("web-0 healthy with it", WAIT, || {
        (slot(&show(&cloud), "web-0")["state"] == "healthy").then_some(())
    })
    .unwrap();

    // web-0 fails in turn: job moves on to web-1, in one event; no web
    // guest runs it twice.
    let mark = last_seq(&cloud);
    fail(&cloud, &control, "web-0");
    let ev = wait_event(&cloud, mark, "job to move on to web-1", |e| {
        e["action"] == "move"
    });
    assert_eq!(ev["object"], "worker-0.job", "{ev}");
    assert_eq!(
        (&ev["from"], &ev["to"]),
        (&"web-0".into(), &"web-1".into()),
        "{ev}"
    );
    assert!(
        ev["reason"].as_str().unwrap().contains("web-0 failed"),
        "{ev}"
    );
    let d = show(&cloud);
    assert_eq!(slot(&d, "web-0")["state"], "failed", "{d}");
    let web1 = slot(&d, "web-1")["instance"].as_str().unwrap().to_string();
    let web0 = slot(&d, "web-0")["instance"].as_str().unwrap().to_string();
    assert!(config_of(&cloud, &web1).contains("name = \"worker-0.job\""));
    assert!(!config_of(&cloud, &web0).contains("worker-0.job"));
    let why = slot(&d, "worker-0")["reason"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(why.contains("moved: job → web-1"), "{why}");
    assert_eq!(moves(&cloud, mark).len(), 1, "{:?}", moves(&cloud, mark));
}
