//! Issue 11: the address a host's port forwards are reached at, which the
//! master hands out for a deployable's `ipaddress` and its balancer pool
//! members (docs/host.md): `--advertise-addr`, else a `--forward-bind` that
//! is one address, else 127.0.0.1.

use cm_api::host::Host;
use test_infra::{Cloud, HostOpts};

fn forward_addr(cloud: &Cloud, host: &str) -> Option<String> {
    cloud.cm_as::<Host>(&["host", "show", host]).forward_addr
}

#[test]
fn hosts_say_where_their_forwards_are_reached() {
    let mut cloud = Cloud::start().unwrap();
    // The harness binds forwards to 127.0.0.1: that is the address.
    cloud.add_host("bound", HostOpts::default()).unwrap();
    let advertised = HostOpts {
        extra: vec!["--advertise-addr".into(), "127.0.0.9".into()],
        ..Default::default()
    };
    cloud.add_host("told", advertised).unwrap();
    assert_eq!(forward_addr(&cloud, "bound").as_deref(), Some("127.0.0.1"));
    assert_eq!(forward_addr(&cloud, "told").as_deref(), Some("127.0.0.9"));
    let text = cloud.cm_ok(&["host", "show", "told"]);
    assert!(text.contains("127.0.0.9"), "{text}");
}
