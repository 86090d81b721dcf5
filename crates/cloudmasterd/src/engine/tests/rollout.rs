//! Rollouts that fail or need an order: a reconfigure whose gate fails
//! gives the guest its old config back.

use super::dpe::{all_up, live, observed, report, until, world_of, World};
use crate::engine::dpe;
use crate::store::{EngineStore, Store};
use cm_api::agent::ObservedState;
use cm_api::words::DeployableState;
use std::time::Duration;

fn config_spec(version: &str, deadline: &str) -> serde_json::Value {
    serde_json::json!({
        "name": "app",
        "update": {"min_healthy_time": "200ms", "healthy_deadline": deadline},
        "assemblies": [{"name": "web", "image": "tiny", "count": 1, "memory_mib": 64,
                        "config": format!("[parameters]\nversion = \"{version}\"\n")}]
    })
}

fn state(w: &World) -> DeployableState {
    w.store.deploy_snapshot(w.id, 0).unwrap().deployable.state
}

fn body(w: &World) -> String {
    let row = &live(w)[0];
    let (_, bytes, _) = w.store.config_body(row.id.uuid()).unwrap();
    String::from_utf8(bytes).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reverted_reconfigure_sets_the_old_config_again() {
    let w = world_of(config_spec("1", "1s"));
    let dpe = tokio::spawn(dpe::run(w.app.clone(), w.id));
    until("an instance", || live(&w).len() == 1).await;
    all_up(&w);
    until("healthy", || state(&w) == DeployableState::Healthy).await;
    assert!(body(&w).contains("version = \"1\""), "{}", body(&w));
    // Generation 2 changes the config: set in place; its guest never
    // comes back healthy (no beats), so the gate fails at 1 s.
    w.store.insert_test_generation(w.id, config_spec("2", "1s"));
    w.app.engines.wake(w.id);
    until("the new body", || body(&w).contains("version = \"2\"")).await;
    until("rollout_failed", || {
        let mut o = observed(&live(&w)[0], ObservedState::Running, None);
        o.liveness = None;
        report(&w, vec![o]);
        state(&w) == DeployableState::RolloutFailed
    })
    .await;
    until("the old body again", || {
        body(&w).contains("version = \"1\"")
    })
    .await;
    // And it stays so: the slot is back at generation 1.
    for _ in 0..5 {
        w.app.engines.wake(w.id);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(body(&w).contains("version = \"1\""), "{}", body(&w));
    let snap = w.store.deploy_snapshot(w.id, 0).unwrap();
    assert_eq!(snap.slots[0].spec_generation, 1);
    assert_eq!(live(&w).len(), 1, "the same instance, reconfigured twice");
    dpe.abort();
}

fn db_spec(image: &str) -> serde_json::Value {
    serde_json::json!({
        "name": "app",
        "update": {"min_healthy_time": "200ms", "healthy_deadline": "60s"},
        "assemblies": [{"name": "db", "image": image, "count": 1, "memory_mib": 64,
                        "stateful": true}]
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stateful_rollout_stops_the_old_instance_before_making_the_new_one() {
    let w = world_of(db_spec("tiny"));
    let mut img = w.store.get_image("tiny").unwrap();
    img.id = uuid::Uuid::new_v4();
    img.name = "tiny2".into();
    w.store.insert_image(&img).unwrap();
    let mut dpe = tokio::spawn(dpe::run(w.app.clone(), w.id));
    until("an instance", || live(&w).len() == 1).await;
    all_up(&w);
    until("healthy", || state(&w) == DeployableState::Healthy).await;
    let old = live(&w)[0].clone();

    // A new image: the old instance is stopped first.
    w.store.insert_test_generation(w.id, db_spec("tiny2"));
    w.app.engines.wake(w.id);
    until("the old instance to be asked to stop", || {
        w.store.get_instance(&old.name).unwrap().desired.power == cm_api::agent::Power::Stopped
    })
    .await;
    // Its host has not said it stopped, and the master restarts (a new
    // DPE from the same rows): still no second instance.
    dpe.abort();
    let _ = dpe.await;
    dpe = tokio::spawn(dpe::run(w.app.clone(), w.id));
    for _ in 0..10 {
        let mut o = observed(&old, ObservedState::Running, None);
        o.boot_gen = old.desired.boot_gen;
        report(&w, vec![o]);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let rows = live(&w);
        assert_eq!(rows.len(), 1, "two live instances of a stateful slot");
        assert_eq!(rows[0].id, old.id);
    }
    // Its host reports it stopped: now the new one is made, the old deleted.
    report(&w, vec![observed(&old, ObservedState::Stopped, None)]);
    until("the new instance", || {
        let rows = live(&w);
        rows.len() == 1 && rows[0].spec.image_name == "tiny2"
    })
    .await;
    all_up(&w);
    until("healthy at generation 2", || {
        state(&w) == DeployableState::Healthy
    })
    .await;
    dpe.abort();
}
