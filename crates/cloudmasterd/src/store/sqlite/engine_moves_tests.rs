//! The move rung's transaction (one move, never twice) and the repair.

use super::super::tests::{facts, first_host, image, new_instance};
use super::super::SqliteStore;
use crate::store::engine::*;
use crate::store::*;
use cm_api::agent::HealthPolicy;
use cm_api::event::EventDetail;
use cm_api::words::{EngineAction, EventKind, SlotState};

fn ev(what: &str) -> NewEvent {
    NewEvent {
        kind: EventKind::DeployableAction,
        target: "app".into(),
        message: what.into(),
        detail: EventDetail {
            deployable: Some("app".into()),
            action: Some(EngineAction::Move),
            ..Default::default()
        },
    }
}

/// A deployable of web (httpd) and worker (job), one slot each, each
/// with an instance whose health policy expects its service.
fn world(s: &SqliteStore) -> Vec<SlotRow> {
    s.register_host("h1", "tok1", &facts(4096), 0).unwrap();
    let img = image(s);
    let id = s.insert_test_deployable(serde_json::json!({"name": "app", "assemblies": [
        {"name": "web", "image": "tiny", "services": [{"name": "httpd", "run": "httpd"}]},
        {"name": "worker", "image": "tiny",
         "services": [{"name": "job", "run": "job", "may_move_to": ["web"]}]}
    ]}));
    for slot in s.ensure_slots(id, 1).unwrap() {
        let name = format!("app-{}-1", slot.name());
        let mut new = new_instance(&name, &img, 64);
        new.owner = Some(Owner {
            deployable: id,
            slot: slot.name(),
        });
        let svc = if slot.assembly == "web" {
            "httpd"
        } else {
            "job"
        };
        new.health = Some(HealthPolicy {
            heartbeat_interval_ms: 500,
            heartbeat_timeout_ms: 2000,
            boot_grace_ms: 20_000,
            services: vec![svc.into()],
        });
        let o = new_operation(
            cm_api::words::OperationKind::InstanceCreate,
            &name,
            uuid::Uuid::new_v4(),
            "placed",
        );
        let create = SlotCreate {
            new: &new,
            config: None,
            place: &first_host,
            op: &o,
        };
        let done = s
            .create_slot_instance(&SlotKey::of(&slot), 0, create, &slot, &ev("created"), 1)
            .unwrap();
        assert!(matches!(done, Cas::Done(..)));
    }
    s.ensure_slots(id, 1).unwrap()
}

fn expected(s: &SqliteStore, slot: &SlotRow) -> Vec<String> {
    let id = slot.instance_id.unwrap().to_string();
    s.get_instance(&id).unwrap().spec.health.unwrap().services
}

#[test]
fn a_move_writes_both_slots_and_their_policies_once() {
    let s = SqliteStore::in_memory().unwrap();
    let slots = world(&s);
    let (web, worker) = (&slots[0], &slots[1]);
    assert_eq!(
        (web.assembly.as_str(), worker.assembly.as_str()),
        ("web", "worker")
    );
    let gen_before = s.get_host("h1").unwrap().generation;
    let mut web_after = web.clone();
    web_after.services = Some(vec!["httpd".into(), "worker-0.job".into()]);
    let mut worker_after = worker.clone();
    worker_after.services = Some(vec![]);
    worker_after.state = SlotState::Failed;
    let sides = vec![
        SlotServices {
            before: worker.clone(),
            after: worker_after.clone(),
            expected: vec![],
        },
        SlotServices {
            before: web.clone(),
            after: web_after.clone(),
            expected: vec!["httpd".into(), "worker-0.job".into()],
        },
    ];
    let done = s.move_services(&sides, &ev("moved"), 5).unwrap();
    let Cas::Done((), evs) = done else {
        panic!("not done")
    };
    assert_eq!(evs.len(), 1);
    let now = s.ensure_slots(web.deployable_id, 6).unwrap();
    assert_eq!(now[0].services, web_after.services);
    assert_eq!(now[1].services, Some(vec![]));
    assert_eq!(expected(&s, &now[0]), ["httpd", "worker-0.job"]);
    assert!(expected(&s, &now[1]).is_empty());
    assert!(
        s.get_host("h1").unwrap().generation > gen_before,
        "its host is told"
    );
    // The same move decided again from the old rows: stale, nothing written.
    let again = s.move_services(&sides, &ev("moved"), 7).unwrap();
    assert!(again.is_stale());
    let after = s.ensure_slots(web.deployable_id, 8).unwrap();
    assert_eq!(after[0].services, web_after.services);
    assert_eq!(after[0].updated_at, now[0].updated_at);
}

#[test]
fn repair_clears_a_failed_slots_counters_once() {
    let s = SqliteStore::in_memory().unwrap();
    let slots = world(&s);
    let mut failed = slots[1].clone();
    failed.state = SlotState::Failed;
    failed.reason = Some("replace budget 1/1 in 10m exhausted".into());
    failed.windows = [("replace".to_string(), vec![3])].into();
    failed.next_action_at = Some(99);
    failed.backoff_step = 4;
    let key = SlotKey::of(&failed);
    let inc = failed.incarnation;
    assert!(matches!(
        s.set_slot_state(&key, inc, &failed, None, 4).unwrap(),
        Cas::Done(..)
    ));
    let id = failed.deployable_id;
    let evf = |_: &SlotRow| ev("repaired");
    // A slot that is not failed is left alone.
    assert!(s
        .repair_slots(id, Some(("web", 0)), &evf, 5)
        .unwrap()
        .is_empty());
    let done = s.repair_slots(id, Some(("worker", 0)), &evf, 5).unwrap();
    assert_eq!(done.len(), 1);
    let row = &done[0].0;
    assert_eq!(row.state, SlotState::Down);
    assert!(row.windows.is_empty());
    assert_eq!((row.next_action_at, row.backoff_step), (None, 0));
    assert_eq!(s.ensure_slots(id, 6).unwrap()[1].state, SlotState::Down);
    // A retry: nothing left to repair, nothing written.
    assert!(s.repair_slots(id, None, &evf, 7).unwrap().is_empty());
}
