//! What a host's report says of its guests' heartbeats: the liveness the
//! host judged (vm/watch.rs in cloudhostd) and the services' states, kept on
//! the instance, and the deployables to wake when either changes.

use super::tests::{facts, first_host, image, new_instance, observed};
use super::*;
use crate::store::instance::Owner;
use cm_api::agent::{HealthPolicy, ObservedState};
use cm_api::boot::ServiceState;
use cm_api::ids::DeployableId;
use cm_api::words::{GuestLiveness, KnownServiceStatus, OperationKind};

fn policy() -> HealthPolicy {
    HealthPolicy {
        heartbeat_interval_ms: 1000,
        heartbeat_timeout_ms: 3000,
        boot_grace_ms: 120_000,
        services: vec![],
    }
}

/// A store with one host and an instance of deployable `dep` on it.
fn owned(dep: DeployableId) -> (SqliteStore, HostId, InstanceId) {
    let s = SqliteStore::in_memory().unwrap();
    let h = s.register_host("h1", "t", &facts(4096), 0).unwrap();
    let img = image(&s);
    let mut n = new_instance("web-0", &img, 128);
    n.owner = Some(Owner {
        deployable: dep,
        slot: "web-0".into(),
    });
    n.health = Some(policy());
    let op = new_operation(OperationKind::InstanceCreate, "web-0", n.id, "");
    s.create_instance(&n, None, &first_host, &op, None, now_ms())
        .unwrap();
    (s, h, n.id)
}

#[test]
fn the_hosts_liveness_is_kept_and_each_change_is_a_change() {
    let (s, h, id) = owned(DeployableId::new_v4());
    let row = s.get_instance("web-0").unwrap();
    assert_eq!(row.spec.health, Some(policy()));
    let report = |l: Option<GuestLiveness>| {
        let mut o = observed(id.uuid(), ObservedState::Running, 1);
        o.liveness = l;
        s.record_report(h, &facts(4096), 1, &[o], now_ms()).unwrap()
    };
    assert_eq!(report(None).changed.len(), 1, "now running");
    for l in [
        GuestLiveness::Up,
        GuestLiveness::Suspect,
        GuestLiveness::Silent,
        GuestLiveness::Up,
    ] {
        let out = report(Some(l));
        assert_eq!(out.changed.len(), 1, "{l}");
        assert_eq!(out.changed[0].after.guest.liveness, Some(l));
        assert_eq!(s.get_instance("web-0").unwrap().guest.liveness, Some(l));
        // The same word again is no change.
        assert!(report(Some(l)).changed.is_empty(), "{l} again");
    }
    // The host no longer has it: no judgement either.
    s.record_report(h, &facts(4096), 1, &[], now_ms()).unwrap();
    assert_eq!(s.get_instance("web-0").unwrap().guest.liveness, None);
}

#[test]
fn beats_whose_services_change_state_name_their_deployable() {
    let dep = DeployableId::new_v4();
    let (s, h, id) = owned(dep);
    let svc = |state: KnownServiceStatus, detail: &str| {
        vec![ServiceState {
            name: "httpd".into(),
            state: state.into(),
            detail: Some(detail.into()),
        }]
    };
    let beat = |seq: u64, services| {
        s.record_guest_beats(h, &[(id, seq, now_ms(), services)])
            .unwrap()
    };
    assert_eq!(beat(1, svc(KnownServiceStatus::Starting, "")), vec![dep]);
    assert_eq!(beat(2, svc(KnownServiceStatus::Running, "")), vec![dep]);
    // Another beat, or only another detail: nothing to wake for.
    assert!(beat(3, svc(KnownServiceStatus::Running, "")).is_empty());
    assert!(beat(4, svc(KnownServiceStatus::Running, "ok")).is_empty());
    assert_eq!(
        beat(5, svc(KnownServiceStatus::Failed, "exited")),
        vec![dep]
    );
    assert_eq!(s.get_instance("web-0").unwrap().guest.seq, Some(5));
    // A user's own instance wakes nothing.
    let img = s.get_image("tiny").unwrap();
    let n = new_instance("mine", &img, 128);
    let op = new_operation(OperationKind::InstanceCreate, "mine", n.id, "");
    s.create_instance(&n, None, &first_host, &op, None, now_ms())
        .unwrap();
    let woken = s
        .record_guest_beats(
            h,
            &[(n.id, 1, now_ms(), svc(KnownServiceStatus::Running, ""))],
        )
        .unwrap();
    assert!(woken.is_empty());
}
