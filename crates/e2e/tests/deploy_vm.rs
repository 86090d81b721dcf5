//! Issue 11 point 9 with real VMs (TCG guests of the test image): a
//! deployable of 3 stateless `web` assemblies (busybox httpd as a cm-guest
//! service, an http check, a forwarded port) and 1 stateful `db` (a
//! long-running service with an exec check), 1 s heartbeats and a 3 s
//! timeout, on two real `cloudhostd` of this machine, driven with the real
//! `cm` as a user on the master's machine runs it (its pointer file; no URL,
//! token or settings). Here: a web QEMU killed with SIGKILL is seen at once
//! and replaced (its restart budget is 0), the replacement serves through
//! its forwarded port; a db guest frozen with QMP `stop` is found silent by
//! its heartbeats and restarted in place; a master SIGKILLed while a
//! replacement boots finishes it once, after
//! its engine (DPE) was made to panic and was restarted. The other scenarios are in
//! `deploy_vm_host.rs` (a silent host agent) and `deploy_vm_flap.rs` (a
//! service that keeps crashing). Figures are printed; bounds are generous
//! (a loaded 2-core machine is slow, not wrong).

use cm_api::words::{EngineAction, SlotState};
use std::time::{Duration, Instant, SystemTime};
use test_infra::deploy::{self, slot, DeployUser};
use test_infra::{qmp, wait_until, Cloud, HostOpts, MasterOpts};

/// Four TCG guests booting at once on a busy 2-core machine.
const BOOT: Duration = Duration::from_secs(600);
/// A detection or an action, however loaded the machine.
const SEEN: Duration = Duration::from_secs(60);

fn two_hosts() -> Cloud {
    let mut cloud = Cloud::start().unwrap();
    deploy::add_hosts(&mut cloud, 2).unwrap();
    cloud
}

#[test]
fn a_killed_web_is_replaced_and_serves_and_a_frozen_db_is_restarted() {
    let cloud = two_hosts();
    let user = DeployUser::new(&cloud, "shop");
    let started = Instant::now();
    user.apply(&deploy::shop("shop", 3));
    let d = user.wait_healthy("shop to be healthy", BOOT);
    eprintln!(
        "apply → 4 guests healthy: {:.1}s",
        started.elapsed().as_secs_f64()
    );
    for w in ["web-0", "web-1", "web-2"] {
        let url = user.url_of(slot(&d, w));
        deploy::wait_serving(&url, Instant::now(), SEEN).unwrap();
    }

    // (a) SIGKILL one web's QEMU: seen at once, replaced (budget 0), served.
    let old = slot(&d, "web-0").clone();
    let old_name = old.instance.clone().unwrap();
    let mark = user.last_seq();
    deploy::kill_qemu(&user.instance(&old_name));
    let (killed, wall) = (Instant::now(), SystemTime::now());
    let seen = user.wait_event(mark, "the kill to be seen", SEEN, |e| {
        e.detail.object.as_deref() == Some("web-0")
    });
    eprintln!(
        "kill -9 → the engine's first event: {:.2}s ({:?} {:?})",
        deploy::event_after(&seen, wall).as_secs_f64(),
        seen.detail.to,
        seen.detail.reason
    );
    let replace = user.wait_event(mark, "web-0 to be replaced", SEEN, |e| {
        e.detail.object.as_deref() == Some("web-0")
            && e.detail.action == Some(EngineAction::Replace)
    });
    eprintln!(
        "kill -9 → replace decided: {:.2}s",
        deploy::event_after(&replace, wall).as_secs_f64()
    );
    let d = user.wait_healthy("shop to be healthy after the kill", BOOT);
    let new = slot(&d, "web-0");
    assert_ne!(new.instance, old.instance, "a new instance: {d:#?}");
    assert_eq!(new.incarnation, old.incarnation + 1, "{d:#?}");
    let url = user.url_of(new);
    let serving = deploy::wait_serving(&url, killed, BOOT).unwrap();
    eprintln!(
        "kill -9 → the replacement serves at {url}: {:.1}s",
        serving.as_secs_f64()
    );
    assert!(
        !user.events().iter().any(|e| e
            .detail
            .object
            .as_deref()
            .is_some_and(|o| o.starts_with("web-"))
            && e.detail.action == Some(EngineAction::RestartAssembly)),
        "a web with a restart budget of 0 is never restarted in place"
    );
    let live = wait_until("the old web to be gone", BOOT, || {
        let live = user.live_instances();
        (live.len() == 4 && live.iter().all(|i| i.name != old_name)).then_some(live)
    })
    .unwrap();
    wait_until("one QEMU per slot", BOOT, || {
        (deploy::qemu_count(&cloud) == 4).then_some(())
    })
    .unwrap();
    eprintln!(
        "instances: {:?}",
        live.iter().map(|i| &i.name).collect::<Vec<_>>()
    );

    // (b) Freeze the db guest (QMP stop: QEMU lives, its vCPUs and beats
    // stop): found silent by its heartbeats, restarted in place.
    let db = slot(&d, "db-0").clone();
    let db_inst = user.instance(db.instance.as_deref().unwrap());
    let host = db_inst.host.clone().unwrap();
    let sock = cloud
        .host(&host)
        .instance_dir(&db_inst.id.to_string())
        .join("qmp.sock");
    let mark = user.last_seq();
    qmp::call(&sock, "stop").unwrap();
    let wall = SystemTime::now();
    let silent = user.wait_event(mark, "the frozen db to be seen", SEEN, |e| {
        e.detail.object.as_deref() == Some("db-0")
    });
    eprintln!(
        "QMP stop → the engine's first event: {:.2}s ({:?} {:?}; timeout 3s)",
        deploy::event_after(&silent, wall).as_secs_f64(),
        silent.detail.to,
        silent.detail.reason
    );
    let restart = user.wait_event(mark, "db-0 to be restarted", SEEN, |e| {
        e.detail.object.as_deref() == Some("db-0")
            && e.detail.action == Some(EngineAction::RestartAssembly)
    });
    let why = restart.detail.reason.clone().unwrap_or_default();
    assert!(why.contains("silent"), "restarted for its silence: {why}");
    eprintln!(
        "QMP stop → restart decided: {:.2}s",
        deploy::event_after(&restart, wall).as_secs_f64()
    );
    let d = user.wait_healthy("shop to be healthy after the freeze", BOOT);
    let db_now = slot(&d, "db-0");
    assert_eq!(db_now.instance, db.instance, "restarted in place: {d:#?}");
    assert_eq!(db_now.incarnation, db.incarnation, "{d:#?}");
    assert_eq!(
        user.instance(db.instance.as_deref().unwrap()).host,
        Some(host)
    );
    assert_eq!(user.live_instances().len(), 4);
    assert!(
        !user
            .events()
            .iter()
            .any(|e| e.detail.object.as_deref() == Some("db-0")
                && e.detail.action == Some(EngineAction::Replace)),
        "a stateful slot on a live host is restarted, never replaced"
    );
}

