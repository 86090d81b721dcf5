//! Issue 11 points 8 and 9 with real VMs behind a real HAProxy: the
//! deployable of `deploy_vm.rs` (3 stateless `web` guests running busybox
//! httpd, 1 stateful `db`) on two real `cloudhostd` of this machine, its web
//! service in a pool of the master's balancer `edge` (`--balancer
//! edge=unix:SOCKET`), driven with the real `cm` as a user on the master's
//! machine runs it. HAProxy's own `show servers state` is the judge: the
//! three healthy webs are its members; a rolling update (a new size and a
//! new page: new guests, one at a time) under a bounded load loop through
//! HAProxy fails no request (HAProxy set as for real guests: a request
//! that got no answer at all is re-sent, `retry-on`; the count is printed)
//! and each old member is out of HAProxy before its instance is deleted
//! (the events' order); it ends with only the new members; a web whose
//! QEMU is killed is taken out and its replacement put in, serving through
//! HAProxy again. Figures are printed; bounds are generous.

use cm_api::deploy::Slot;
use cm_api::words::EngineAction;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use test_infra::balancer;
use test_infra::deploy::{self, slot, DeployUser};
use test_infra::haproxy::{self, Haproxy};
use test_infra::{wait_until, Cloud, MasterOpts};

/// Four TCG guests booting at once on a busy 2-core machine.
const BOOT: Duration = Duration::from_secs(600);
/// A detection or an action, however loaded the machine.
const SEEN: Duration = Duration::from_secs(60);

/// `shop` with its web service in the pool `edge`/`web`, serving `page`,
/// each web guest of `memory` MiB.
fn pooled_shop(page: &str, memory: u32) -> String {
    let spec = deploy::pooled(&deploy::shop("shop", 3), "edge")
        .replace("content = \"web\\n\"", &format!("content = \"{page}\\n\""))
        .replacen(
            "    flavor: m1.tiny\n",
            &format!("    memory_mib: {memory}\n    vcpus: 1\n"),
            1,
        );
    assert!(spec.contains(page) && spec.contains("memory_mib"), "{spec}");
    spec
}

/// `cm-shop-web-N-INCARNATION` of every web slot of `d`.
fn web_members(d: &cm_api::deploy::Deployable) -> Vec<String> {
    let mut v: Vec<String> = d
        .slots
        .iter()
        .filter(|s| s.assembly == "web")
        .map(|s| format!("cm-shop-{}-{}", s.name, s.incarnation))
        .collect();
    v.sort();
    v
}

