//! Issue 11, pool membership (docs/fleet.md, "The runtime layer"): the
//! fleet crate's HAProxy runtime layer against a real HAProxy 2.6 on
//! loopback whose backend starts empty. Two servers are added as a
//! deployable's pool members are (add, enable health, ready), traffic
//! reaches both, one is drained, put in maintenance and deleted, and the
//! pool serves on without it.

use cm_fleet::referee::runtime::{CheckOpts, HaproxyRuntime, ServerState};
use cm_fleet::runner::Runner;
use std::net::SocketAddr;
use std::time::Duration;
use test_infra::haproxy::{get, Backend, Haproxy};
use test_infra::wait_until;

const WAIT: Duration = Duration::from_secs(20);

fn up(rt: &HaproxyRuntime, server: &str) -> bool {
    rt.servers("web")
        .unwrap()
        .iter()
        .any(|s| s.name == server && s.up())
}

#[test]
fn servers_are_added_drained_and_removed_at_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let haproxy = Haproxy::start_empty(dir.path(), "web").unwrap();
    let rt = HaproxyRuntime::new(Runner::Local, format!("unix:{}", haproxy.socket.display()));
    assert!(rt.servers("web").unwrap().is_empty(), "an empty backend");
    let backends: Vec<Backend> = ["cm-shop-web-0-1", "cm-shop-web-1-1"]
        .iter()
        .map(|n| Backend::start(n, "127.0.0.1:0").unwrap())
        .collect();
    for b in &backends {
        let addr: SocketAddr = b.addr.parse().unwrap();
        rt.add_server("web", &b.name, addr, &CheckOpts::default())
            .unwrap();
        // Added in maintenance: no traffic before it is made ready.
        let s = rt.servers("web").unwrap();
        let me = s.iter().find(|s| s.name == b.name).unwrap();
        assert!(me.status.contains("MAINT"), "{me:?}");
        rt.enable_health("web", &b.name).unwrap();
        rt.set_state("web", &b.name, ServerState::Ready).unwrap();
    }
    // A name already there is refused, and nothing changes.
    let again: SocketAddr = backends[0].addr.parse().unwrap();
    rt.add_server("web", &backends[0].name, again, &CheckOpts::default())
        .unwrap_err();
    for b in &backends {
        wait_until(&format!("{} up", b.name), WAIT, || {
            up(&rt, &b.name).then_some(())
        })
        .unwrap();
    }
    let front = format!("127.0.0.1:{}", haproxy.port);
    let mut answers = std::collections::BTreeSet::new();
    for _ in 0..10 {
        answers.insert(get(&front, "/").unwrap().trim().to_string());
    }
    assert_eq!(answers.len(), 2, "both servers serve: {answers:?}");

    // Out: drain (no new requests), wait for its connections, maintenance,
    // delete. A server still ready cannot be deleted.
    let (gone, stays) = (&backends[0].name, &backends[1].name);
    rt.del_server("web", gone).unwrap_err();
    rt.set_state("web", gone, ServerState::Drain).unwrap();
    let before = backends[0].hits().len();
    for _ in 0..10 {
        assert_eq!(get(&front, "/").unwrap().trim(), stays.as_str());
    }
    assert_eq!(
        backends[0].hits().len(),
        before,
        "a draining server got requests"
    );
    wait_until("no connection left", WAIT, || {
        (rt.conns("web", gone).unwrap() == Some(0)).then_some(())
    })
    .unwrap();
    rt.set_state("web", gone, ServerState::Maint).unwrap();
    rt.del_server("web", gone).unwrap();
    let left: Vec<String> = rt
        .servers("web")
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(left, std::slice::from_ref(stays));
    assert_eq!(rt.conns("web", gone).unwrap(), None);
    assert_eq!(get(&front, "/").unwrap().trim(), stays.as_str());
}
