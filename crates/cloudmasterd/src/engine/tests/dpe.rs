//! A real DPE on a real (in-memory) store, with a host that reports by
//! hand: it creates the slots' instances, restarts a crashed one in
//! place, refuses a user's stop of an owned instance, and panics when
//! poisoned.

use crate::engine::dpe;
use crate::state::App;
use crate::store::sqlite::SqliteStore;
use crate::store::{DeployableStore, EngineStore, EventFilter, InstanceRow, Store};
use clap::Parser;
use cm_api::agent::{ObservedInstance, ObservedState};
use cm_api::ids::DeployableId;
use cm_api::words::{KnownStopReason, StopReason};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(super) struct World {
    pub(super) app: Arc<App>,
    pub(super) store: Arc<SqliteStore>,
    pub(super) id: DeployableId,
    pub(super) host: crate::store::HostId,
    _dir: tempfile::TempDir,
}

fn world() -> World {
    world_of(serde_json::json!({
        "name": "app",
        "assemblies": [{"name": "web", "image": "tiny", "count": 2, "memory_mib": 64,
                        "ports": [{"name": "http", "guest": 8080}]}]
    }))
}

pub(super) fn world_of(spec: serde_json::Value) -> World {
    world_with(spec, &[])
}

fn world_with(spec: serde_json::Value, extra: &[&str]) -> World {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::in_memory().unwrap());
    let host = store
        .register_host("h1", "tok", &crate::store::sqlite::tests::facts(8192), 0)
        .unwrap();
    crate::store::sqlite::tests::image(store.as_ref());
    let id = store.insert_test_deployable(spec);
    let d = dir.path().to_string_lossy().to_string();
    let mut argv = vec!["cloudmasterd", "--data-dir", &d];
    argv.extend_from_slice(extra);
    let args = crate::config::Args::parse_from(argv);
    let settings = crate::config::Config::load(&args).unwrap().settings;
    let keys = crate::bootcfg::Keyring::from_key([7; 32]);
    let uploads = crate::uploads::Uploads::new(&settings).unwrap();
    let s: Arc<dyn Store> = store.clone();
    let app = Arc::new(App::new(s, settings, uuid::Uuid::new_v4(), keys, uploads).unwrap());
    World {
        app,
        store,
        id,
        host,
        _dir: dir,
    }
}

/// Wait (bounded) until `f` says yes.
pub(super) async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub(super) fn observed(
    row: &InstanceRow,
    state: ObservedState,
    reason: Option<StopReason>,
) -> ObservedInstance {
    ObservedInstance {
        id: row.id.uuid(),
        state,
        reason,
        boot_gen: row.desired.boot_gen,
        reboot_gen: 0,
        pid: Some(1),
        accel: None,
        since: cm_api::time::to_timestamp(crate::store::now_ms()),
        guest: None,
        // A host judges a running guest with a health policy; these beat.
        liveness: (state == ObservedState::Running).then_some(cm_api::words::GuestLiveness::Up),
        volumes: Vec::new(),
        root_snapshots: Vec::new(),
        root_reverted_gen: 0,
        root_revert_error: None,
    }
}

