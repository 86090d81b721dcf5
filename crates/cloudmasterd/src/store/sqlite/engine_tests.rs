//! The engine's transactions: compare and swap, and a rebuild after a crash.

use super::super::tests::{facts, first_host, image, new_instance};
use super::*;
use cm_api::agent::ObservedState;
use cm_api::event::EventDetail;
use cm_api::words::EventKind;

fn ev(what: &str) -> NewEvent {
    NewEvent {
        kind: EventKind::DeployableAction,
        target: "app".into(),
        message: what.into(),
        detail: EventDetail {
            deployable: Some("app".into()),
            object: Some("web-0".into()),
            ..Default::default()
        },
    }
}

fn op(name: &str) -> Operation {
    new_operation(
        cm_api::words::OperationKind::InstanceCreate,
        name,
        uuid::Uuid::new_v4(),
        "placed",
    )
}

fn owned(img: &cm_api::image::Image, id: DeployableId, name: &str) -> NewInstance {
    let mut n = new_instance(name, img, 64);
    n.owner = Some(Owner {
        deployable: id,
        slot: "web-0".into(),
    });
    n
}

struct World {
    id: DeployableId,
    img: cm_api::image::Image,
}

fn world(s: &SqliteStore) -> World {
    s.register_host("h1", "tok1", &facts(4096), 0).unwrap();
    let img = image(s);
    let id = s.insert_test_deployable(
        serde_json::json!({"name": "app", "assemblies": [{"name": "web", "image": "tiny", "count": 2}]}),
    );
    World { id, img }
}

fn key(id: DeployableId) -> SlotKey {
    SlotKey {
        deployable: id,
        assembly: "web".into(),
        idx: 0,
    }
}

fn create(s: &SqliteStore, w: &World, expect: u64, name: &str) -> Cas<InstanceRow> {
    let slot = s.ensure_slots(w.id, 1).unwrap().remove(0);
    let new = owned(&w.img, w.id, name);
    let o = op(name);
    s.create_slot_instance(
        &key(w.id),
        expect,
        SlotCreate {
            new: &new,
            config: None,
            place: &first_host,
            op: &o,
        },
        &slot,
        &ev("created"),
        1,
    )
    .unwrap()
}

#[test]
fn slots_follow_the_spec() {
    let s = SqliteStore::in_memory().unwrap();
    let w = world(&s);
    let slots = s.ensure_slots(w.id, 5).unwrap();
    let names: Vec<String> = slots.iter().map(SlotRow::name).collect();
    assert_eq!(names, ["web-0", "web-1"]);
    assert!(slots.iter().all(|s| s.state == SlotState::Creating));
    // Again: nothing new.
    assert_eq!(s.ensure_slots(w.id, 6).unwrap(), slots);
}

#[test]
fn a_second_create_or_replace_with_the_same_incarnation_is_stale() {
    let s = SqliteStore::in_memory().unwrap();
    let w = world(&s);
    let first = create(&s, &w, 0, "app-web-0-1");
    let Cas::Done(row, evs) = first else {
        panic!("first create is stale")
    };
    assert_eq!(row.spec.owner.as_ref().unwrap().deployable, w.id);
    assert_eq!(evs[0].detail.object.as_deref(), Some("web-0"));
    // The same decision again (a restarted DPE): nothing written.
    assert!(create(&s, &w, 0, "app-web-0-1b").is_stale());
    let snap = s.deploy_snapshot(w.id, 2).unwrap();
    assert_eq!(snap.instances.len(), 1);
    assert_eq!(snap.slots[0].incarnation, 1);
    assert_eq!(snap.slots[0].instance_id, Some(row.id));

    let replace = |name: &str| {
        let new = owned(&w.img, w.id, name);
        let o = op(name);
        s.replace_slot(
            &key(w.id),
            1,
            SlotCreate {
                new: &new,
                config: None,
                place: &first_host,
                op: &o,
            },
            OldFate::Delete,
            &snap.slots[0],
            &ev("replaced"),
            3,
        )
        .unwrap()
    };
    let Cas::Done(r, _) = replace("app-web-0-2") else {
        panic!("replace is stale")
    };
    assert!(r.old.unwrap().desired.deleted);
    assert_eq!(s.deploy_snapshot(w.id, 3).unwrap().slots[0].incarnation, 2);
    assert!(replace("app-web-0-2b").is_stale());
    let snap = s.deploy_snapshot(w.id, 4).unwrap();
    let live: Vec<_> = snap
        .instances
        .iter()
        .filter(|i| !i.desired.deleted)
        .collect();
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].name, "app-web-0-2");
}

#[test]
fn a_restart_is_done_once_per_boot() {
    let s = SqliteStore::in_memory().unwrap();
    let w = world(&s);
    let Cas::Done(row, _) = create(&s, &w, 0, "app-web-0-1") else {
        panic!("stale")
    };
    let slot = s.deploy_snapshot(w.id, 2).unwrap().slots.remove(0);
    let restart = || {
        s.restart_slot(
            &key(w.id),
            1,
            row.desired.boot_gen,
            &op("r"),
            &slot,
            &ev("restarted"),
            3,
        )
        .unwrap()
    };
    let Cas::Done(after, _) = restart() else {
        panic!("stale")
    };
    assert_eq!(after.desired.boot_gen, row.desired.boot_gen + 1);
    assert!(restart().is_stale());
    let again = s.get_instance("app-web-0-1").unwrap();
    assert_eq!(again.desired.boot_gen, row.desired.boot_gen + 1);
}

