//! Issue 2, point 6: convergence. VMs outlive a killed agent and are
//! re-adopted; a killed QEMU is seen as crashed and restarted per policy with
//! back-off; a master restart loses and duplicates nothing; a delete made
//! while a host is down is carried out when it returns.

use cm_api::instance::{Instance, InstanceState, RestartPolicy};
use cm_api::operation::{Operation, OperationStatus};
use cm_api::words::EventKind;
use std::time::{Duration, Instant};
use test_infra::cloud::is_qemu;
use test_infra::{wait_until, Cloud, HostOpts};

const BOOT: Duration = Duration::from_secs(120);

fn pid_of(cloud: &Cloud, name: &str) -> u32 {
    cloud
        .instance(name)
        .unwrap()
        .pid
        .expect("a running instance has a pid")
}

fn kill9(pid: u32) {
    // SAFETY: the test kills a QEMU it started (checked by the caller).
    unsafe {
        // A pid is at most PID_MAX_LIMIT (2^22): cast_signed never wraps.
        libc::kill(pid.cast_signed(), libc::SIGKILL);
    }
}

fn state_events(cloud: &Cloud, name: &str) -> Vec<String> {
    cloud
        .events(None)
        .iter()
        .filter(|e| {
            e.target == name
                && (e.kind == EventKind::InstanceState || e.kind == EventKind::InstanceRestart)
        })
        .map(|e| format!("{}: {}", e.kind, e.message))
        .collect()
}

#[test]
fn vms_outlive_a_killed_agent_and_are_readopted() {
    let mut cloud = Cloud::start().unwrap();
    cloud.add_host("h1", HostOpts::default()).unwrap();
    cloud.add_test_image().unwrap();
    cloud.cm_ok(&[
        "instance", "create", "keep", "--image", "cm-test", "--flavor", "m1.tiny",
    ]);
    let pid = pid_of(&cloud, "keep");
    cloud.console("keep").unwrap().wait_for_boot(BOOT).unwrap();

    cloud.stop_host("h1", libc::SIGKILL);
    std::thread::sleep(Duration::from_secs(2));
    assert!(is_qemu(pid), "the VM died with its agent");

    cloud.restart_host("h1").unwrap();
    cloud
        .wait_host_state("h1", "ready", Duration::from_secs(30))
        .unwrap();
    let i = cloud
        .wait_instance_state("keep", InstanceState::Running, Duration::from_secs(30))
        .unwrap();
    assert_eq!(i.pid, Some(pid), "re-adopted, not restarted: {i:?}");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(cloud.qemu_pids(), vec![pid], "no second QEMU");
    assert_eq!(cloud.instance("keep").unwrap().restart_count, 0);
    let log = std::fs::read_to_string(cloud.host("h1").log()).unwrap();
    assert!(log.contains("re-adopted keep"), "{log}");
    // The guest was never interrupted: still the first boot on its console.
    let mut con = cloud.console("keep").unwrap();
    let up = con
        .run("cut -d. -f1 /proc/uptime", Duration::from_secs(30))
        .unwrap();
    assert!(up.trim().parse::<u64>().unwrap() >= 2, "uptime {up}");
}

#[test]
fn a_killed_qemu_is_crashed_and_the_restart_policy_decides() {
    let mut cloud = Cloud::start().unwrap();
    cloud.add_host("h1", HostOpts::default()).unwrap();
    cloud.add_test_image().unwrap();
    cloud.cm_ok(&[
        "instance",
        "create",
        "never",
        "--image",
        "cm-test",
        "--flavor",
        "m1.tiny",
        "--restart-policy",
        "no",
    ]);
    cloud.cm_ok(&[
        "instance", "create", "again", "--image", "cm-test", "--flavor", "m1.tiny",
    ]);
    let (p_never, p_again) = (pid_of(&cloud, "never"), pid_of(&cloud, "again"));

    let t = Instant::now();
    kill9(p_never);
    kill9(p_again);
    // Seen as crashed within two report intervals (1 s each in tests).
    let i = cloud
        .wait_instance_state("never", InstanceState::Stopped, Duration::from_secs(10))
        .unwrap();
    let seen = t.elapsed();
    assert_eq!(i.reason.as_deref(), Some("crashed"), "{i:?}");
    assert!(
        seen <= Duration::from_secs(2) + Duration::from_millis(900),
        "took {seen:?}"
    );
    wait_until(
        "again's crash in the event log",
        Duration::from_secs(10),
        || {
            state_events(&cloud, "again")
                .iter()
                .any(|e| e.contains("stopped (crashed)"))
                .then_some(())
        },
    )
    .unwrap();

    // on-failure (the default): started again after a back-off of 1 s.
    let i = wait_until("again to run a new QEMU", Duration::from_secs(30), || {
        cloud
            .instance("again")
            .filter(|i| i.state == InstanceState::Running && i.pid != Some(p_again))
    })
    .unwrap();
    assert_eq!(i.restart_count, 1);
    let events = state_events(&cloud, "again");
    assert!(
        events
            .iter()
            .any(|e| e.contains("restarting in 1s (on-failure)")),
        "{events:?}"
    );

    // Crash again at once: the back-off doubles.
    kill9(i.pid.unwrap());
    wait_until("the second restart", Duration::from_secs(30), || {
        cloud
            .instance("again")
            .filter(|i| i.state == InstanceState::Running && i.restart_count == 2)
    })
    .unwrap();
    let events = state_events(&cloud, "again");
    assert!(
        events.iter().any(|e| e.contains("restarting in 2s")),
        "{events:?}"
    );

    // policy no: it stays stopped, with its reason.
    std::thread::sleep(Duration::from_secs(3));
    let i = cloud.instance("never").unwrap();
    assert_eq!(
        (i.state, i.reason.as_deref()),
        (InstanceState::Stopped, Some("crashed")),
        "{i:?}"
    );
    assert_eq!(i.restart_count, 0);
    // cm instance start brings it back by hand.
    cloud.cm_ok(&["instance", "start", "never"]);
    assert_eq!(
        cloud.instance("never").unwrap().state,
        InstanceState::Running
    );
}

