//! Issue 11, point 8: a deployable's healthy members are in a real
//! HAProxy's backend. The real master (`--balancer edge=unix:SOCKET`), two
//! simulated hosts whose guests answer HTTP on their forwarded ports, and
//! the real `cm` as a user on the master's machine runs it. HAProxy's own
//! `show servers state` is the judge, never the master's view: members
//! appear when slots are healthy; a crashed one is removed and its
//! replacement added; a restarted master neither loses nor duplicates
//! members; a rolling update under a bounded load loop through HAProxy
//! fails no request; a deleted deployable leaves no server behind.

#[path = "deploy_pool/support.rs"]
mod support;

use serde_json::Value;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;
use test_infra::balancer;
use test_infra::haproxy::{get, Haproxy};
use test_infra::sim::{self, SimControl};
use test_infra::{wait_until, Cloud, MasterOpts};

fn spec(memory_mib: u32) -> String {
    spec_running(memory_mib, "busybox httpd -f -p 8080")
}

fn spec_running(memory_mib: u32, run: &str) -> String {
    format!(
        "\
name: shop
policy:
  heartbeat_interval: 500ms
  heartbeat_timeout: 2s
  boot_grace: 20s
update:
  min_healthy_time: 1s
assemblies:
  - name: web
    image: img
    memory_mib: {memory_mib}
    count: 2
    escalation: {{failures: 0, period: 10m}}
    ports: [{{name: http, guest: 8080}}]
    services:
      - name: httpd
        run: {run}
        pool: {{balancer: edge, backend: web, port: http}}
"
    )
}

