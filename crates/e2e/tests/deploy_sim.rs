//! Issue 11: a deployable kept healthy by the policy engine, on simulated
//! hosts (`cloudhostd --simulate --sim-control`) behind the real master,
//! driven with the real `cm` as a user on the master's machine runs it (no URL,
//! token or config given: the master's pointer file). Faults are injected into the
//! simulator: a crashed VM is restarted in place, a frozen guest is found
//! silent and restarted, a silent host's stateless slot is replaced on the
//! other host while its stateful slot waits, and when the host comes back
//! the old copy is removed: exactly one instance per slot.

#[path = "deploy_sim/helpers.rs"]
mod helpers;

use helpers::*;
use serde_json::Value;
use std::time::Instant;
use test_infra::sim::{self, SimControl};
use test_infra::{wait_until, Cloud, MasterOpts};

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

#[test]
fn a_deployable_heals_crashes_freezes_and_a_silent_host_on_simulated_hosts() {
    let (cloud, control) = cloud(2);
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
    // The restart of a VM that is still up is a reset: the guest boots
    // again and beats, with no thaw from the test.
    let d = wait_healthy(&cloud, "app to be healthy after the freeze");
    assert_eq!(slot(&d, "web-1")["instance"], web1.as_str(), "{d}");

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

/// One web assembly whose service may fail twice in its window and whose
/// assembly may restart once, with a short back-off.
const SERVICE: &str = "\
name: app
policy:
  heartbeat_interval: 500ms
  heartbeat_timeout: 2s
  boot_grace: 20s
  restart_backoff: {initial: 500ms, max: 1s}
assemblies:
  - name: web
    image: img
    memory_mib: 128
    escalation: {failures: 1, period: 10m}
    services:
      - name: httpd
        run: busybox httpd -f -p 8080
        escalation: {failures: 2, period: 10m}
";

/// The deployable's events after `mark` on `object` with `action`.
fn acts(cloud: &Cloud, mark: i64, object: &str, action: &str) -> Vec<Value> {
    events(cloud)
        .into_iter()
        .filter(|e| e["seq"].as_i64().unwrap_or(0) > mark)
        .filter(|e| e["object"] == object && e["action"] == action)
        .collect()
}

#[test]
fn a_failing_service_is_restarted_in_the_guest_then_its_assembly_then_replaced() {
    let (cloud, control) = cloud(2);
    let file = cloud.dir.path().join("app.yaml");
    std::fs::write(&file, SERVICE).unwrap();
    cm(
        &cloud,
        &["deploy", "apply", "--file", file.to_str().unwrap()],
    );
    wait_healthy(&cloud, "app to be healthy");
    let web0 = instance_of(&cloud, "web-0");
    let id = cm_json(&cloud, &["instance", "show", &web0])["id"]
        .as_str()
        .unwrap()
        .to_string();

    // Past the back-off its creation armed (500 ms).
    std::thread::sleep(std::time::Duration::from_millis(1_500));
    // Its check fails (the simulated guest says so until it reboots): the
    // engine restarts it in the guest twice (its budget), then restarts
    // the assembly, which brings it back.
    let mark = last_seq(&cloud);
    control
        .send(&format!("service {web0} httpd unhealthy"))
        .unwrap();
    wait_event(&cloud, mark, "web-0 to be restarted in place", |e| {
        e["object"] == "web-0" && e["action"] == "restart-assembly"
    });
    wait_healthy(&cloud, "app to be healthy after the restart");
    let in_guest: Vec<Value> = acts(&cloud, mark, "web-0", "restart-service")
        .into_iter()
        .filter(|e| e["reason"].as_str().unwrap_or("").contains("in the guest"))
        .collect();
    assert_eq!(in_guest.len(), 2, "the service's budget: {in_guest:?}");
    assert!(
        in_guest[1]["reason"]
            .as_str()
            .unwrap()
            .contains("restart_gen 2"),
        "{in_guest:?}"
    );
    assert_eq!(acts(&cloud, mark, "web-0", "restart-assembly").len(), 1);
    let body = cm(&cloud, &["config", "show", &id, "--raw"]);
    assert!(body.contains("restart_gen = 2"), "{body}");
    assert_eq!(instance_of(&cloud, "web-0"), web0, "same instance");

    // It fails again: its window still holds its failures (a healthy
    // spell resets nothing), and the assembly's budget is spent too, so
    // the slot is replaced at once: no restart storm.
    let mark = last_seq(&cloud);
    control
        .send(&format!("service {web0} httpd unhealthy"))
        .unwrap();
    let ev = wait_event(&cloud, mark, "web-0 to be replaced", |e| {
        e["object"] == "web-0" && e["action"] == "replace"
    });
    eprintln!("escalated: {}", ev["reason"]);
    wait_until("web-0 to be healthy on a new instance", WAIT, || {
        let d = show(&cloud);
        (d["state"] == "healthy" && slot(&d, "web-0")["instance"] != web0.as_str()).then_some(())
    })
    .unwrap();
    assert!(acts(&cloud, mark, "web-0", "restart-assembly").is_empty());
    let again = acts(&cloud, mark, "web-0", "restart-service");
    assert!(
        again
            .iter()
            .all(|e| !e["reason"].as_str().unwrap_or("").contains("in the guest")),
        "{again:?}"
    );
}

/// Three web slots, one on each of three hosts.
const SPREAD: &str = "\
name: app
policy:
  heartbeat_interval: 500ms
  heartbeat_timeout: 4s
  boot_grace: 20s
assemblies:
  - name: web
    image: img
    memory_mib: 128
    count: 3
    spread: require
    services:
      - name: httpd
        run: busybox httpd -f -p 8080
";

#[test]
fn two_of_three_hosts_going_silent_together_freeze_the_deployable() {
    let (cloud, control) = cloud(3);
    let file = cloud.dir.path().join("app.yaml");
    std::fs::write(&file, SPREAD).unwrap();
    cm(
        &cloud,
        &["deploy", "apply", "--file", file.to_str().unwrap()],
    );
    let d = wait_healthy(&cloud, "app to be healthy");
    let before = live(&cloud);
    assert_eq!(before.len(), 3, "{before:?}");
    let hosts: Vec<String> = ["web-0", "web-1"]
        .iter()
        .map(|s| slot(&d, s)["host"].as_str().unwrap().to_string())
        .collect();
    assert_ne!(hosts[0], hosts[1], "{d}");

    // Two hosts stop reporting at once (their VMs may well still run):
    // two of three slots silent on two hosts is a partition, not failures.
    let mark = last_seq(&cloud);
    for h in &hosts {
        control.send(&format!("mute {h}")).unwrap();
    }
    let frozen = wait_event(&cloud, mark, "the deployable to freeze", |e| {
        e["type"] == "deployable.frozen"
    });
    eprintln!("frozen: {}", frozen["reason"]);
    for h in &hosts {
        cloud.wait_host_state(h, "down", WAIT).unwrap();
    }
    // Past the heartbeat timeout (4 s) that would replace a stateless
    // slot of a dead host: still nothing destructive.
    std::thread::sleep(std::time::Duration::from_secs(8));
    assert_eq!(show(&cloud)["state"], "frozen");
    let destructive = ["replace", "restart-assembly", "create", "delete"];
    let done: Vec<Value> = events(&cloud)
        .into_iter()
        .filter(|e| e["seq"].as_i64().unwrap_or(0) > mark)
        .filter(|e| destructive.iter().any(|a| e["action"] == *a))
        .collect();
    assert!(done.is_empty(), "acted while frozen: {done:?}");

    // They come back: thawed, healthy, and the same one instance per slot.
    for h in &hosts {
        control.send(&format!("unmute {h}")).unwrap();
    }
    wait_event(&cloud, mark, "the deployable to thaw", |e| {
        e["type"] == "deployable.thawed"
    });
    wait_healthy(&cloud, "app to be healthy with its hosts back");
    assert_eq!(live(&cloud), before);
    let replaced = events(&cloud)
        .into_iter()
        .filter(|e| e["seq"].as_i64().unwrap_or(0) > mark)
        .any(|e| destructive.iter().any(|a| e["action"] == *a));
    assert!(!replaced, "no destructive action across the partition");
}