pub(super) fn live(w: &World) -> Vec<InstanceRow> {
    let mut v: Vec<InstanceRow> = w
        .store
        .list_instances()
        .unwrap()
        .into_iter()
        .filter(|i| !i.desired.deleted)
        .collect();
    v.sort_by(|a, b| a.name.cmp(&b.name));
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dpe_creates_restarts_a_crash_and_dies_when_poisoned() {
    let w = world();
    let dpe = tokio::spawn(dpe::run(w.app.clone(), w.id));
    until("two instances", || live(&w).len() == 2).await;
    let rows = live(&w);
    assert_eq!(rows[0].name, "app-web-0-1");
    assert!(rows[0].spec.ports[0].host >= 30000);
    assert_ne!(rows[0].spec.ports[0].host, rows[1].spec.ports[0].host);
    let cfg = w.store.config_body(rows[0].id.uuid()).unwrap().1;
    let cfg = String::from_utf8(cfg).unwrap();
    assert!(cfg.contains("heartbeat_ms = 1000"), "{cfg}");
    // Both run and beat: healthy.
    let report = |rows: &[InstanceRow], st: Vec<ObservedInstance>| {
        let _ = rows;
        w.store
            .record_report(
                w.host,
                &crate::store::sqlite::tests::facts(8192),
                99,
                &st,
                crate::store::now_ms(),
            )
            .unwrap();
        w.app.engines.wake(w.id);
    };
    for r in &rows {
        w.store.set_test_liveness(r.id, "up");
    }
    report(
        &rows,
        rows.iter()
            .map(|r| observed(r, ObservedState::Running, None))
            .collect(),
    );
    until("healthy", || {
        w.store.deploy_snapshot(w.id, 0).unwrap().deployable.state
            == cm_api::words::DeployableState::Healthy
    })
    .await;
    // The user may not stop an owned instance.
    let err = crate::app::instances::stop(&w.app, None, rows[0].name.clone(), Default::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), cm_api::ErrorCode::Conflict);
    assert!(err.to_string().contains("owned by deployable app"), "{err}");
    // QEMU of web-0 exits: restarted in place (same row, next boot).
    let crashed = observed(
        &rows[0],
        ObservedState::Stopped,
        Some(StopReason::Known(KnownStopReason::Crashed)),
    );
    report(
        &rows,
        vec![crashed, observed(&rows[1], ObservedState::Running, None)],
    );
    until("a restart", || {
        w.store
            .get_instance(&rows[0].name)
            .unwrap()
            .desired
            .boot_gen
            == rows[0].desired.boot_gen + 1
    })
    .await;
    assert_eq!(live(&w).len(), 2, "a restart makes no new instance");
    let f = EventFilter {
        kind: Some("deployable.action".into()),
        deployable: Some("app".into()),
    };
    let evs = w.store.events_filtered(0, &f, 100).unwrap();
    let restart = evs
        .iter()
        .find(|e| e.detail.action == Some(cm_api::words::EngineAction::RestartAssembly))
        .expect("a restart event");
    assert_eq!(restart.detail.object.as_deref(), Some("web-0"));
    assert_eq!(restart.detail.counters["assembly"], "0/3 in 10m");
    // Poisoned: the DPE panics at its next pass.
    w.app.engines.poison(w.id);
    let end = tokio::time::timeout(Duration::from_secs(20), dpe)
        .await
        .unwrap();
    assert!(end.unwrap_err().is_panic());
}

