//! Issue 10, point 7: the real master against simulated hosts
//! (`cloudhostd --simulate N`: the agent's own registration, long-poll and
//! report, no QEMU). What needs hosts but not guests runs here in a second
//! or two: placement, every instance action and its states, the refusals
//! that need a host to exist, and a host that goes silent.

use cm_api::instance::{
    Accel, CreateInstance, Instance, InstanceAccepted, InstanceState, PortForward, StopInstance,
};
use cm_api::operation::OperationStatus;
use cm_api::ErrorCode;
use cm_client::api;
use std::time::{Duration, Instant};
use test_infra::rest::assert_refused;
use test_infra::{wait_until, Cloud, HostOpts, MasterOpts};

/// Generous: the machine may be busy; the simulated steps take milliseconds.
const WAIT: Duration = Duration::from_secs(30);

/// Simulated hosts that prepare in 20 ms, boot in 200 ms, stop in 100 ms.
fn sim(n: u32, memory_mib: u64) -> HostOpts {
    HostOpts {
        memory_mib: Some(memory_mib),
        extra: [
            "--simulate",
            &n.to_string(),
            "--sim-prepare-ms",
            "20",
            "--sim-boot-ms",
            "200",
            "--sim-stop-ms",
            "100",
            "--sim-beat-ms",
            "500",
        ]
        .map(String::from)
        .to_vec(),
        ..Default::default()
    }
}

/// A master, `n` simulated hosts named `sim-1`... ready, and an image.
fn cloud(n: u32, master: MasterOpts) -> Cloud {
    let mut cloud = Cloud::start_with(master).unwrap();
    cloud.spawn_host_as("sim", "sim", sim(n, 4096)).unwrap();
    for i in 1..=n {
        cloud
            .wait_host_state(&format!("sim-{i}"), "ready", WAIT)
            .unwrap();
    }
    // The simulator never boots it: any two files make an image.
    cloud.add_fake_image("img");
    cloud
}

fn instance(cloud: &Cloud, name: &str) -> Option<Instance> {
    cloud.api().call(api::instances::show(name)).ok()
}

fn wait_state(cloud: &Cloud, name: &str, state: InstanceState) -> Instance {
    wait_until(&format!("{name} to be {state}"), WAIT, || {
        instance(cloud, name).filter(|i| i.state == state)
    })
    .unwrap()
}

fn names(cloud: &Cloud) -> Vec<String> {
    let all = cloud.api().call(api::instances::list()).unwrap();
    let mut n: Vec<String> = all.into_iter().map(|i| i.name).collect();
    n.sort();
    n
}

/// `POST /v1/instances` of `name` from image `image`, with `more` set.
fn req(name: &str, image: &str, more: impl FnOnce(&mut CreateInstance)) -> CreateInstance {
    let mut r = CreateInstance {
        name: name.into(),
        image: image.into(),
        flavor: Some("m1.tiny".into()),
        ..Default::default()
    };
    more(&mut r);
    r
}

fn create(cloud: &Cloud, r: &CreateInstance) -> Result<InstanceAccepted, cm_client::Error> {
    cloud.api().call(api::instances::create(r))
}

#[test]
fn instances_are_placed_on_simulated_hosts_and_go_through_every_action() {
    let cloud = cloud(3, MasterOpts::default());
    let began = Instant::now();
    for i in 1..=6 {
        create(&cloud, &req(&format!("w{i}"), "img", |_| {}))
            .unwrap_or_else(|e| panic!("create w{i}: {e}"));
    }
    let mut on = std::collections::BTreeSet::new();
    for i in 1..=6 {
        let v = wait_state(&cloud, &format!("w{i}"), InstanceState::Running);
        on.insert(v.host.clone().unwrap());
        assert_eq!(v.accel, Accel::Auto, "{v:?}");
    }
    assert!(on.iter().all(|h| h.starts_with("sim-")), "{on:?}");
    assert_eq!(names(&cloud), ["w1", "w2", "w3", "w4", "w5", "w6"]);
    // The relayed guest heartbeats reach the master.
    wait_until("w1's guest to beat", WAIT, || {
        instance(&cloud, "w1").filter(|i| i.guest.state == "up")
    })
    .unwrap();

    // (action, state reached, reason then)
    let c = cloud.api();
    let force = StopInstance {
        force: true,
        ..Default::default()
    };
    type Act<'a> = Box<dyn Fn() -> Result<cm_api::operation::Operation, cm_client::Error> + 'a>;
    let table: [(&str, Act, InstanceState, Option<&str>); 5] = [
        (
            "stop",
            Box::new(|| c.call(api::instances::stop("w1", &StopInstance::default()))),
            InstanceState::Stopped,
            Some("stopped"),
        ),
        (
            "start",
            Box::new(|| c.call(api::instances::start("w1"))),
            InstanceState::Running,
            None,
        ),
        (
            "reboot",
            Box::new(|| c.call(api::instances::reboot("w1"))),
            InstanceState::Running,
            None,
        ),
        (
            "stop --force",
            Box::new(|| c.call(api::instances::stop("w1", &force))),
            InstanceState::Stopped,
            Some("stopped (forced off)"),
        ),
        (
            "start",
            Box::new(|| c.call(api::instances::start("w1"))),
            InstanceState::Running,
            None,
        ),
    ];
    for (action, act, state, reason) in table {
        act().unwrap_or_else(|e| panic!("{action}: {e}"));
        let v = wait_state(&cloud, "w1", state);
        assert_eq!(v.reason.as_deref(), reason, "{action}: {v:?}");
    }
    let v = instance(&cloud, "w1").unwrap();
    assert_eq!(v.restart_count, 0, "{v:?}");

    c.call(api::instances::delete_instance("w1"))
        .unwrap_or_else(|e| panic!("delete: {e}"));
    wait_until("w1 to be gone", WAIT, || {
        instance(&cloud, "w1").is_none().then_some(())
    })
    .unwrap();
    assert_eq!(names(&cloud), ["w2", "w3", "w4", "w5", "w6"]);
    eprintln!(
        "six instances placed, acted on and one deleted in {:?}",
        began.elapsed()
    );
}