#[test]
fn a_restart_of_a_vm_still_up_is_a_reset() {
    let s = SqliteStore::in_memory().unwrap();
    let w = world(&s);
    let Cas::Done(row, _) = create(&s, &w, 0, "app-web-0-1") else {
        panic!("stale")
    };
    // Its host reports it running (a silent guest, a failing service).
    let host = s.get_host("h1").unwrap();
    let up =
        super::super::tests::observed(row.id.uuid(), ObservedState::Running, row.desired.boot_gen);
    s.record_report(host.id, &facts(4096), 99, &[up], 2)
        .unwrap();
    let slot = s.deploy_snapshot(w.id, 2).unwrap().slots.remove(0);
    let restart = || {
        s.restart_slot(
            &key(w.id),
            1,
            row.desired.boot_gen,
            &op("r"),
            &slot,
            &ev("reset"),
            3,
        )
        .unwrap()
    };
    let Cas::Done(after, _) = restart() else {
        panic!("stale")
    };
    // A start of a running VM would be a no-op on its host: a reset is not.
    assert_eq!(after.desired.reboot_gen, row.desired.reboot_gen + 1);
    assert_eq!(after.desired.boot_gen, row.desired.boot_gen);
    // The same decision again before its host has reset it: one reset.
    assert!(restart().is_stale());
    // Done by the host: a later failure may reset it again.
    let mut done =
        super::super::tests::observed(row.id.uuid(), ObservedState::Running, row.desired.boot_gen);
    done.reboot_gen = after.desired.reboot_gen;
    s.record_report(host.id, &facts(4096), 100, &[done], 4)
        .unwrap();
    let Cas::Done(again, _) = restart() else {
        panic!("stale")
    };
    assert_eq!(again.desired.reboot_gen, row.desired.reboot_gen + 2);
}

#[test]
fn a_crash_between_passes_repeats_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cloud.db");
    let (id, events_before) = {
        let s = SqliteStore::open(&path).unwrap();
        let w = world(&s);
        assert!(matches!(create(&s, &w, 0, "app-web-0-1"), Cas::Done(..)));
        (w.id, s.last_event_seq().unwrap())
        // The store is dropped here: the master died after the action.
    };
    let s = SqliteStore::open(&path).unwrap();
    let img = s.get_image("tiny").unwrap();
    let w = World { id, img };
    // The rebuilt DPE reads incarnation 1 and its instance...
    let snap = s.deploy_snapshot(id, 10).unwrap();
    assert_eq!(snap.slots[0].incarnation, 1);
    assert_eq!(snap.instances.len(), 1);
    // ...and a DPE that still believed incarnation 0 gets Stale.
    assert!(create(&s, &w, 0, "app-web-0-1x").is_stale());
    assert_eq!(s.list_instances().unwrap().len(), 1);
    assert_eq!(s.last_event_seq().unwrap(), events_before);
}

#[test]
fn purge_waits_for_the_instances_and_freeze_is_recorded() {
    let s = SqliteStore::in_memory().unwrap();
    let w = world(&s);
    let Cas::Done(row, _) = create(&s, &w, 0, "app-web-0-1") else {
        panic!("stale")
    };
    let e = s
        .set_deployable_state(
            w.id,
            DeployableState::Frozen,
            Some("2 of 2"),
            &ev("frozen"),
            5,
        )
        .unwrap();
    assert!(e.is_some());
    let snap = s.deploy_snapshot(w.id, 6).unwrap();
    assert_eq!(snap.deployable.frozen_since, Some(5));
    assert!(s
        .set_deployable_state(
            w.id,
            DeployableState::Frozen,
            Some("2 of 2"),
            &ev("frozen"),
            7
        )
        .unwrap()
        .is_none());
    s.tx(|t| {
        t.execute("UPDATE deployables SET deleted = 1 WHERE id = ?1", [w.id])?;
        Ok(())
    })
    .unwrap();
    assert!(s.purge_deployable(w.id, &ev("gone"), 8).unwrap().is_none());
    assert!(s
        .delete_owned(w.id, row.id, &ev("deleted"), 9)
        .unwrap()
        .is_some());
    // The host removes it: a report without it purges the row.
    let host = s.get_host("h1").unwrap();
    s.record_report(host.id, &facts(4096), 99, &[], 10).unwrap();
    assert!(s.purge_deployable(w.id, &ev("gone"), 11).unwrap().is_some());
    assert!(s.engine_deployables().unwrap().is_empty());
}

#[test]
fn the_restart_policy_skips_owned_instances() {
    let s = SqliteStore::in_memory().unwrap();
    let w = world(&s);
    let Cas::Done(mine, _) = create(&s, &w, 0, "app-web-0-1") else {
        panic!("stale")
    };
    let users = new_instance("users", &w.img, 64);
    s.create_instance(&users, None, &first_host, &op("users"), None, 1)
        .unwrap();
    let host = s.get_host("h1").unwrap();
    let crashed = |id: InstanceId| {
        let mut o = super::super::tests::observed(id.uuid(), ObservedState::Stopped, 1);
        o.reason = Some(cm_api::words::StopReason::Known(
            cm_api::words::KnownStopReason::Crashed,
        ));
        o
    };
    let report = [crashed(mine.id), crashed(users.id)];
    s.record_report(host.id, &facts(4096), 99, &report, 2)
        .unwrap();
    let down: Vec<String> = s
        .instances_down()
        .unwrap()
        .into_iter()
        .map(|i| i.name)
        .collect();
    assert_eq!(down, ["users"], "the engine alone restarts its instances");
}