#[test]
fn web_guests_behind_haproxy_roll_without_a_failed_request_and_a_killed_one_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let edge = Haproxy::start_empty_retrying(dir.path(), "web").unwrap();
    let mut cloud = Cloud::start_with(MasterOpts {
        extra: edge.master_args("edge"),
        ..MasterOpts::default()
    })
    .unwrap();
    deploy::add_hosts(&mut cloud, 2).unwrap();
    let user = DeployUser::new(&cloud, "shop");

    let started = Instant::now();
    user.apply(&pooled_shop("v1", 128));
    let d = user.wait_healthy("shop to be healthy", BOOT);
    let names = web_members(&d);
    balancer::wait_members(&edge, "web", &names, "3 webs ready in HAProxy", SEEN);
    eprintln!(
        "apply → 3 webs ready in HAProxy: {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let front = format!("127.0.0.1:{}", edge.port);
    let answers: BTreeSet<String> = (0..12)
        .map(|_| haproxy::get(&front, "/").unwrap().trim().to_string())
        .collect();
    assert_eq!(answers, BTreeSet::from(["v1".to_string()]));

    // A rolling update under load: new guests (a new size) with a new page.
    let old_webs: Vec<Slot> = d
        .slots
        .iter()
        .filter(|s| s.assembly == "web")
        .cloned()
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let load = balancer::load(&front, "/", Duration::from_millis(50), &stop);
    std::thread::sleep(Duration::from_secs(1));
    let t0 = Instant::now();
    user.apply(&pooled_shop("v2", 160));
    let d = wait_until("the rollout to finish", BOOT, || {
        let d = user.show();
        (d.state == cm_api::words::DeployableState::Healthy
            && d.generation == 2
            && d.slots.iter().all(|s| s.generation == 2))
        .then_some(d)
    })
    .unwrap_or_else(|e| panic!("{e}: {:#?}", user.show()));
    let names = web_members(&d);
    balancer::wait_members(&edge, "web", &names, "only the new webs in HAProxy", SEEN);
    let rolled = t0.elapsed();
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    let (ok, failed, answers) = load.join().unwrap();
    eprintln!(
        "rolling update of 3 webs under load: {:.1}s, {ok} requests answered, {} failed, answers {answers:?}",
        rolled.as_secs_f64(),
        failed.len()
    );
    if !failed.is_empty() {
        for e in user.events() {
            eprintln!(
                "{} {} {:?} {:?} {:?}→{:?} {:?}",
                e.time.unix_timestamp_nanos() / 1_000_000,
                e.kind,
                e.detail.object,
                e.detail.action,
                e.detail.from,
                e.detail.to,
                e.detail.reason
            );
        }
        panic!("failed requests: {failed:#?}");
    }
    assert!(ok > 20, "the load loop ran: {ok}");
    let (retried, redispatched) = edge.retries("web").unwrap();
    eprintln!("requests HAProxy re-sent (retry-on): {retried}, to another server: {redispatched}");
    // The order that makes a rolling update safe, from the events: each
    // old member is out of HAProxy before its instance is deleted.
    let events = user.events();
    for old_slot in &old_webs {
        let new_slot = slot(&d, &old_slot.name);
        let server = format!("cm-shop-{}-{}", old_slot.name, old_slot.incarnation);
        let inst = old_slot.instance.clone().unwrap();
        let out = events
            .iter()
            .find(|e| {
                e.detail.action == Some(EngineAction::PoolRemove)
                    && e.detail
                        .reason
                        .as_deref()
                        .is_some_and(|r| r.contains(&server))
            })
            .unwrap_or_else(|| panic!("{server} never removed: {events:#?}"));
        let deleted = events
            .iter()
            .find(|e| {
                e.detail.action == Some(EngineAction::Delete)
                    && e.detail
                        .reason
                        .as_deref()
                        .is_some_and(|r| r.starts_with(&format!("{inst} ")))
            })
            .unwrap_or_else(|| panic!("{inst} never deleted: {events:#?}"));
        assert!(
            out.seq < deleted.seq,
            "{server} removed (seq {}) after {inst} was deleted (seq {})",
            out.seq,
            deleted.seq
        );
        assert_ne!(new_slot.instance, old_slot.instance, "{d:#?}");
    }
    assert!(
        answers.contains("v1") && answers.contains("v2"),
        "{answers:?}"
    );
    let live = user.live_instances();
    assert_eq!(live.len(), 4, "one instance per slot: {live:#?}");

    // SIGKILL one web's QEMU: out of HAProxy, replaced, in again.
    let old = slot(&d, "web-1").clone();
    let mark = user.last_seq();
    deploy::kill_qemu(&user.instance(old.instance.as_deref().unwrap()));
    let (killed, wall) = (Instant::now(), SystemTime::now());
    let out = user.wait_event(mark, "the killed member to be removed", SEEN, |e| {
        e.detail.object.as_deref() == Some("web-1")
            && e.detail.action == Some(cm_api::words::EngineAction::PoolRemove)
    });
    eprintln!(
        "kill -9 → member removed from HAProxy: {:.2}s",
        deploy::event_after(&out, wall).as_secs_f64()
    );
    let d = wait_until("web-1 replaced", BOOT, || {
        let d = user.show();
        (d.state == cm_api::words::DeployableState::Healthy
            && slot(&d, "web-1").incarnation > old.incarnation)
            .then_some(d)
    })
    .unwrap_or_else(|e| panic!("{e}: {:#?}", user.show()));
    let names = web_members(&d);
    balancer::wait_members(&edge, "web", &names, "the replacement in HAProxy", BOOT);
    eprintln!(
        "kill -9 → the replacement serving behind HAProxy: {:.1}s",
        killed.elapsed().as_secs_f64()
    );
    let url = user.url_of(slot(&d, "web-1"));
    assert!(deploy::serving(&url, Duration::from_secs(5)), "{url}");
    assert_eq!(haproxy::get(&front, "/").unwrap().trim(), "v2");
    wait_until("one QEMU per slot", BOOT, || {
        (deploy::qemu_count(&cloud) == 4).then_some(())
    })
    .unwrap();
}
