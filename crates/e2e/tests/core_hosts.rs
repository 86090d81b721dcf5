//! Issue 2, point 2: hosts register, report their capacity and VMs, go
//! `down` when silent, and `cm host disable` keeps new instances off.

use cm_api::host::{Host, HostState};
use cm_api::instance::InstanceState;
use std::time::{Duration, Instant};
use test_infra::{Cloud, HostOpts};

#[test]
fn hosts_report_capacity_go_down_when_silent_and_can_be_disabled() {
    let mut cloud = Cloud::start().unwrap();
    cloud
        .add_host(
            "big",
            HostOpts {
                memory_mib: Some(4096),
                ..Default::default()
            },
        )
        .unwrap();
    cloud
        .add_host(
            "small",
            HostOpts {
                memory_mib: Some(2048),
                ..Default::default()
            },
        )
        .unwrap();
    cloud.add_test_image().unwrap();

    let hosts: Vec<Host> = cloud.cm_as(&["host", "list"]);
    let big = hosts.into_iter().find(|h| h.name == "big").unwrap();
    assert_eq!(big.state, HostState::Ready);
    assert_eq!(big.memory_total_mib, 4096);
    assert_eq!(
        big.memory_promised_free_mib,
        4096 - 512,
        "total - reserved: {big:?}"
    );
    let real_free = big.memory_real_free_mib;
    assert!(real_free > 0 && real_free <= 4096, "{big:?}");
    assert!(big.vcpus >= 1);
    assert!(big.disk_free_mib > 0);
    assert_eq!(big.instance_count, 0);
    assert!(big.last_seen.is_some());
    let table = cloud.cm_ok(&["host", "list"]);
    for col in [
        "MEM TOTAL",
        "PROMISED FREE",
        "REAL FREE",
        "VCPUS",
        "INSTANCES",
        "STATE",
        "LAST SEEN",
    ] {
        assert!(table.contains(col), "{col} missing:\n{table}");
    }

    // Disabled: new instances go elsewhere even though it has the most room.
    cloud.cm_ok(&["host", "disable", "big"]);
    assert_eq!(cloud.host_state("big").as_deref(), Some("disabled"));
    cloud.cm_ok(&[
        "instance", "create", "v1", "--image", "cm-test", "--flavor", "m1.tiny",
    ]);
    assert_eq!(cloud.instance("v1").unwrap().host.as_deref(), Some("small"));
    let out = cloud.cm(&[
        "instance", "create", "v2", "--image", "cm-test", "--flavor", "m1.tiny", "--host", "big",
    ]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("host big is disabled"),
        "{}",
        out.stderr
    );
    cloud.cm_ok(&["host", "enable", "big"]);
    assert_eq!(cloud.host_state("big").as_deref(), Some("ready"));

    // Promised-free counts what was placed; the report counts the VM.
    let small: Host = cloud.cm_as(&["host", "show", "small"]);
    assert_eq!(small.memory_promised_free_mib, 2048 - 512 - 128);
    assert_eq!(small.instance_count, 1);

    // Silent for longer than host_down_after (5 s in tests): down, with an event.
    let t = Instant::now();
    cloud.stop_host("small", libc::SIGKILL);
    cloud
        .wait_host_state("small", "down", Duration::from_secs(20))
        .unwrap();
    let took = t.elapsed();
    assert!(took >= Duration::from_secs(3), "down too early: {took:?}");
    let v1 = cloud.instance("v1").unwrap();
    assert_eq!(
        v1.state,
        InstanceState::Unknown,
        "an instance on a down host is unknown: {v1:?}"
    );
    test_infra::wait_until(
        "a host.state event saying small is down",
        Duration::from_secs(10),
        || {
            let events = cloud.events(Some("host.state"));
            events
                .iter()
                .any(|e| e.target == "small" && e.message.starts_with("down"))
                .then_some(())
        },
    )
    .unwrap();
    // And ready again when it reports again.
    cloud.restart_host("small").unwrap();
    cloud
        .wait_host_state("small", "ready", Duration::from_secs(30))
        .unwrap();
    cloud
        .wait_instance_state("v1", InstanceState::Running, Duration::from_secs(30))
        .unwrap();
}
