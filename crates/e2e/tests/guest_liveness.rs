//! Issue 11, detection (docs/host.md, "Heartbeat watchdog"): an instance
//! with a heartbeat policy of 1 s (timeout 3 s) in a real VM. Its host judges
//! the guest's beats and reports a change at once: a guest whose vCPUs are
//! paused (QMP `stop`) is `silent` within about 3 s and `up` again after
//! `cont`; a QEMU killed with SIGKILL is `stopped (crashed)` on the master
//! within about a second. The figures are printed beside their goals; the
//! bounds asserted are generous (a loaded machine is slow, not wrong).

use cm_api::instance::{Instance, InstanceState};
use cm_api::words::GuestLiveness;
use std::time::{Duration, Instant};
use test_infra::{qmp, wait_until, Cloud, HostOpts};

const BOOT: Duration = Duration::from_secs(180);
/// What no detection may take, however loaded the machine.
const BOUND: Duration = Duration::from_secs(30);

fn show(cloud: &Cloud) -> Instance {
    cloud.instance("live").expect("cm instance show live")
}

/// Poll `cm instance show` until `ok`; how long that took from `since`.
fn time_until(
    cloud: &Cloud,
    what: &str,
    since: Instant,
    ok: impl Fn(&Instance) -> bool,
) -> (Duration, Instance) {
    let i = wait_until(what, BOUND, || Some(show(cloud)).filter(&ok)).unwrap();
    (since.elapsed(), i)
}

#[test]
fn a_frozen_guest_is_silent_and_a_killed_qemu_stopped_within_seconds() {
    let mut cloud = Cloud::start().unwrap();
    cloud.add_host("h1", HostOpts::default()).unwrap();
    cloud.add_test_image().unwrap();
    // The guest beats every second (its config), the host judges it by the
    // same policy (the instance's).
    let cfg = cloud.dir.path().join("live.toml");
    std::fs::write(&cfg, "#cm-guest\n[agent]\nheartbeat_ms = 1000\n").unwrap();
    cloud.cm_ok(&[
        "instance",
        "create",
        "live",
        "--image",
        "cm-test",
        "--flavor",
        "m1.tiny",
        "--restart-policy",
        "no",
        "--config",
        &cfg.to_string_lossy(),
        "--heartbeat-interval",
        "1s",
        "--heartbeat-timeout",
        "3s",
    ]);
    let up = wait_until("the guest to be judged up", BOOT, || {
        Some(show(&cloud)).filter(|i| i.guest.liveness == Some(GuestLiveness::Up))
    })
    .unwrap();
    let policy = up.heartbeat.clone().expect("the instance shows its policy");
    assert_eq!(
        (policy.interval.as_millis(), policy.timeout.as_millis()),
        (1000, 3000)
    );
    let text = cloud.cm_ok(&["instance", "show", "live"]);
    assert!(
        text.contains("every 1s, timeout 3s, host says up"),
        "{text}"
    );

    // Freeze the guest: its vCPUs stop, so do its beats; QEMU lives on.
    let sock = cloud
        .host("h1")
        .instance_dir(&up.id.to_string())
        .join("qmp.sock");
    qmp::call(&sock, "stop").unwrap();
    let frozen = Instant::now();
    let (suspect, _) = time_until(&cloud, "the guest to be suspect", frozen, |i| {
        i.guest.liveness != Some(GuestLiveness::Up)
    });
    let (silent, i) = time_until(&cloud, "the guest to be silent", frozen, |i| {
        i.guest.liveness == Some(GuestLiveness::Silent)
    });
    eprintln!(
        "QMP stop → not up (suspect) on the master: {:.2}s (goal ≤ 1.5s + a report)",
        suspect.as_secs_f64()
    );
    eprintln!(
        "QMP stop → silent on the master: {:.2}s (goal ≤ 3s)",
        silent.as_secs_f64()
    );
    assert!(i.guest.state.starts_with("silent"), "{:?}", i.guest);
    assert_eq!(i.state, InstanceState::Running, "frozen, not stopped");

    // Let it go: the first beat after the silence is reported at once.
    qmp::call(&sock, "cont").unwrap();
    let thawed = Instant::now();
    let (back, i) = time_until(&cloud, "the guest to be up again", thawed, |i| {
        i.guest.liveness == Some(GuestLiveness::Up)
    });
    eprintln!("QMP cont → up on the master: {:.2}s", back.as_secs_f64());
    assert_eq!(i.guest.state, "up");

    // SIGKILL the QEMU: the host's pidfd sees it, the report goes at once.
    let pid = i.pid.expect("a running instance shows its QEMU pid");
    let pid = i32::try_from(pid).unwrap();
    // SAFETY: a plain kill(2) of the QEMU this test's host started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    let killed = Instant::now();
    let (stopped, i) = time_until(&cloud, "the instance to be stopped", killed, |i| {
        i.state == InstanceState::Stopped
    });
    eprintln!(
        "kill -9 QEMU → stopped on the master: {:.2}s (goal ≤ 1s)",
        stopped.as_secs_f64()
    );
    assert_eq!(i.reason.as_deref(), Some("crashed"), "{i:?}");
    assert_eq!(i.guest.liveness, None, "a stopped guest is not judged");
}
