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

pub(super) const T: Timings = Timings {
    prepare: Duration::from_millis(200),
    boot: Duration::from_millis(1000),
    stop: Duration::from_millis(500),
    beat: Duration::from_millis(2000),
};

pub(super) fn spec(power: Power, boot_gen: u64) -> DesiredInstance {
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
        volumes: vec![],
        force_detach: vec![],
        root_snapshots: Vec::new(),
        root_deleted_snapshots: Vec::new(),
        root_revert: None,
        root_volume: None,
    }
}

pub(super) fn ms(n: u64) -> Duration {
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
            forward_addr: "127.0.0.1".into(),
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
            volumes: vec![],
            deleted_volumes: vec![],
            exports: Vec::new(),
            chains: Vec::new(),
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

fn with_health(mut s: DesiredInstance) -> DesiredInstance {
    s.health = Some(cm_api::agent::HealthPolicy {
        heartbeat_interval_ms: 1000,
        heartbeat_timeout_ms: 3000,
        boot_grace_ms: 5000,
        services: vec!["httpd".into()],
    });
    s
}

/// Whether a step at `after_ms` changed what a report says.
fn news(vm: &mut SimVm, t0: Instant, after_ms: u64) -> bool {
    matches!(
        vm.step(t0 + ms(after_ms), &T, ResolvedAccel::Kvm),
        Stepped::Kept { changed: true, .. }
    )
}

#[test]
fn a_policy_sets_the_beat_its_services_run_and_a_frozen_guest_goes_silent() {
    use cm_api::words::{GuestLiveness as L, KnownServiceStatus};
    let t0 = Instant::now();
    let mut vm = SimVm::new(with_health(spec(Power::Running, 1)));
    for t in [0, 200, 1200] {
        at(&mut vm, t0, t);
    }
    // Beats every second (the policy's, not the host's 2 s).
    let o = vm.observed(t0 + ms(1200 + 3500), &T);
    let beat = o.guest.unwrap();
    assert_eq!((beat.beat.seq, beat.age_ms), (4, 500));
    assert_eq!(beat.beat.services[0].name, "httpd");
    assert_eq!(beat.beat.services[0].state, KnownServiceStatus::Running);
    assert_eq!(o.liveness, Some(L::Up));
    // Looked at every tick while it runs under a policy.
    match vm.step(t0 + ms(5000), &T, ResolvedAccel::Kvm) {
        Stepped::Kept { due: Some(d), .. } => assert!(d <= t0 + ms(5100)),
        other => panic!("{other:?}"),
    }
    // Frozen at 5.3 s: the last beat was at 5.2 s; suspect past 6.7 s,
    // silent past 8.2 s, each change news.
    assert!(vm.freeze(t0 + ms(5300), &T, true));
    assert!(!news(&mut vm, t0, 6700));
    assert!(news(&mut vm, t0, 6800));
    assert_eq!(vm.observed(t0 + ms(6800), &T).liveness, Some(L::Suspect));
    assert!(!news(&mut vm, t0, 8200));
    assert!(news(&mut vm, t0, 8300));
    assert_eq!(vm.observed(t0 + ms(8300), &T).liveness, Some(L::Silent));
    // Thawed: beating again at once, the sequence going on.
    assert!(vm.freeze(t0 + ms(9000), &T, false));
    assert!(news(&mut vm, t0, 9000));
    let o = vm.observed(t0 + ms(9000), &T);
    assert_eq!(o.liveness, Some(L::Up));
    assert_eq!(o.guest.unwrap().beat.seq, 6);
    // A service the test says failed is reported so.
    vm.set_service("httpd", KnownServiceStatus::Failed.into());
    let beat = vm.observed(t0 + ms(9100), &T).guest.unwrap();
    assert_eq!(beat.beat.services[0].state, KnownServiceStatus::Failed);
    // A crash: stopped (crashed), no beats, not judged.
    assert!(vm.crash());
    let o = vm.observed(t0 + ms(9200), &T);
    assert_eq!(
        (o.state, o.reason),
        (ObservedState::Stopped, Some(Why::Crashed.into()))
    );
    assert_eq!((o.liveness, o.guest), (None, None));
}

#[test]
fn a_guest_that_never_beats_is_silent_after_the_boot_grace() {
    let t0 = Instant::now();
    let mut vm = SimVm::new(with_health(spec(Power::Running, 1)));
    for t in [0, 200] {
        at(&mut vm, t0, t);
    }
    // Frozen while it boots: its agent never beats.
    vm.freeze(t0 + ms(300), &T, true);
    at(&mut vm, t0, 1200);
    assert_eq!(vm.observed(t0 + ms(6000), &T).liveness, None, "booting");
    assert_eq!(
        vm.observed(t0 + ms(6300), &T).liveness,
        Some(cm_api::words::GuestLiveness::Silent)
    );
}

#[test]
fn control_lines_are_parsed_or_refused() {
    use super::control::{parse, Command};
    assert_eq!(parse("crash web-1"), Ok(Command::Crash("web-1".into())));
    assert_eq!(parse("  mute  h-1 "), Ok(Command::Mute("h-1".into())));
    assert_eq!(
        parse("service web-1 httpd failed"),
        Ok(Command::Service {
            vm: "web-1".into(),
            name: "httpd".into(),
            state: cm_api::words::KnownServiceStatus::Failed.into()
        })
    );
    for bad in ["", "crash", "crash a b", "service a b", "reboot a", "thaw"] {
        assert!(parse(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn control_commands_act_on_the_named_host_and_vm() {
    use super::control::{execute, listen, serve, Command};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let caps = Capacity {
            memory_mib: 4096,
            vcpus: 4,
            disk_mib: 1000,
            accel: ResolvedAccel::Kvm,
            forward_addr: "127.0.0.1".into(),
        };
        let host = SimHost::new(T, caps, Arc::new(Stats::new(1)));
        let d = DesiredState {
            cloud_id: Uuid::nil(),
            generation: 1,
            instances: vec![with_health(spec(Power::Running, 1))],
            requests: vec![],
            report_interval_secs: 3,
            deleted: vec![],
            volumes: vec![],
            deleted_volumes: vec![],
            exports: Vec::new(),
            chains: Vec::new(),
        };
        host.apply(&d);
        let t0 = Instant::now();
        for t in [0, 200, 1200] {
            host.step_all(t0 + ms(t));
        }
        let hosts = Arc::new(vec![("sim-1".to_string(), host.clone())]);
        let run = |c: Command| execute(&hosts, &c);
        run(Command::Mute("sim-1".into())).unwrap();
        assert!(host.muted());
        run(Command::Unmute("sim-1".into())).unwrap();
        assert!(!host.muted());
        run(Command::Mute("sim-9".into())).unwrap_err();
        run(Command::Crash("nope".into())).unwrap_err();
        // Through the socket, as a test drives it.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        tokio::spawn(serve(listen(&path).unwrap(), hosts.clone()));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let s = tokio::net::UnixStream::connect(&path).await.unwrap();
        let (r, mut w) = s.into_split();
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
        let mut lines = tokio::io::BufReader::new(r).lines();
        let mut say = async |line: &str| {
            w.write_all(format!("{line}\n").as_bytes()).await.unwrap();
            lines.next_line().await.unwrap().unwrap()
        };
        assert_eq!(say("crash web-1").await, "ok");
        assert_eq!(host.report().0[0].reason, Some(Why::Crashed.into()));
        assert!(say("crash web-1")
            .await
            .starts_with("error: web-1: nothing to do"));
        assert!(say("explode web-1")
            .await
            .starts_with("error: unknown command"));
        assert_eq!(say("vanish web-1").await, "ok");
        assert!(host.report().0.is_empty());
        assert_eq!(say("freeze web-1").await, "error: no simulated VM web-1");
    });
}

#[test]
fn a_simulated_host_makes_attaches_and_releases_volumes_and_a_hung_guest_keeps_one() {
    use super::control::{execute, Command};
    use cm_api::agent::{AttachmentState, DesiredAttachment, DesiredVolume};
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
            forward_addr: "127.0.0.1".into(),
        };
        let host = SimHost::new(T, caps, Arc::new(Stats::new(1)));
        let vol = Uuid::from_u128(7);
        let mut vm = spec(Power::Running, 1);
        vm.volumes = vec![DesiredAttachment {
            volume: vol,
            name: "data".into(),
        }];
        let mut d = DesiredState {
            cloud_id: Uuid::nil(),
            generation: 1,
            instances: vec![vm.clone()],
            requests: vec![],
            report_interval_secs: 3,
            deleted: vec![],
            volumes: vec![DesiredVolume {
                id: vol,
                name: "data".into(),
                size_bytes: 8 << 20,
                snapshots: Vec::new(),
                deleted_snapshots: Vec::new(),
                revert: None,
                clone_from: None,
                image: None,
                import: None,
            }],
            deleted_volumes: vec![],
            exports: Vec::new(),
            chains: Vec::new(),
        };
        host.apply(&d);
        let t0 = Instant::now();
        for t in [0, 200, 1200] {
            host.step_all(t0 + ms(t));
        }
        let files = host.volume_files();
        assert_eq!((files.len(), files[0].size_bytes), (1, 8 << 20));
        let held = &host.report().0[0].volumes;
        assert_eq!(
            (held[0].volume, held[0].state),
            (vol, AttachmentState::Attached)
        );
        // A guest that hangs: the detach times out, the disk stays.
        let hosts = vec![("sim-1".to_string(), host.clone())];
        execute(&hosts, &Command::Hang("data".into())).unwrap();
        d.instances[0].volumes.clear();
        host.apply(&d);
        host.step_all(t0 + ms(1300));
        assert_eq!(
            host.report().0[0].volumes[0].state,
            AttachmentState::Detaching
        );
        host.step_all(t0 + ms(1300 + 600));
        assert!(host.report().0[0].volumes[0].error.is_some());
        // Deleting the file while a VM holds it is refused (an error).
        d.volumes.clear();
        d.deleted_volumes = vec![vol];
        host.apply(&d);
        assert!(host.volume_files()[0].error.is_some());
        // Forced: the VM restarts without it, and the file goes.
        d.instances[0].force_detach = vec![vol];
        host.apply(&d);
        host.step_all(t0 + ms(2000));
        assert!(host.report().0[0].volumes.is_empty());
        assert_eq!(host.report().0[0].state, ObservedState::Starting);
        host.apply(&d);
        assert!(host.volume_files().is_empty());
        execute(&hosts, &Command::Unhang("data".into())).unwrap_err();
    });
}