#[test]
fn a_guest_poweroff_is_restarted_only_by_policy_always() {
    let mut cloud = Cloud::start().unwrap();
    cloud.add_host("h1", HostOpts::default()).unwrap();
    cloud.add_test_image().unwrap();
    cloud.cm_ok(&[
        "instance", "create", "onfail", "--image", "cm-test", "--flavor", "m1.tiny",
    ]);
    cloud.cm_ok(&[
        "instance",
        "create",
        "always",
        "--image",
        "cm-test",
        "--flavor",
        "m1.tiny",
        "--restart-policy",
        "always",
    ]);
    for name in ["onfail", "always"] {
        let mut con = cloud.console(name).unwrap();
        con.wait_for_boot(BOOT).unwrap();
        // `poweroff` returns at once (init does the rest), so the end marker shows.
        con.run("poweroff", Duration::from_secs(60)).unwrap();
    }
    let i = cloud
        .wait_instance_state("onfail", InstanceState::Stopped, Duration::from_secs(60))
        .unwrap();
    assert_eq!(i.reason.as_deref(), Some("guest poweroff"), "{i:?}");
    let i = wait_until("always to run again", Duration::from_secs(60), || {
        cloud
            .instance("always")
            .filter(|i| i.state == InstanceState::Running && i.restart_count == 1)
    })
    .unwrap();
    assert_eq!(i.restart_policy, RestartPolicy::Always);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        cloud.instance("onfail").unwrap().state,
        InstanceState::Stopped,
        "a clean poweroff is not a failure"
    );
}

#[test]
fn a_master_restart_loses_and_duplicates_nothing() {
    let mut cloud = Cloud::start().unwrap();
    cloud.add_host("h1", HostOpts::default()).unwrap();
    cloud.add_test_image().unwrap();
    for n in ["m1", "m2"] {
        cloud.cm_ok(&[
            "instance", "create", n, "--image", "cm-test", "--flavor", "m1.tiny",
        ]);
    }
    let before: Vec<Instance> = ["m1", "m2"]
        .iter()
        .map(|n| cloud.instance(n).unwrap())
        .collect();
    let pids = cloud.qemu_pids();

    cloud.stop_master(libc::SIGKILL);
    // While the master is away, a VM dies: the restarted master must see it.
    kill9(before[1].pid.unwrap());
    std::thread::sleep(Duration::from_secs(2));
    cloud.start_master().unwrap();
    cloud
        .wait_host_state("h1", "ready", Duration::from_secs(30))
        .unwrap();

    let m1 = cloud
        .wait_instance_state("m1", InstanceState::Running, Duration::from_secs(30))
        .unwrap();
    assert_eq!((m1.id, m1.pid), (before[0].id, before[0].pid));
    let m2 = wait_until(
        "m2 restarted after its crash",
        Duration::from_secs(30),
        || {
            cloud
                .instance("m2")
                .filter(|i| i.state == InstanceState::Running && i.restart_count == 1)
        },
    )
    .unwrap();
    assert_eq!(m2.id, before[1].id);
    let list: Vec<Instance> = cloud.cm_as(&["instance", "list"]);
    assert_eq!(list.len(), 2, "{list:?}");
    let now = cloud.qemu_pids();
    assert_eq!(now.len(), 2, "two VMs, not more: {now:?} (before {pids:?})");
    // And the restarted master still takes new work.
    cloud.cm_ok(&[
        "instance", "create", "m3", "--image", "cm-test", "--flavor", "m1.tiny",
    ]);
    assert_eq!(cloud.qemu_pids().len(), 3);
}

#[test]
fn a_delete_made_while_the_host_is_down_is_done_when_it_returns() {
    let mut cloud = Cloud::start().unwrap();
    cloud.add_host("h1", HostOpts::default()).unwrap();
    cloud.add_test_image().unwrap();
    cloud.cm_ok(&[
        "instance", "create", "gone", "--image", "cm-test", "--flavor", "m1.tiny",
    ]);
    let i = cloud.instance("gone").unwrap();
    let dir = cloud.host("h1").instance_dir(&i.id.to_string());
    let pid = pid_of(&cloud, "gone");

    cloud.stop_host("h1", libc::SIGKILL);
    cloud
        .wait_host_state("h1", "down", Duration::from_secs(20))
        .unwrap();
    let op: Operation = cloud.cm_as(&["instance", "delete", "gone", "--no-wait"]);
    assert_eq!(op.status, OperationStatus::Running);
    assert_eq!(
        cloud.instance("gone").unwrap().state,
        InstanceState::Deleting
    );
    // Unreachable is not dead: nothing touched the VM.
    std::thread::sleep(Duration::from_secs(2));
    assert!(is_qemu(pid) && dir.exists());

    cloud.restart_host("h1").unwrap();
    let done: Operation = cloud.cm_as(&["operation", "wait", &op.id.to_string()]);
    assert_eq!(done.status, OperationStatus::Succeeded, "{done:?}");
    assert!(cloud.instance("gone").is_none());
    wait_until("QEMU to be gone", Duration::from_secs(10), || {
        (!is_qemu(pid)).then_some(())
    })
    .unwrap();
    assert!(!dir.exists(), "{} is left behind", dir.display());
}
