//! Issue 4, points 6, 7 and 8: `cm status`, `cm stop` and `cm play` with a
//! real HAProxy in front of three real HTTP backends on the nodes' addresses,
//! the nodes being real sshd servers.

use serde_json::Value;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use test_infra::haproxy::{get, Backend, Haproxy};
use test_infra::sshd::{cm_as, Run, SshFleet};

struct Cloud {
    fleet: SshFleet,
    haproxy: Haproxy,
    backends: Vec<Backend>,
    ini: String,
}

/// Nodes A, B, C: sshd, and a web backend on each node's address; HAProxy
/// (backend `web`) on this machine. `referee_ip` is `local` or a node's
/// address (then cm reaches the runtime socket over SSH).
fn cloud(referee_ip: Option<&str>) -> Cloud {
    let fleet = SshFleet::start(&["A", "B", "C"]).expect("sshd fleet");
    let backends: Vec<Backend> = fleet
        .nodes
        .iter()
        .map(|n| Backend::start(&n.name, &format!("{}:0", n.addr)).expect("backend"))
        .collect();
    let ports: Vec<u16> = backends
        .iter()
        .map(|b| {
            b.addr
                .rsplit_once(':')
                .and_then(|(_, p)| p.parse().ok())
                .expect("a port")
        })
        .collect();
    let servers: Vec<(String, String)> = backends
        .iter()
        .map(|b| (b.name.clone(), b.addr.clone()))
        .collect();
    let haproxy = Haproxy::start(fleet.dir.path(), "web", &servers).expect("haproxy");
    for b in &backends {
        test_infra::wait::wait_until("server up", Duration::from_secs(20), || {
            haproxy
                .status("web", &b.name)
                .ok()
                .filter(|s| s.starts_with("UP"))
        })
        .expect("servers up");
    }
    let referee_ip = referee_ip.unwrap_or("local").to_string();
    let extra = format!(
        "user=root\nidentity={key}\noptions=UserKnownHostsFile={kh},GlobalKnownHostsFile=/dev/null\n\n\
         [referee]\nkind=haproxy\nip={referee_ip}\nsocket={sock}\nbackend=web\nstate_file={state}\n",
        key = fleet.key.display(),
        kh = fleet.known_hosts.display(),
        sock = haproxy.socket.display(),
        state = haproxy.state_file.display(),
    );
    let names: Vec<String> = fleet.nodes.iter().map(|n| n.name.clone()).collect();
    let ini = fleet.dir.path().join("cloudManager.ini");
    std::fs::write(
        &ini,
        fleet.ini(
            |n| ports[names.iter().position(|x| *x == n.name).unwrap()],
            &extra,
        ),
    )
    .unwrap();
    Cloud {
        fleet,
        haproxy,
        backends,
        ini: ini.display().to_string(),
    }
}

impl Cloud {
    fn cm(&self, program: &str, args: &[&str]) -> Run {
        cm_as(program, args, &[("CM_INVENTORY", &self.ini)], None)
    }

    fn state(&self, server: &str) -> String {
        self.haproxy.status("web", server).unwrap()
    }

    fn backend(&self, name: &str) -> &Backend {
        self.backends.iter().find(|b| b.name == name).unwrap()
    }
}