#[test]
fn refusals_that_need_hosts_change_nothing() {
    let cloud = cloud(2, MasterOpts::default());
    let on_sim2 = |r: &mut CreateInstance, guest: u16| {
        r.host = Some("sim-2".into());
        r.ports = vec![PortForward { guest, host: 18080 }];
    };
    create(&cloud, &req("a", "img", |r| on_sim2(r, 80))).unwrap();
    let a = wait_state(&cloud, "a", InstanceState::Running);
    assert_eq!(a.host.as_deref(), Some("sim-2"));

    // (what, request, status, code, field)
    let table: Vec<(&str, CreateInstance, u16, ErrorCode, Option<&str>)> = vec![
        (
            "more memory than any host has",
            req("b", "img", |r| {
                r.flavor = None;
                r.memory_mib = Some(1 << 20);
            }),
            409,
            ErrorCode::NoCapacity,
            Some("memory_mib"),
        ),
        (
            "no such host",
            req("b", "img", |r| r.host = Some("nope".into())),
            404,
            ErrorCode::NotFound,
            Some("host"),
        ),
        (
            "a name in use",
            req("a", "img", |_| {}),
            409,
            ErrorCode::AlreadyExists,
            Some("name"),
        ),
        (
            "no such image",
            req("b", "nope", |_| {}),
            404,
            ErrorCode::NotFound,
            Some("image"),
        ),
        (
            "no such flavor",
            req("b", "img", |r| r.flavor = Some("m9.huge".into())),
            404,
            ErrorCode::NotFound,
            Some("flavor"),
        ),
        (
            "a host port taken on that host",
            req("b", "img", |r| on_sim2(r, 22)),
            409,
            ErrorCode::NoCapacity,
            Some("ports"),
        ),
        (
            "an invalid name",
            req("B_", "img", |_| {}),
            400,
            ErrorCode::InvalidInput,
            Some("name"),
        ),
    ];
    for (what, body, status, code, field) in table {
        let began = Instant::now();
        assert_refused(what, create(&cloud, &body), status, code, field);
        assert!(began.elapsed() < WAIT, "{what}");
        assert_eq!(names(&cloud), ["a"], "{what} changed the instances");
    }
    // Actions on what does not exist.
    let c = cloud.api();
    let stop = StopInstance::default();
    for (action, got) in [
        ("start", c.call(api::instances::start("nope"))),
        ("stop", c.call(api::instances::stop("nope", &stop))),
        ("reboot", c.call(api::instances::reboot("nope"))),
    ] {
        assert_refused(action, got, 404, ErrorCode::NotFound, None);
    }
    let hosts = c.call(api::hosts::list()).unwrap();
    let count: u32 = hosts.iter().map(|h| h.instance_count).sum();
    assert_eq!(count, 1, "{hosts:?}");
}

#[test]
fn a_silent_host_is_declared_down_and_comes_back_as_itself() {
    let opts = MasterOpts {
        host_down_after_secs: 2,
        extra: vec!["--down-host-op-timeout".into(), "1".into()],
        ..Default::default()
    };
    let mut cloud = cloud(1, opts);
    cloud.spawn_host_as("lone", "lone", sim(1, 4096)).unwrap();
    cloud.wait_host_state("lone-1", "ready", WAIT).unwrap();
    create(&cloud, &req("v", "img", |r| r.host = Some("lone-1".into()))).unwrap();
    wait_state(&cloud, "v", InstanceState::Running);

    // Killed: its hosts go silent; the other simulator keeps reporting.
    let silent = Instant::now();
    cloud.stop_host("lone", libc::SIGKILL);
    cloud.wait_host_state("lone-1", "down", WAIT).unwrap();
    let took = silent.elapsed();
    eprintln!("lone-1 declared down {took:?} after it went silent (limit 2 s)");
    // Silent since its last report, up to one report interval (1 s) before.
    assert!(took >= Duration::from_secs(1), "down after {took:?}");
    assert_eq!(cloud.host_state("sim-1").as_deref(), Some("ready"));
    // An action on its instance waits for it, then fails, and says why.
    let c = cloud.api();
    let op = c
        .call(api::instances::stop("v", &StopInstance::default()))
        .unwrap_or_else(|e| panic!("stop on a down host: {e}"));
    let id = op.id.to_string();
    let done = wait_until("the stop to fail", WAIT, || {
        let o = c.call(api::events::operation(&id)).ok()?;
        (o.status == OperationStatus::Failed).then_some(o)
    })
    .unwrap();
    assert_eq!(
        done.error.as_ref().map(|e| e.code),
        Some(ErrorCode::HostUnavailable),
        "{done:?}"
    );

    // Started again on its data dir: the same host, ready again.
    cloud.restart_host("lone").unwrap();
    cloud.wait_host_state("lone-1", "ready", WAIT).unwrap();
    let hosts = c.call(api::hosts::list()).unwrap();
    let lones = hosts.iter().filter(|h| h.name == "lone-1").count();
    assert_eq!(lones, 1, "{hosts:?}");
}