#[test]
fn a_panicked_engine_and_a_master_killed_while_a_replacement_boots_finish_it_once() {
    // The debug route that makes a DPE panic (debug builds only).
    let mut cloud = Cloud::start_with(MasterOpts {
        extra: vec!["--debug-routes".into()],
        ..Default::default()
    })
    .unwrap();
    let opts: HostOpts = deploy::own_forwards(&cloud, 0);
    cloud.add_host("h1", opts).unwrap();
    cloud.add_test_image().unwrap();
    let user = DeployUser::new(&cloud, "solo");
    // One web, no db: the fewest boots that show it.
    let spec = deploy::shop("solo", 1);
    let spec = spec.split("  - name: db").next().unwrap().to_string();
    user.apply(&spec);
    let d = user.wait_healthy("solo to be healthy", BOOT);
    let first = slot(&d, "web-0").clone();

    // Its DPE panics: the CPE restarts it and says so. (Raw HTTP: cm has
    // no command for a debug route.)
    let mark = user.last_seq();
    let url = format!("{}/v1/debug/deployables/solo/panic", cloud.url);
    let (status, body) = test_infra::http("POST", &url, Some(&cloud.token), None);
    assert_eq!(status, 202, "{body}");
    let ev = user.wait_event(mark, "the engine to be restarted", SEEN, |e| {
        e.kind.as_str() == "deployable.engine"
    });
    assert!(
        ev.detail.reason.as_deref().unwrap_or("").contains("panic"),
        "{ev:?}"
    );

    let mark = user.last_seq();
    deploy::kill_qemu(&user.instance(first.instance.as_deref().unwrap()));
    let killed = Instant::now();
    user.wait_event(mark, "web-0 to be replaced", SEEN, |e| {
        e.detail.object.as_deref() == Some("web-0")
            && e.detail.action == Some(EngineAction::Replace)
    });
    // Killed right after it decided: the replacement is still booting.
    let at_kill = slot(&user.show(), "web-0").clone();
    cloud.stop_master(libc::SIGKILL);
    eprintln!(
        "master SIGKILLed {:.2}s after the QEMU kill, web-0 {} (incarnation {})",
        killed.elapsed().as_secs_f64(),
        at_kill.state,
        at_kill.incarnation
    );
    assert_ne!(at_kill.state, SlotState::Healthy, "killed mid-replacement");
    cloud.start_master().unwrap();
    let d = user.wait_healthy("solo to be healthy after the master's restart", BOOT);
    let now = slot(&d, "web-0");
    assert_eq!(now.incarnation, first.incarnation + 1, "{d:#?}");
    assert_eq!(now.instance, at_kill.instance, "the one it had decided");
    let url = user.url_of(now);
    let t = deploy::wait_serving(&url, killed, BOOT).unwrap();
    eprintln!(
        "kill -9 → serving across the master's restart: {:.1}s",
        t.as_secs_f64()
    );
    let live = wait_until("one instance", BOOT, || {
        let live = user.live_instances();
        (live.len() == 1).then_some(live)
    })
    .unwrap();
    assert_eq!(Some(&live[0].name), now.instance.as_ref());
    wait_until("one QEMU", BOOT, || {
        (deploy::qemu_count(&cloud) == 1).then_some(())
    })
    .unwrap();
    let replaces = user
        .events()
        .iter()
        .filter(|e| {
            e.detail.object.as_deref() == Some("web-0")
                && e.detail.action == Some(EngineAction::Replace)
        })
        .count();
    assert_eq!(
        replaces, 1,
        "one replacement for one failure, none repeated"
    );
}