#[test]
fn pool_members_follow_health_restarts_and_a_rolling_update_without_a_failed_request() {
    let dir = tempfile::tempdir().unwrap();
    let haproxy = Haproxy::start_empty(dir.path(), "web").unwrap();
    let mut cloud = Cloud::start_with(MasterOpts {
        report_interval_secs: 1,
        host_down_after_secs: 5,
        extra: haproxy.master_args("edge"),
    })
    .unwrap();
    let control = SimControl::new(cloud.dir.path().join("sim.sock"));
    // Forwards on a loopback address of this test's own: other tests'
    // simulated guests take the same ports on 127.0.0.1 at the same time.
    let pid = std::process::id();
    let ip = format!("127.77.{}.{}", pid % 250, (pid / 250) % 250 + 1);
    let mut opts = sim::opts(2, 4096, &control.path);
    opts.extra
        .extend(["--advertise-addr".to_string(), ip.clone()]);
    cloud.spawn_host_as("sim", "sim", opts).unwrap();
    cloud.wait_host_state("sim-1", "ready", WAIT).unwrap();
    cloud.wait_host_state("sim-2", "ready", WAIT).unwrap();
    cloud.add_fake_image("img");
    apply(&cloud, &spec(128));

    // Healthy slots are members, at their hosts' forwarded ports.
    let d = wait_healthy(&cloud, 1, "shop to be healthy");
    let names = member_names(&d);
    assert_eq!(names, ["cm-shop-web-0-1", "cm-shop-web-1-1"]);
    let s = balancer::wait_members(&haproxy, "web", &names, "both members up in HAProxy", WAIT);
    for slot in d["slots"].as_array().unwrap() {
        let name = format!("cm-shop-{}-1", slot["name"].as_str().unwrap());
        let port = host_port(&cloud, slot["instance"].as_str().unwrap());
        assert_eq!(s[&name].0, format!("{ip}:{port}"), "{s:?}");
    }
    let front = format!("127.0.0.1:{}", haproxy.port);
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..10 {
        seen.insert(get(&front, "/").unwrap().trim().to_string());
    }
    assert_eq!(
        seen.len(),
        2,
        "both members answer through HAProxy: {seen:?}"
    );
    let adds = pool_events(&cloud);
    assert!(
        adds.iter().any(|e| e["object"] == "web-0"
            && e["to"] == "ready"
            && e["action"] == "pool-add"
            && e["generation"] == 1
            && e["reason"].as_str().unwrap().contains("cm-shop-web-0-1")),
        "{adds:#?}"
    );

    // A crash (budget 0: straight to replace): the member goes at once,
    // the replacement comes in.
    let web0 = d["slots"][0]["instance"].as_str().unwrap().to_string();
    control.send(&format!("crash {web0}")).unwrap();
    let d = wait_until("web-0 replaced and healthy", WAIT, || {
        let d = show(&cloud);
        (d["state"] == "healthy" && d["slots"][0]["incarnation"] == 2).then_some(d)
    })
    .unwrap();
    let names = member_names(&d);
    assert_eq!(names, ["cm-shop-web-0-2", "cm-shop-web-1-1"]);
    balancer::wait_members(
        &haproxy,
        "web",
        &names,
        "the replacement in, the crashed one out",
        WAIT,
    );
    let evs = pool_events(&cloud);
    let removed = evs
        .iter()
        .find(|e| {
            e["object"] == "web-0"
                && e["to"] == "removed"
                && e["reason"].as_str().unwrap().contains("cm-shop-web-0-1")
        })
        .unwrap_or_else(|| panic!("no removal of the crashed member: {evs:#?}"));
    assert_eq!(removed["action"], "pool-remove");
    assert!(evs
        .iter()
        .any(|e| e["to"] == "ready" && e["reason"].as_str().unwrap().contains("cm-shop-web-0-2")));

    // A master killed and started again: the same members, none added
    // twice, none lost.
    let before = balancer::servers(&haproxy, "web");
    let n_events = pool_events(&cloud).len();
    cloud.stop_master(libc::SIGKILL);
    cloud.start_master().unwrap();
    wait_healthy(&cloud, 1, "shop healthy after the master's restart");
    // A few engine passes (each at most 1 s apart).
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        balancer::servers(&haproxy, "web"),
        before,
        "HAProxy's members changed"
    );
    let after = pool_events(&cloud);
    assert_eq!(
        after.len(),
        n_events,
        "membership events after a restart: {:#?}",
        &after[n_events..]
    );

    // A rolling update (a new size: new instances) under load through
    // HAProxy: every request answered.
    // Short requests every 20 ms, and slow ones (2 s each, 6 at once)
    // that are under way on the old members when they are drained.
    let stop = Arc::new(AtomicBool::new(false));
    let fast = balancer::load(&front, "/", Duration::from_millis(20), &stop);
    let slow: Vec<_> = (0..6)
        .map(|_| balancer::load(&front, "/sleep/2000", Duration::ZERO, &stop))
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let mark = events(&cloud).last().map(|e| e["seq"].clone());
    let t0 = Instant::now();
    apply(&cloud, &spec(192));
    let d = wait_healthy(&cloud, 2, "the rollout to finish");
    let names = member_names(&d);
    assert_eq!(names, ["cm-shop-web-0-3", "cm-shop-web-1-2"]);
    balancer::wait_members(
        &haproxy,
        "web",
        &names,
        "only the new members in HAProxy",
        WAIT,
    );
    let rolled = t0.elapsed();
    // Let the old instances go while the load goes on.
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    let (ok, failed, answers) = fast.join().unwrap();
    let (mut slow_ok, mut slow_failed) = (0, vec![]);
    for t in slow {
        let (n, f, _) = t.join().unwrap();
        slow_ok += n;
        slow_failed.extend(f);
    }
    eprintln!(
        "rolling update: {:.1}s, {ok} requests answered, {} failed, {} instances answered; \
         {slow_ok} slow requests answered, {} failed",
        rolled.as_secs_f64(),
        failed.len(),
        answers.len(),
        slow_failed.len()
    );
    assert!(failed.is_empty(), "failed requests: {failed:#?}");
    assert!(
        slow_failed.is_empty(),
        "failed slow requests: {slow_failed:#?}"
    );
    assert!(ok >= 50, "too few requests to say anything: {ok}");
    assert!(slow_ok >= 6, "too few slow requests: {slow_ok}");
    assert!(
        answers.len() >= 3,
        "old and new members answered: {answers:?}"
    );
    let evs = pool_events(&cloud);
    let seq = |e: &Value| e["seq"].as_i64().unwrap_or(0);
    let since = mark.and_then(|m| m.as_i64()).unwrap_or(0);
    let drains: Vec<&Value> = evs
        .iter()
        .filter(|e| seq(e) > since && e["to"] == "drain")
        .collect();
    assert_eq!(drains.len(), 2, "each old member drained: {evs:#?}");
    assert!(drains.iter().all(|e| e["action"] == "pool-drain"));
    // Per slot: the new member in, then the old one drained, out, and
    // only then its instance stopped.
    let all = events(&cloud);
    let first = |what: &str, ok: &dyn Fn(&Value) -> bool| {
        all.iter()
            .filter(|e| seq(e) > since)
            .find(|e| ok(e))
            .map(seq)
            .unwrap_or_else(|| panic!("no event: {what}: {all:#?}"))
    };
    for (old, new) in [("web-0-2", "web-0-3"), ("web-1-1", "web-1-2")] {
        let has = |e: &Value, s: &str| e["reason"].as_str().unwrap_or("").contains(s);
        let added = first("new member ready", &|e| {
            e["type"] == "pool.member" && e["to"] == "ready" && has(e, &format!("cm-shop-{new}"))
        });
        let drained = first("old member drained", &|e| {
            e["type"] == "pool.member" && e["to"] == "drain" && has(e, &format!("cm-shop-{old}"))
        });
        let out = first("old member removed", &|e| {
            e["type"] == "pool.member"
                && e["from"] == "drain"
                && e["to"] == "removed"
                && e["generation"] == 2
                && has(e, &format!("cm-shop-{old}"))
        });
        let stopped = first("old instance deleted", &|e| {
            e["type"] == "deployable.action"
                && e["action"] == "delete"
                && has(e, &format!("shop-{old} "))
        });
        assert!(
            added < drained && drained < out && out < stopped,
            "{old} → {new}: added {added}, drained {drained}, out {out}, stopped {stopped}"
        );
    }

    // HAProxy hung (SIGSTOP: its admin socket takes requests and answers
    // none): a crash still heals, the outage is one event, and once it
    // answers again the members catch up.
    let pid = haproxy.running_pid().expect("HAProxy's pid");
    let mark = events(&cloud).last().map(seq).unwrap_or(0);
    let web1 = d["slots"][1]["instance"].as_str().unwrap().to_string();
    // SAFETY: signalling the HAProxy this test started.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    wait_until("HAProxy to be stopped", WAIT, || {
        let st = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        st.lines()
            .any(|l| l.starts_with("State:") && l.contains("stopped"))
            .then_some(())
    })
    .unwrap();
    control.send(&format!("crash {web1}")).unwrap();
    let error = wait_until("the balancer's outage said", WAIT, || {
        pool_events(&cloud)
            .into_iter()
            .find(|e| seq(e) > mark && e["object"] == "balancer edge" && e["to"] == "error")
    });
    let healed = error.as_ref().ok().and_then(|_| {
        wait_until("web-1 replaced while HAProxy hangs", WAIT, || {
            let d = show(&cloud);
            (d["state"] == "healthy" && d["slots"][1]["incarnation"] == 3).then_some(d)
        })
        .ok()
    });
    let still = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    let error = error.unwrap();
    assert!(
        error["reason"]
            .as_str()
            .unwrap()
            .contains("no answer within"),
        "{error}"
    );
    let d = healed.expect("web-1 healed while HAProxy hung");
    assert!(
        still
            .lines()
            .any(|l| l.starts_with("State:") && l.contains("stopped")),
        "HAProxy was still stopped when web-1 was healthy again: {still}"
    );
    let outage: Vec<Value> = pool_events(&cloud)
        .into_iter()
        .filter(|e| seq(e) > mark && e["object"] == "balancer edge" && e["to"] == "error")
        .collect();
    assert_eq!(outage.len(), 1, "one event per outage: {outage:#?}");
    let names = member_names(&d);
    assert_eq!(names, ["cm-shop-web-0-3", "cm-shop-web-1-3"]);
    balancer::wait_members(
        &haproxy,
        "web",
        &names,
        "the members caught up after the hang",
        WAIT,
    );
    wait_until("the balancer's recovery said", WAIT, || {
        pool_events(&cloud)
            .iter()
            .any(|e| seq(e) > mark && e["object"] == "balancer edge" && e["to"] == "ok")
            .then_some(())
    })
    .unwrap();

    // A new command for the service: changed in place, one slot at a
    // time, each member drained before its slot is reconfigured and ready
    // again once it is healthy; under load, no request fails.
    let mark = events(&cloud).last().map(seq).unwrap_or(0);
    let stop = Arc::new(AtomicBool::new(false));
    let fast = balancer::load(&front, "/", Duration::from_millis(20), &stop);
    let slow: Vec<_> = (0..4)
        .map(|_| balancer::load(&front, "/sleep/1000", Duration::ZERO, &stop))
        .collect();
    apply(
        &cloud,
        &spec_running(192, "busybox httpd -f -p 8080 -h /srv"),
    );
    let d = wait_healthy(&cloud, 3, "the reconfiguration to finish");
    let names = member_names(&d);
    assert_eq!(names, ["cm-shop-web-0-3", "cm-shop-web-1-3"], "in place");
    balancer::wait_members(&haproxy, "web", &names, "both members ready again", WAIT);
    stop.store(true, Ordering::Relaxed);
    let (ok, mut failed, _) = fast.join().unwrap();
    for t in slow {
        failed.extend(t.join().unwrap().1);
    }
    eprintln!(
        "reconfigure: {ok} requests answered, {} failed",
        failed.len()
    );
    assert!(failed.is_empty(), "failed requests: {failed:#?}");
    let all = events(&cloud);
    for slot in ["web-0", "web-1"] {
        let at = |ok: &dyn Fn(&Value) -> bool, what: &str| {
            all.iter()
                .filter(|e| seq(e) > mark && e["object"] == slot)
                .find(|e| ok(e))
                .map(seq)
                .unwrap_or_else(|| panic!("{slot}: no event: {what}: {all:#?}"))
        };
        let drained = at(
            &|e| {
                e["type"] == "pool.member"
                    && e["to"] == "drain"
                    && e["reason"]
                        .as_str()
                        .unwrap()
                        .contains("before a rollout step")
            },
            "drained",
        );
        let changed = at(
            &|e| e["type"] == "deployable.rollout" && e["to"] == "reconfiguring",
            "reconfigured",
        );
        let back = at(
            &|e| e["type"] == "pool.member" && e["from"] == "drain" && e["to"] == "ready",
            "ready again",
        );
        assert!(
            drained < changed && changed < back,
            "{slot}: drained {drained}, reconfigured {changed}, back {back}"
        );
    }

    // Deleted: its servers leave the backend.
    cm(&cloud, &["deploy", "delete", "shop"]);
    wait_until("no server left in HAProxy", WAIT, || {
        balancer::servers(&haproxy, "web").is_empty().then_some(())
    })
    .unwrap();
}
