//! The simulated VM's states and reasons, step by step on a given clock,
//! against what a real VM actor reports (vm/actor.rs).

use super::host::{Capacity, SimHost};
use super::stats::Stats;
use super::vm::{SimVm, Stepped, Timings};
use crate::runtime::{Facts, Runtime};
use crate::vm::actor::Desired;
use cm_api::agent::{DesiredInstance, DesiredState, ImageRef, ObservedState, Power};
use cm_api::image::ImageKind;
use cm_api::instance::Accel;
use cm_api::words::{KnownStopReason as Why, ResolvedAccel};
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

const T: Timings = Timings {
    prepare: Duration::from_millis(200),
    boot: Duration::from_millis(1000),
    stop: Duration::from_millis(500),
    beat: Duration::from_millis(2000),
};

fn spec(power: Power, boot_gen: u64) -> DesiredInstance {
    DesiredInstance {
        health: None,
        id: Uuid::from_u128(7),
        name: "web-1".into(),
        power,
        boot_gen,
        reboot_gen: 0,
        stop_timeout_secs: 30,
        memory_mib: 512,
        vcpus: 1,
        accel: Accel::Auto,
        image: ImageRef {
            id: Uuid::from_u128(1),
            name: "img".into(),
            kind: ImageKind::Kernel,
            files: vec![],
            cmdline: None,
        },
        ports: vec![],
        disk_gib: 0,
        boot: None,
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Step at `at` and return the state reached.
fn at(vm: &mut SimVm, t0: Instant, after_ms: u64) -> ObservedState {
    vm.step(t0 + ms(after_ms), &T, ResolvedAccel::Kvm);
    vm.state()
}

fn want(vm: &mut SimVm, s: DesiredInstance) {
    vm.desired = Desired::Present(Box::new(s));
}

#[test]
fn a_start_prepares_starts_then_runs_after_the_boot_delay() {
    let t0 = Instant::now();
    let mut vm = SimVm::new(spec(Power::Running, 1));
    assert_eq!(vm.observed(t0, &T).reason, Some(Why::New.into()));
    assert_eq!(at(&mut vm, t0, 0), ObservedState::Preparing);
    assert_eq!(at(&mut vm, t0, 199), ObservedState::Preparing);
    assert_eq!(at(&mut vm, t0, 200), ObservedState::Starting);
    let o = vm.observed(t0 + ms(200), &T);
    assert_eq!(
        (o.boot_gen, o.accel, o.reason),
        (1, Some(ResolvedAccel::Kvm), None)
    );
    assert_eq!(o.guest, None, "no heartbeat before the guest booted");
    assert_eq!(at(&mut vm, t0, 1199), ObservedState::Starting);
    assert_eq!(at(&mut vm, t0, 1200), ObservedState::Running);
    let beat = vm.observed(t0 + ms(1200 + 4500), &T).guest.unwrap();
    assert_eq!((beat.beat.seq, beat.age_ms), (3, 500));
}

#[test]
fn a_stop_is_an_acpi_shutdown_and_a_zero_timeout_forces_it_off() {
    let t0 = Instant::now();
    let mut vm = SimVm::new(spec(Power::Running, 1));
    for t in [0, 200, 1200] {
        at(&mut vm, t0, t);
    }
    want(&mut vm, spec(Power::Stopped, 1));
    assert_eq!(at(&mut vm, t0, 2000), ObservedState::Stopping);
    assert_eq!(at(&mut vm, t0, 2500), ObservedState::Stopped);
    let o = vm.observed(t0 + ms(2500), &T);
    assert_eq!((o.reason, o.guest), (Some(Why::Stopped.into()), None));

    // Started again: boot_gen 2; then stopped with no ACPI timeout.
    want(&mut vm, spec(Power::Running, 2));
    for t in [3000, 3200, 4200] {
        at(&mut vm, t0, t);
    }
    assert_eq!(vm.state(), ObservedState::Running);
    let mut s = spec(Power::Stopped, 2);
    s.stop_timeout_secs = 0;
    want(&mut vm, s);
    assert_eq!(at(&mut vm, t0, 5000), ObservedState::Stopped);
    assert_eq!(vm.observed(t0, &T).reason, Some(Why::Forced.into()));
}

#[test]
fn a_reboot_keeps_it_running_and_counts_the_reboot() {
    let t0 = Instant::now();
    let mut vm = SimVm::new(spec(Power::Running, 1));
    for t in [0, 200, 1200] {
        at(&mut vm, t0, t);
    }
    let mut s = spec(Power::Running, 1);
    s.reboot_gen = 1;
    want(&mut vm, s);
    let r = vm.step(t0 + ms(2000), &T, ResolvedAccel::Kvm);
    assert_eq!(
        r,
        Stepped::Kept {
            changed: true,
            due: None
        }
    );
    let o = vm.observed(t0 + ms(2500), &T);
    assert_eq!((o.state, o.reboot_gen), (ObservedState::Running, 1));
    assert_eq!(o.guest, None, "the guest is booting again");
    assert!(vm.observed(t0 + ms(3000), &T).guest.is_some());
}

#[test]
fn a_crash_is_not_restarted_without_a_new_boot_gen() {
    let t0 = Instant::now();
    let mut vm = SimVm::new(spec(Power::Running, 0));
    assert_eq!(
        at(&mut vm, t0, 0),
        ObservedState::Stopped,
        "boot_gen 0 never starts"
    );
}

#[test]
fn a_host_removes_deleted_vms_and_keeps_orphans_stopped() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        let caps = Capacity {
            memory_mib: 4096,
            vcpus: 4,
            disk_mib: 1000,
            accel: ResolvedAccel::Kvm,
        };
        let host = SimHost::new(T, caps, Arc::new(Stats::new(1)));
        let mut a = spec(Power::Running, 1);
        let mut b = spec(Power::Running, 1);
        a.id = Uuid::from_u128(1);
        b.id = Uuid::from_u128(2);
        let mut d = DesiredState {
            cloud_id: Uuid::nil(),
            generation: 1,
            instances: vec![a.clone(), b.clone()],
            requests: vec![],
            report_interval_secs: 3,
            deleted: vec![],
        };
        host.apply(&d);
        let t0 = Instant::now();
        for t in [0, 200, 1200] {
            host.step_all(t0 + ms(t));
        }
        let (mine, lost) = host.report();
        assert_eq!((mine.len(), lost.len()), (2, 0));
        assert!(mine.iter().all(|o| o.state == ObservedState::Running));
        assert_eq!(host.gather().memory_available_mib, 4096 - 1024 - 2 * 512);

        // a is deleted, b falls out of the desired state: an orphan, stopped.
        d.instances.clear();
        d.deleted = vec![a.id];
        host.apply(&d);
        host.step_all(t0 + ms(2000));
        host.step_all(t0 + ms(2500));
        let (mine, lost) = host.report();
        assert!(mine.is_empty());
        assert_eq!(lost.len(), 1);
        assert_eq!((lost[0].id, lost[0].state), (b.id, ObservedState::Stopped));
        assert!(host.console_tail(b.id, 10).unwrap().truncated);
        host.console_tail(a.id, 10).unwrap_err();
    });
}

#[test]
fn host_names_are_numbered_and_padded() {
    assert_eq!(super::names("sim", 3), ["sim-1", "sim-2", "sim-3"]);
    let n = super::names("h", 100);
    assert_eq!((n[0].as_str(), n[99].as_str()), ("h-001", "h-100"));
}