pub(super) fn report(w: &World, st: Vec<ObservedInstance>) {
    w.store
        .record_report(
            w.host,
            &crate::store::sqlite::tests::facts(8192),
            99,
            &st,
            crate::store::now_ms(),
        )
        .unwrap();
    w.app.engines.wake(w.id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_with_no_restart_budget_replaces_once_and_dependents_follow() {
    let w = world_of(serde_json::json!({
        "name": "app",
        "assemblies": [
            {"name": "web", "image": "tiny", "memory_mib": 64,
             "services": [{"name": "httpd", "run": "httpd", "env": {"DB": {"ref": "db.address"}}}]},
            {"name": "db", "image": "tiny", "memory_mib": 64, "stateful": true,
             "escalation": {"failures": 0, "period": "10m"},
             "ports": [{"name": "pg", "guest": 5432}]}
        ]
    }));
    let dpe = tokio::spawn(dpe::run(w.app.clone(), w.id));
    until("two instances", || live(&w).len() == 2).await;
    let rows = live(&w);
    let (db, web) = (&rows[0], &rows[1]);
    assert_eq!(db.name, "app-db-0-1");
    let body = |id: crate::store::InstanceId| {
        let (v, b, _) = w.store.config_body(id.uuid()).unwrap();
        (v, String::from_utf8(b).unwrap())
    };
    let port = db.spec.ports[0].host;
    until("web's DB reference", || {
        body(web.id).1.contains(&format!("127.0.0.1:{port}"))
    })
    .await;
    let v1 = body(web.id).0;
    // The db's QEMU dies; its restart budget is 0: straight to replace.
    let crashed = observed(
        db,
        ObservedState::Stopped,
        Some(StopReason::Known(KnownStopReason::Crashed)),
    );
    report(
        &w,
        vec![crashed, observed(web, ObservedState::Running, None)],
    );
    until("a replacement", || {
        live(&w).iter().any(|r| r.name == "app-db-0-2")
    })
    .await;
    // Several more passes: still exactly one db, the old one deleted.
    for _ in 0..5 {
        w.app.engines.wake(w.id);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let names: Vec<String> = live(&w).into_iter().map(|r| r.name).collect();
    assert_eq!(names, ["app-db-0-2", "app-web-0-1"]);
    assert!(
        w.store
            .get_instance(&db.id.to_string())
            .unwrap()
            .desired
            .deleted
    );
    // web's config follows the new db's port, as a new version.
    let new_port = live(&w)[0].spec.ports[0].host;
    assert_ne!(new_port, port);
    until("web re-rendered", || {
        body(web.id).1.contains(&format!("127.0.0.1:{new_port}"))
    })
    .await;
    assert!(body(web.id).0 > v1);
    dpe.abort();
}

/// Every live instance runs its current boot and beats (a host that is fine).
pub(super) fn all_up(w: &World) {
    let rows = live(w);
    for r in &rows {
        w.store.set_test_liveness(r.id, "up");
    }
    report(
        w,
        rows.iter()
            .map(|r| observed(r, ObservedState::Running, None))
            .collect(),
    );
}

fn web_spec(image: &str, deadline: &str) -> serde_json::Value {
    serde_json::json!({
        "name": "app",
        "update": {"min_healthy_time": "200ms", "healthy_deadline": deadline},
        "assemblies": [{"name": "web", "image": image, "count": 2, "memory_mib": 64}]
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_replaces_one_slot_at_a_time_and_stops_at_a_failed_gate() {
    let w = world_of(web_spec("tiny", "60s"));
    // A second image for generation 2.
    let mut img = w.store.get_image("tiny").unwrap();
    img.id = uuid::Uuid::new_v4();
    img.name = "tiny2".into();
    w.store.insert_image(&img).unwrap();
    let dpe = tokio::spawn(dpe::run(w.app.clone(), w.id));
    until("two instances", || live(&w).len() == 2).await;
    all_up(&w);
    let state = |w: &World| w.store.deploy_snapshot(w.id, 0).unwrap().deployable.state;
    until("healthy", || {
        state(&w) == cm_api::words::DeployableState::Healthy
    })
    .await;
    // Generation 2: a new image, so each slot gets a new instance.
    w.store
        .insert_test_generation(w.id, web_spec("tiny2", "60s"));
    w.app.engines.wake(w.id);
    let mut most_live = 0;
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        all_up(&w);
        let rows = live(&w);
        most_live = most_live.max(rows.len());
        if rows.iter().all(|r| r.spec.image_name == "tiny2") && rows.len() == 2 {
            break;
        }
        assert!(
            Instant::now() < end,
            "rollout did not finish: {:?}",
            rows.iter().map(|r| &r.name).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Create before destroy, one slot at a time: never more than 3 live.
    assert_eq!(most_live, 3);
    let names: Vec<String> = live(&w).into_iter().map(|r| r.name).collect();
    assert_eq!(names, ["app-web-0-2", "app-web-1-2"]);
    // Generation 3: back to tiny, but the new instances never beat.
    w.store.insert_test_generation(w.id, web_spec("tiny", "1s"));
    w.app.engines.wake(w.id);
    until("rollout_failed", || {
        report(
            &w,
            live(&w)
                .iter()
                .map(|r| {
                    let mut o = observed(r, ObservedState::Running, None);
                    // The new instances never beat: their host has no class yet.
                    if r.spec.image_name == "tiny" {
                        o.liveness = None;
                    }
                    o
                })
                .collect(),
        );
        state(&w) == cm_api::words::DeployableState::RolloutFailed
    })
    .await;
    // The old instances serve on; the failed new one is deleted.
    for _ in 0..5 {
        w.app.engines.wake(w.id);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let names: Vec<String> = live(&w).into_iter().map(|r| r.name).collect();
    assert_eq!(names, ["app-web-0-2", "app-web-1-2"]);
    let f = EventFilter {
        kind: Some("deployable.rollout".into()),
        deployable: Some("app".into()),
    };
    let evs = w.store.events_filtered(0, &f, 100).unwrap();
    assert!(
        evs.iter()
            .any(|e| e.detail.to.as_deref() == Some("rollout_failed")),
        "{evs:?}"
    );
    dpe.abort();
}

#[test]
fn a_dpe_sleeps_to_its_next_future_timer() {
    use dpe::sleep_for;
    assert_eq!(sleep_for(None, 1_000, 1_000), Duration::from_secs(1));
    assert_eq!(
        sleep_for(Some(1_300), 1_000, 1_000),
        Duration::from_millis(300)
    );
    // A back-off that expired before the pass wakes nothing: no busy loop.
    assert_eq!(sleep_for(Some(500), 1_000, 1_000), Duration::from_secs(1));
    // A timer that came due during the pass: a short sleep.
    assert_eq!(
        sleep_for(Some(1_010), 1_000, 1_050),
        Duration::from_millis(20)
    );
    assert_eq!(
        sleep_for(Some(90_000), 1_000, 1_000),
        Duration::from_secs(1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_host_s_stateless_slot_is_replaced_and_its_stateful_one_waits() {
    let w = world_with(
        serde_json::json!({
            "name": "app",
            "policy": {"heartbeat_interval": "200ms", "heartbeat_timeout": "1s"},
            "assemblies": [
                {"name": "db", "image": "tiny", "memory_mib": 64, "stateful": true},
                {"name": "web", "image": "tiny", "memory_mib": 64, "count": 2}
            ]
        }),
        &["--report-interval", "1", "--host-down-after", "2"],
    );
    // A second, bigger host: db-0 and web-0 go there, web-1 (spread) here.
    let big = w
        .store
        .register_host("h2", "tok2", &crate::store::sqlite::tests::facts(16384), 0)
        .unwrap();
    let dpe = tokio::spawn(dpe::run(w.app.clone(), w.id));
    until("three instances", || live(&w).len() == 3).await;
    let on = |h| {
        live(&w)
            .into_iter()
            .filter(|r| r.host_id == h)
            .map(|r| r.name)
            .collect::<Vec<_>>()
    };
    assert_eq!(on(big), ["app-db-0-1", "app-web-0-1"]);
    assert_eq!(on(w.host), ["app-web-1-1"]);
    // h2 stops reporting; h1 goes on.
    let h1_up = || {
        let rows: Vec<_> = live(&w)
            .into_iter()
            .filter(|r| r.host_id == w.host)
            .collect();
        for r in &rows {
            w.store.set_test_liveness(r.id, "up");
        }
        report(
            &w,
            rows.iter()
                .map(|r| observed(r, ObservedState::Running, None))
                .collect(),
        );
    };
    until("web-0 replaced on h1", || {
        h1_up();
        on(w.host).contains(&"app-web-0-2".to_string())
    })
    .await;
    let old = w.store.get_instance("app-web-0-1").unwrap();
    assert!(
        old.desired.deleted,
        "the old one is deleted: its host removes it when back"
    );
    // The stateful db waits for its host: no second instance, ever.
    for _ in 0..10 {
        h1_up();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let dbs: Vec<_> = w
        .store
        .list_instances()
        .unwrap()
        .into_iter()
        .filter(|r| r.name.starts_with("app-db-0"))
        .collect();
    assert_eq!(dbs.len(), 1);
    assert!(!dbs[0].desired.deleted);
    let f = EventFilter {
        kind: Some("deployable.action".into()),
        deployable: Some("app".into()),
    };
    let evs = w.store.events_filtered(0, &f, 100).unwrap();
    let waiting: Vec<_> = evs
        .iter()
        .filter(|e| e.detail.action == Some(cm_api::words::EngineAction::Wait))
        .collect();
    assert_eq!(waiting.len(), 1, "said once: {evs:?}");
    assert_eq!(waiting[0].detail.object.as_deref(), Some("db-0"));
    assert!(waiting[0]
        .detail
        .reason
        .as_deref()
        .unwrap()
        .contains("cm host evacuate h2"));
    let snap = w.store.deploy_snapshot(w.id, 0).unwrap();
    assert_ne!(
        snap.deployable.state,
        cm_api::words::DeployableState::Frozen
    );
    dpe.abort();
}
