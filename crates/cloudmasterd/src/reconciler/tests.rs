use super::*;
use crate::store::{
    new_operation, Desired, GuestState, ImageId, InstanceId, InstanceSpec, Observed, OperationRow,
    RestartState,
};
use cm_api::words::OperationKind;

fn row() -> InstanceRow {
    InstanceRow {
        id: InstanceId::new_v4(),
        name: "a".into(),
        host_id: HostId::new_v4(),
        host_name: "h1".into(),
        spec: InstanceSpec {
            owner: None,
            health: None,
            image_id: ImageId::new_v4(),
            image_name: "img".into(),
            flavor: None,
            memory_mib: 128,
            vcpus: 1,
            disk_gib: 0,
            ports: vec![],
            restart_policy: RestartPolicy::OnFailure,
            accel: Default::default(),
            stop_timeout_secs: 30,
            dynamic_domain: None,
        },
        desired: Desired {
            power: Power::Running,
            boot_gen: 1,
            reboot_gen: 0,
            stop_timeout_now: None,
            deleted: false,
            deleted_gen: None,
        },
        observed: Observed {
            state: Some(O::Stopped),
            reason: Some(Why::Crashed.into()),
            boot_gen: 1,
            reboot_gen: 0,
            pid: None,
            accel: None,
            since: Some(10_000),
        },
        restart: RestartState {
            running_since: Some(9_000),
            ..Default::default()
        },
        guest: GuestState::default(),
        config: None,
        volumes: Vec::new(),
        root_volume: None,
        created_at: 0,
        updated_at: 0,
    }
}

#[test]
fn on_failure_restarts_a_crash_with_growing_backoff() {
    let mut i = row();
    assert_eq!(
        decide(&i, 20_000),
        Decision::Schedule {
            at: 21_000,
            delay_secs: 1
        }
    );
    i.restart.next_at = Some(21_000);
    assert_eq!(decide(&i, 20_500), Decision::Wait);
    assert_eq!(decide(&i, 21_000), Decision::Restart { backoff_step: 1 });
    i.restart.next_at = None;
    i.restart.backoff_step = 3;
    assert_eq!(
        decide(&i, 20_000),
        Decision::Schedule {
            at: 28_000,
            delay_secs: 8
        }
    );
    i.restart.backoff_step = 30;
    assert_eq!(
        decide(&i, 0),
        Decision::Schedule {
            at: 60_000,
            delay_secs: 60
        }
    );
}

#[test]
fn a_long_run_resets_the_backoff() {
    let mut i = row();
    i.restart.backoff_step = 5;
    i.restart.running_since = Some(0);
    i.observed.since = Some(STABLE_AFTER_MS + 1);
    assert_eq!(
        decide(&i, 100_000),
        Decision::Schedule {
            at: 101_000,
            delay_secs: 1
        }
    );
}

#[test]
fn policies_decide_what_is_restarted() {
    let mut i = row();
    i.spec.restart_policy = RestartPolicy::No;
    assert!(matches!(decide(&i, 0), Decision::GiveUp(_)));
    i.spec.restart_policy = RestartPolicy::OnFailure;
    i.observed.reason = Some(Why::GuestPoweroff.into());
    assert!(matches!(decide(&i, 0), Decision::GiveUp(_)));
    i.spec.restart_policy = RestartPolicy::Always;
    assert!(matches!(decide(&i, 0), Decision::Schedule { .. }));
    i.spec.restart_policy = RestartPolicy::OnFailure;
    i.observed.state = Some(O::Error);
    i.observed.reason = Some("qemu failed".into());
    assert!(matches!(decide(&i, 0), Decision::Schedule { .. }));
}

fn op(kind: OperationKind, want: u64, i: &InstanceRow) -> OperationRow {
    OperationRow {
        op: new_operation(kind, &i.name, i.id, ""),
        want,
    }
}

#[test]
fn create_completes_when_its_boot_runs_and_fails_on_error() {
    let mut i = row();
    i.observed.state = None;
    i.observed.boot_gen = 0;
    let o = op(OperationKind::InstanceCreate, 1, &i);
    assert!(matches!(evaluate(&o, Some(&i), true), Outcome::Running(_)));
    i.observed.boot_gen = 1;
    i.observed.state = Some(O::Running);
    assert_eq!(evaluate(&o, Some(&i), true), ok("running"));
    i.observed.state = Some(O::Error);
    i.observed.reason = Some("image fetch failed".into());
    match evaluate(&o, Some(&i), true) {
        Outcome::Done(OperationStatus::Failed, _, Some(e)) => {
            assert!(e.message.contains("image fetch"))
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn stop_reboot_and_delete_complete_on_their_conditions() {
    let mut i = row();
    i.desired.power = Power::Stopped;
    i.observed.state = Some(O::Stopping);
    let stop = op(OperationKind::InstanceStop, 0, &i);
    assert!(matches!(
        evaluate(&stop, Some(&i), true),
        Outcome::Running(_)
    ));
    i.observed.state = Some(O::Stopped);
    assert_eq!(evaluate(&stop, Some(&i), true), ok("stopped"));

    let mut r = row();
    r.observed.state = Some(O::Running);
    r.desired.reboot_gen = 1;
    let reboot = op(OperationKind::InstanceReboot, 1, &r);
    assert!(matches!(
        evaluate(&reboot, Some(&r), true),
        Outcome::Running(_)
    ));
    r.observed.reboot_gen = 1;
    assert_eq!(evaluate(&reboot, Some(&r), true), ok("rebooted"));

    let del = op(OperationKind::InstanceDelete, 0, &r);
    let mut d = r.clone();
    d.desired.deleted = true;
    match evaluate(&del, Some(&d), false) {
        Outcome::Running(p) => assert!(p.contains("down"), "{p}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(evaluate(&del, None, true), ok("deleted"));
    assert!(matches!(
        evaluate(&stop, None, true),
        Outcome::Done(OperationStatus::Failed, ..)
    ));
}

#[test]
fn operations_give_up_once_their_host_was_down_for_the_deadline() {
    let i = row();
    let stop = op(OperationKind::InstanceStop, 0, &i);
    let created = cm_api::time::timestamp_ms(stop.op.created_at);
    let deadline = Duration::from_secs(60);
    // A host that is up: never.
    assert_eq!(
        gave_up(&stop, &i, None, created + 3_600_000, deadline),
        None
    );
    // Down since before the request: counted from the request.
    assert_eq!(
        gave_up(&stop, &i, Some(created - 5_000), created + 59_000, deadline),
        None
    );
    match gave_up(&stop, &i, Some(created - 5_000), created + 60_000, deadline) {
        Some(Outcome::Done(OperationStatus::Failed, _, Some(e))) => {
            assert_eq!(e.code, ErrorCode::HostUnavailable);
            assert!(e.message.contains("cm host evacuate"), "{}", e.message);
        }
        other => panic!("{other:?}"),
    }
    // Down only later: counted from when it went down.
    assert_eq!(
        gave_up(
            &stop,
            &i,
            Some(created + 30_000),
            created + 80_000,
            deadline
        ),
        None
    );
    let del = op(OperationKind::InstanceDelete, 0, &i);
    match gave_up(&del, &i, Some(created), created + 61_000, deadline) {
        Some(Outcome::Done(_, _, Some(e))) => {
            assert!(e.message.contains("remove"), "{}", e.message)
        }
        other => panic!("{other:?}"),
    }
}