#[test]
fn status_shows_ssh_and_balancer_state_locally_and_over_ssh() {
    let c = cloud(None);
    let r = c.cm("cm", &["--json", "status"]);
    assert_eq!(r.code, 0, "{r:?}");
    let rows = r.json_lines();
    assert_eq!(rows.len(), 3);
    for row in &rows {
        assert_eq!(row["reachable"], true, "{row}");
        assert!(row["ssh_ms"].as_u64().is_some(), "{row}");
        assert_eq!(row["balancer"]["state"], "UP", "{row}");
        assert_eq!(row["balancer"]["weight"], 1, "{row}");
        assert_eq!(row["balancer"]["conns"], 0, "{row}");
    }
    // The old name prints the same table.
    let r = c.cm("cmstatus", &[]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout.starts_with("NODE") && r.stdout.lines().count() == 4,
        "{}",
        r.stdout
    );
    // Stop B, then read it through a referee reached over SSH (node C
    // plays the balancer's machine: the same socket, through `ssh -W`).
    let r = c.cm("cmstop", &["B"]);
    assert_eq!(r.code, 0, "{r:?}");
    let remote = c.fleet.dir.path().join("remote.ini");
    let text = std::fs::read_to_string(&c.ini)
        .unwrap()
        .replace("ip=local", &format!("ip={}", c.fleet.node("C").addr));
    std::fs::write(&remote, text).unwrap();
    let r = cm_as(
        "cm",
        &["status", "A,B", "--inventory", remote.to_str().unwrap()],
        &[],
        None,
    );
    assert_eq!(r.code, 0, "{r:?}");
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert!(lines[0].starts_with("NODE"), "{}", r.stdout);
    assert!(
        lines[1].starts_with("A ") && lines[1].contains(" up ") && lines[1].contains(" UP "),
        "{}",
        r.stdout
    );
    assert!(
        lines[2].starts_with("B ") && lines[2].contains(" MAINT "),
        "{}",
        r.stdout
    );
    // And play it back over SSH too.
    let r = cm_as(
        "cm",
        &["play", "B", "--inventory", remote.to_str().unwrap()],
        &[],
        None,
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert!(c.state("B").starts_with("UP"));
    // An unreachable node shows as such (exit 3); its balancer state still shows.
    let mut c = c;
    c.fleet.node_mut("A").stop();
    let r = c.cm("cm", &["--json", "status", "--no-reuse"]);
    assert_eq!(r.code, 3, "{r:?}");
    let a = r
        .json_lines()
        .into_iter()
        .find(|o| o["node"] == "A")
        .unwrap();
    assert_eq!(
        (a["reachable"].clone(), a["ssh_ms"].clone()),
        (Value::from(false), Value::Null)
    );
    // (UP, or "UP 1/2" when a health check was slow on a loaded machine.)
    assert!(
        a["balancer"]["state"]
            .as_str()
            .is_some_and(|s| s.starts_with("UP")),
        "{a}"
    );
}

#[test]
fn no_request_is_lost_while_a_node_leaves_and_returns() {
    let c = cloud(None);
    let addr = format!("127.0.0.1:{}", c.haproxy.port);
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let errors = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    // Four clients, each bounded in count and time.
    let deadline = Instant::now() + Duration::from_secs(120);
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (stop, ok, failed, errors, addr) = (
                stop.clone(),
                ok.clone(),
                failed.clone(),
                errors.clone(),
                addr.clone(),
            );
            std::thread::spawn(move || {
                for _ in 0..20_000 {
                    if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
                        break;
                    }
                    match get(&addr, "/") {
                        Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            errors.lock().unwrap().push(e.to_string());
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                    std::thread::sleep(Duration::from_millis(2));
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    assert!(!c.backend("B").hits().is_empty(), "B served nothing before");
    // The old names, the old argument order.
    let r = c.cm("cmstop", &["B"]);
    let stopped = Instant::now();
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout.contains("B: draining") && r.stdout.contains("B: stopped"),
        "{}",
        r.stdout
    );
    assert_eq!(c.state("B"), "MAINT");
    std::thread::sleep(Duration::from_secs(2));
    let playing = Instant::now();
    let r = c.cm("cmplay", &["B"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("B: up"), "{}", r.stdout);
    let played = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    for t in clients {
        t.join().unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    println!("requests: {ok} ok, {failed} failed");
    assert_eq!(failed, 0, "{:?}", errors.lock().unwrap());
    assert!(ok > 300, "too few requests to show anything: {ok}");
    let b = c.backend("B").hits();
    let between = b.iter().filter(|t| **t > stopped && **t < playing).count();
    assert_eq!(between, 0, "B got {between} requests while out of the pool");
    assert!(
        b.iter().any(|t| *t > played),
        "B got nothing after coming back"
    );
    for other in ["A", "C"] {
        let h = c.backend(other).hits();
        assert!(h.iter().any(|t| *t > stopped && *t < playing), "{other}");
    }
}

#[test]
fn a_stopped_node_stays_out_across_a_reload() {
    let c = cloud(None);
    let r = c.cm("cm", &["stop", "B"]);
    assert_eq!(r.code, 0, "{r:?}");
    let saved = std::fs::read_to_string(&c.haproxy.state_file).unwrap();
    assert!(saved.contains(" B "), "{saved}");
    c.haproxy.reload().unwrap();
    assert_eq!(c.state("B"), "MAINT");
    // Requests keep avoiding B after the reload.
    let addr = format!("127.0.0.1:{}", c.haproxy.port);
    let before = c.backend("B").hits().len();
    for _ in 0..30 {
        assert!(get(&addr, "/").unwrap() != "B\n");
    }
    assert_eq!(c.backend("B").hits().len(), before);
    let r = c.cm("cm", &["play", "B"]);
    assert_eq!(r.code, 0, "{r:?}");
    c.haproxy.reload().unwrap();
    test_infra::wait::wait_until("B up after reload", Duration::from_secs(20), || {
        c.state("B").starts_with("UP").then_some(())
    })
    .unwrap();
}

#[test]
fn the_pool_is_never_emptied_without_force() {
    let c = cloud(None);
    let r = c.cm("cm", &["stop", "all"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("no server in the pool"), "{}", r.stderr);
    for n in ["A", "B", "C"] {
        assert!(c.state(n).starts_with("UP"), "{n} changed");
    }
    assert_eq!(c.cm("cm", &["stop", "A,B", "--wait", "5"]).code, 0);
    let r = c.cm("cm", &["stop", "C"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(c.state("C").starts_with("UP"));
    let r = c.cm("cm", &["stop", "C", "--force", "--wait", "5"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(c.state("C"), "MAINT");
    // Back, all at once.
    let r = c.cm("cm", &["play", "*"]);
    assert_eq!(r.code, 0, "{r:?}");
    for n in ["A", "B", "C"] {
        assert!(c.state(n).starts_with("UP"), "{n}");
    }
    // Unknown node: nothing changes.
    let r = c.cm("cm", &["stop", "A,Z"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(c.state("A").starts_with("UP"));
}

#[test]
fn play_waits_for_the_node_to_be_up_and_says_when_it_is_not() {
    let mut c = cloud(None);
    let r = c.cm("cm", &["stop", "C", "--wait", "5"]);
    assert_eq!(r.code, 0, "{r:?}");
    // C's web server goes away: play sets it ready, but it never comes up.
    let gone = c.backends.pop().unwrap();
    let addr = gone.addr.clone();
    drop(gone);
    test_infra::wait::wait_until("C's port closed", Duration::from_secs(10), || {
        std::net::TcpStream::connect(&addr).is_err().then_some(())
    })
    .unwrap();
    let t = Instant::now();
    let r = c.cm("cm", &["play", "C", "--wait", "2"]);
    assert_eq!(r.code, 4, "{r:?}");
    assert!(r.stderr.contains("C"), "{}", r.stderr);
    assert!(t.elapsed() < Duration::from_secs(30));
}

/// `cm stop NODE` started now, not waited for.
fn spawn_stop(inventory: &str, node: &str) -> std::process::Child {
    std::process::Command::new(test_infra::paths::bin("cm"))
        .args(["stop", node, "--wait", "5", "--inventory", inventory])
        .env_remove("CM_INVENTORY")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("cm stop")
}

/// Issue 9, point 18: two `cm stop` at once on one referee take turns, so
/// they never together empty the pool. A and B are the pool's last two
/// serving members and the guard lets only one of them leave; both stops
/// start at once, on a referee on this machine and on one reached over SSH
/// (the lock is then taken on that host).
#[test]
fn two_stops_at_once_never_empty_the_pool() {
    let c = cloud(None);
    let remote = c.fleet.dir.path().join("remote.ini");
    let text = std::fs::read_to_string(&c.ini)
        .unwrap()
        .replace("ip=local", &format!("ip={}", c.fleet.node("C").addr));
    std::fs::write(&remote, text).unwrap();
    let remote = remote.display().to_string();
    for round in 0..6 {
        let inv = if round % 2 == 0 { &c.ini } else { &remote };
        let r = c.cm("cm", &["play", "all"]);
        assert_eq!(r.code, 0, "round {round}: {r:?}");
        let r = c.cm("cm", &["stop", "C", "--wait", "5"]);
        assert_eq!(r.code, 0, "round {round}: {r:?}");
        let (a, b) = (spawn_stop(inv, "A"), spawn_stop(inv, "B"));
        let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
        let codes = [a.status.code(), b.status.code()];
        let serving: Vec<&str> = ["A", "B"]
            .into_iter()
            .filter(|n| c.state(n).starts_with("UP"))
            .collect();
        assert_eq!(
            serving.len(),
            1,
            "round {round} ({inv}): the pool was emptied or nobody left: codes {codes:?}\nA: {}\nB: {}",
            String::from_utf8_lossy(&a.stderr),
            String::from_utf8_lossy(&b.stderr)
        );
        let mut sorted = codes;
        sorted.sort();
        assert_eq!(sorted, [Some(0), Some(2)], "round {round}");
        let refused = if codes[0] == Some(2) { &a } else { &b };
        assert!(
            String::from_utf8_lossy(&refused.stderr).contains("no server in the pool"),
            "{}",
            String::from_utf8_lossy(&refused.stderr)
        );
    }
}
