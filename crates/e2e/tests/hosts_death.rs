//! Issue 9, point 15: a dead host can be dealt with. `cm host evacuate`
//! rebuilds its instances elsewhere after saying their disks are lost, and
//! when the host comes back its VMs of evacuated instances are stopped, not
//! run twice; operations on a dead host fail after a deadline; `cm host
//! remove --force` forgets a host with instances, and if its agent comes
//! back its VMs are stopped.

use cm_api::agent::ObservedState;
use cm_api::host::Orphan;
use cm_api::instance::{Instance, InstanceState};
use cm_api::operation::Operation;
use cm_api::words::OperationKind;
use cm_api::ErrorCode;
use std::time::{Duration, Instant};
use test_infra::cloud::is_qemu;
use test_infra::{wait_until, Cloud, HostOpts, MasterOpts};

const BOOT: Duration = Duration::from_secs(120);

fn pid_of(i: &Instance) -> u32 {
    i.pid.expect("a running instance has a pid")
}

/// Every live QEMU on this machine that runs the VM of instance `id`.
fn qemus_of(id: &str) -> Vec<u32> {
    let name = format!("cm-{id}");
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(&name) && is_qemu(pid) {
            out.push(pid);
        }
    }
    out
}

fn host(mem: u64) -> HostOpts {
    HostOpts {
        memory_mib: Some(mem),
        ..Default::default()
    }
}

#[test]
fn evacuating_a_dead_host_rebuilds_elsewhere_and_its_return_stops_the_old_vm() {
    let mut cloud = Cloud::start().unwrap();
    cloud.add_host("a", host(2048)).unwrap();
    cloud.add_host("b", host(2048)).unwrap();
    cloud.add_test_image().unwrap();
    cloud.cm_ok(&[
        "instance", "create", "v1", "--image", "cm-test", "--flavor", "m1.tiny", "--host", "a",
    ]);
    let v1 = cloud
        .wait_instance_state("v1", InstanceState::Running, BOOT)
        .unwrap();
    let id = v1.id.to_string();
    let old_pid = pid_of(&v1);
    cloud.console("v1").unwrap().wait_for_boot(BOOT).unwrap();

    // A host that is up is not evacuated (its VMs would run twice).
    let out = cloud.cm(&["host", "evacuate", "a", "--yes"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("not down"), "{}", out.stderr);

    // The agent freezes; its VM goes on running.
    cloud.signal_host("a", libc::SIGSTOP);
    cloud
        .wait_host_state("a", "down", Duration::from_secs(30))
        .unwrap();
    assert!(is_qemu(old_pid));

    // Without --yes (and no terminal to ask on) it says what is lost and stops.
    let out = cloud.cm(&["host", "evacuate", "a"]);
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("LOST") && out.stderr.contains("v1"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("--yes"), "{}", out.stderr);
    assert_eq!(cloud.instance("v1").unwrap().host.as_deref(), Some("a"));

    let out = cloud.cm(&["host", "evacuate", "a", "--yes"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("v1 rebuilt on b"), "{}", out.stdout);
    let moved = cloud
        .wait_instance_state("v1", InstanceState::Running, BOOT)
        .unwrap();
    assert_eq!(moved.host.as_deref(), Some("b"));
    assert_eq!(moved.id, v1.id, "the same instance");
    let new_pid = pid_of(&moved);
    assert_ne!(new_pid, old_pid);
    assert!(
        cloud
            .events(Some("instance.evacuated"))
            .iter()
            .any(|e| e.target == "v1"),
        "an event says so"
    );

    // The host comes back: its copy is stopped, only the new one runs.
    cloud.signal_host("a", libc::SIGCONT);
    wait_until("the old VM to stop", BOOT, || {
        (!is_qemu(old_pid)).then_some(())
    })
    .unwrap();
    cloud
        .wait_host_state("a", "ready", Duration::from_secs(30))
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(qemus_of(&id), vec![new_pid], "exactly one VM runs v1");
    let now = cloud.instance("v1").unwrap();
    assert_eq!(
        (now.host.as_deref(), now.state),
        (Some("b"), InstanceState::Running)
    );
    let orphans: Vec<Orphan> = cloud.cm_as(&["host", "orphans", "a"]);
    let o = orphans
        .iter()
        .find(|o| o.id == v1.id)
        .unwrap_or_else(|| panic!("the old VM is an orphan of a: {orphans:?}"));
    assert_eq!(o.state, ObservedState::Stopped);
    assert_eq!(o.now_on_host.as_deref(), Some("b"));
    assert!(
        cloud
            .host("a")
            .instance_dir(&id)
            .join("state.json")
            .exists(),
        "its files are kept"
    );
}

#[test]
fn operations_on_a_dead_host_fail_after_a_deadline_and_a_removed_host_stops_its_vms() {
    let mut cloud = Cloud::start_with(MasterOpts {
        extra: vec!["--down-host-op-timeout".into(), "5".into()],
        ..Default::default()
    })
    .unwrap();
    cloud.add_host("a", HostOpts::default()).unwrap();
    cloud.add_test_image().unwrap();
    cloud.cm_ok(&[
        "instance", "create", "v1", "--image", "cm-test", "--flavor", "m1.tiny",
    ]);
    let v1 = cloud
        .wait_instance_state("v1", InstanceState::Running, BOOT)
        .unwrap();
    let pid = pid_of(&v1);
    cloud.console("v1").unwrap().wait_for_boot(BOOT).unwrap();

    // The agent dies; its VM runs on, unreachable.
    cloud.stop_host("a", libc::SIGKILL);
    cloud
        .wait_host_state("a", "down", Duration::from_secs(30))
        .unwrap();
    let start = Instant::now();
    let out = cloud.cm(&["instance", "stop", "v1", "--wait-timeout", "120"]);
    let took = start.elapsed();
    assert_eq!(out.code, 6, "the operation failed: {}", out.stderr);
    assert!(
        out.stderr.contains("host a is down") && out.stderr.contains("gave up"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("cm host evacuate a"), "{}", out.stderr);
    assert!(took < Duration::from_secs(60), "ended after {took:?}");
    let ops: Vec<Operation> = cloud.cm_as(&["operation", "list"]);
    let stop = ops
        .iter()
        .find(|o| o.kind == OperationKind::InstanceStop)
        .unwrap();
    assert_eq!(
        stop.error.as_ref().map(|e| e.code),
        Some(ErrorCode::HostUnavailable),
        "{stop:?}"
    );

    // Forgotten with --force only.
    let out = cloud.cm(&["host", "remove", "a"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(cloud.instance("v1").is_some());
    let out = cloud.cm_ok(&["host", "remove", "a", "--force"]);
    assert!(out.contains("v1"), "{out}");
    assert!(cloud.instance("v1").is_none());
    assert_eq!(cloud.host_state("a"), None);
    assert!(is_qemu(pid), "the VM still runs on the dead host");

    // The removed host comes back: refused, it stops its VM and keeps it.
    cloud.restart_host("a").unwrap();
    wait_until("the returning host to stop its VM", BOOT, || {
        (!is_qemu(pid)).then_some(())
    })
    .unwrap();
    let id = v1.id.to_string();
    assert!(cloud
        .host("a")
        .instance_dir(&id)
        .join("state.json")
        .exists());
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(cloud.host_state("a"), None, "it did not join again");
    assert!(cloud.qemu_pids().is_empty());
}
