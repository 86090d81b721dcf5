//! Issue 11 point 9 with real VMs: unreachable is not dead. On a cloud of
//! two real `cloudhostd` of this machine, the agent of the host that runs
//! the stateful `db` is frozen with SIGSTOP (its QEMUs keep running): the
//! master declares the host down, the stateless web slots there are
//! replaced on the other host and serve, the db waits (the `waiting` event)
//! and is never replaced. After SIGCONT the host removes its old web VMs:
//! exactly one instance per slot, one QEMU per slot on the machine. The
//! deployable is `deploy_vm.rs`'s (`test_infra::deploy::shop`).

use cm_api::words::{EngineAction, SlotState};
use std::time::{Duration, Instant};
use test_infra::cloud::is_qemu;
use test_infra::deploy::{self, slot, DeployUser};
use test_infra::{wait_until, Cloud};

const BOOT: Duration = Duration::from_secs(600);
const SEEN: Duration = Duration::from_secs(120);

#[test]
fn a_silent_host_agent_has_its_web_replaced_its_db_kept_and_one_of_each_after() {
    let mut cloud = Cloud::start().unwrap();
    deploy::add_hosts(&mut cloud, 2).unwrap();
    let user = DeployUser::new(&cloud, "shop");
    user.apply(&deploy::shop("shop", 3));
    let d = user.wait_healthy("shop to be healthy", BOOT);

    let db = slot(&d, "db-0").clone();
    let silent_host = db.host.clone().unwrap();
    let other = if silent_host == "h1" { "h2" } else { "h1" };
    let webs: Vec<_> = d
        .slots
        .iter()
        .filter(|s| s.assembly == "web" && s.host.as_deref() == Some(silent_host.as_str()))
        .cloned()
        .collect();
    assert!(
        !webs.is_empty() && webs.len() < 3,
        "spread puts webs on both hosts: {d:#?}"
    );
    let old_pids: Vec<u32> = webs
        .iter()
        .map(|w| user.instance(w.instance.as_deref().unwrap()).pid.unwrap())
        .collect();
    eprintln!(
        "{silent_host} runs db-0 and {:?}",
        webs.iter().map(|w| &w.name).collect::<Vec<_>>()
    );

    let mark = user.last_seq();
    cloud.signal_host(&silent_host, libc::SIGSTOP);
    let stopped = Instant::now();
    cloud.wait_host_state(&silent_host, "down", SEEN).unwrap();
    eprintln!(
        "SIGSTOP → host down: {:.1}s",
        stopped.elapsed().as_secs_f64()
    );
    for w in &webs {
        let e = user.wait_event(mark, "the silent host's web to be replaced", SEEN, |e| {
            e.detail.object.as_deref() == Some(w.name.as_str())
                && e.detail.action == Some(EngineAction::Replace)
        });
        eprintln!(
            "SIGSTOP → {} replaced: {:.1}s ({:?})",
            w.name,
            stopped.elapsed().as_secs_f64(),
            e.detail.reason
        );
    }
    let waits = user.wait_event(mark, "db-0 to wait", SEEN, |e| {
        e.detail.object.as_deref() == Some("db-0") && e.detail.action == Some(EngineAction::Wait)
    });
    let why = waits.detail.reason.clone().unwrap_or_default();
    assert!(why.contains("stateful"), "{why}");
    // The replacements boot and serve on the other host.
    let d = wait_until(
        "the web slots to be healthy on the other host",
        BOOT,
        || {
            let d = user.show();
            webs.iter()
                .all(|w| {
                    let s = slot(&d, &w.name);
                    s.state == SlotState::Healthy && s.host.as_deref() == Some(other)
                })
                .then_some(d)
        },
    )
    .unwrap();
    for w in &webs {
        let url = user.url_of(slot(&d, &w.name));
        let t = deploy::wait_serving(&url, stopped, BOOT).unwrap();
        eprintln!(
            "SIGSTOP → {} serving again: {:.1}s",
            w.name,
            t.as_secs_f64()
        );
    }
    let db_now = slot(&d, "db-0");
    assert_eq!(db_now.instance, db.instance, "{d:#?}");
    assert_eq!(db_now.state, SlotState::Unreachable, "{d:#?}");
    // Unreachable, not dead: the old VMs still run on the frozen host.
    for pid in &old_pids {
        assert!(is_qemu(*pid), "the old web's QEMU {pid} runs on");
    }

    // The agent comes back: it removes the old webs, keeps the db.
    cloud.signal_host(&silent_host, libc::SIGCONT);
    let back = Instant::now();
    cloud.wait_host_state(&silent_host, "ready", SEEN).unwrap();
    let d = user.wait_healthy("shop to be healthy with its host back", BOOT);
    let live = wait_until("one instance per slot", BOOT, || {
        let live = user.live_instances();
        (live.len() == 4).then_some(live)
    })
    .unwrap();
    wait_until("one QEMU per slot on the machine", BOOT, || {
        (deploy::qemu_count(&cloud) == 4 && !old_pids.iter().any(|p| is_qemu(*p))).then_some(())
    })
    .unwrap();
    eprintln!(
        "SIGCONT → one instance and one QEMU per slot: {:.1}s",
        back.elapsed().as_secs_f64()
    );
    for s in &d.slots {
        assert!(
            live.iter().any(|i| Some(&i.name) == s.instance.as_ref()),
            "{} is served by a live instance: {live:#?}",
            s.name
        );
    }
    assert_eq!(slot(&d, "db-0").instance, db.instance, "db-0 kept: {d:#?}");
    assert!(
        !user
            .events()
            .iter()
            .any(|e| e.detail.object.as_deref() == Some("db-0")
                && e.detail.action == Some(EngineAction::Replace)),
        "a stateful slot is never replaced while its host may run it"
    );
}
