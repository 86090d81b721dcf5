//! Issue 11, the simulator's faults (`cloudhostd --simulate --sim-control`)
//! seen through the real master and `cm`, as the policy engine's tests use
//! them: a frozen guest goes silent and comes back, a service the guest
//! says failed is shown failed, a crash is a stopped (crashed) instance, a
//! muted host goes down and comes back.

use cm_api::instance::{Instance, InstanceState};
use cm_api::words::{GuestLiveness, KnownServiceStatus};
use std::time::{Duration, Instant};
use test_infra::sim::{self, SimControl};
use test_infra::{wait_until, Cloud, MasterOpts};

/// Generous: the machine may be busy; the simulated steps take milliseconds.
const WAIT: Duration = Duration::from_secs(30);

fn until(cloud: &Cloud, what: &str, ok: impl Fn(&Instance) -> bool) -> Instance {
    wait_until(what, WAIT, || cloud.instance("web-1").filter(&ok)).unwrap()
}

#[test]
fn faults_injected_into_a_simulated_host_reach_the_master() {
    let mut cloud = Cloud::start_with(MasterOpts::default()).unwrap();
    let control = SimControl::new(cloud.dir.path().join("sim.sock"));
    cloud
        .spawn_host_as("sim", "sim", sim::opts(1, 4096, &control.path))
        .unwrap();
    cloud.wait_host_state("sim-1", "ready", WAIT).unwrap();
    // The simulator never boots it: any two files make an image.
    cloud.add_fake_image("img");
    cloud.cm_ok(&[
        "instance",
        "create",
        "web-1",
        "--image",
        "img",
        "--flavor",
        "m1.tiny",
        "--restart-policy",
        "no",
        "--heartbeat-interval",
        "1s",
        "--heartbeat-timeout",
        "3s",
    ]);
    until(&cloud, "web-1 to be up", |i| {
        i.guest.liveness == Some(GuestLiveness::Up)
    });

    control.send("freeze web-1").unwrap();
    let frozen = Instant::now();
    let i = until(&cloud, "web-1 to be silent", |i| {
        i.guest.liveness == Some(GuestLiveness::Silent)
    });
    eprintln!("freeze → silent: {:.2}s", frozen.elapsed().as_secs_f64());
    assert!(i.guest.state.starts_with("silent"), "{:?}", i.guest);
    control.send("thaw web-1").unwrap();
    until(&cloud, "web-1 to be up again", |i| {
        i.guest.liveness == Some(GuestLiveness::Up)
    });

    control.send("service web-1 httpd failed").unwrap();
    until(&cloud, "httpd failed in a heartbeat", |i| {
        i.guest
            .services
            .iter()
            .any(|s| s.name == "httpd" && s.state == KnownServiceStatus::Failed)
    });

    control.send("mute sim-1").unwrap();
    cloud.wait_host_state("sim-1", "down", WAIT).unwrap();
    control.send("unmute sim-1").unwrap();
    cloud.wait_host_state("sim-1", "ready", WAIT).unwrap();

    control.send("crash web-1").unwrap();
    let i = until(&cloud, "web-1 to be stopped", |i| {
        i.state == InstanceState::Stopped
    });
    assert_eq!(i.reason.as_deref(), Some("crashed"));
    let e = control.send("crash web-1").unwrap_err();
    assert!(e.to_string().contains("nothing to do"), "{e}");
    let e = control.send("crash nobody").unwrap_err();
    assert!(e.to_string().contains("no simulated VM"), "{e}");
}
