//! Issue 9, points 7, 8 and 10: a hostile guest cannot hurt its host.
//! Its root floods the heartbeat port and the serial console, and tries
//! every port on the host's loopback; the agent stays small, the log stays
//! under its cap, and only the master's guest routes answer.

use cm_api::boot::{ConfigDetail, Registered};
use cm_api::instance::ConsoleLog;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use test_infra::{wait_until, Cloud, HostOpts};

const BOOT: Duration = Duration::from_secs(120);

/// The resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn instance_dir(cloud: &Cloud, host: &str, name: &str) -> std::path::PathBuf {
    let id = cloud.instance(name).unwrap().id.to_string();
    cloud.host(host).instance_dir(&id)
}

#[test]
fn an_endless_line_on_the_heartbeat_port_leaves_the_agent_small() {
    let mut cloud = Cloud::start().unwrap();
    cloud.add_host("h1", HostOpts::default()).unwrap();
    cloud.add_test_image().unwrap();
    cloud.cm_ok(&[
        "instance", "create", "hb", "--image", "cm-test", "--flavor", "m1.tiny",
    ]);
    wait_until("hb's agent to be up", BOOT, || {
        cloud.instance("hb").filter(|i| i.guest.state == "up")
    })
    .unwrap();
    let agent = cloud.host("h1").pid().unwrap();
    let before = rss_kib(agent);
    let mut con = cloud.console("hb").unwrap();
    let port = con
        .run(
            "for p in /sys/class/virtio-ports/*; do \
             [ \"$(cat $p/name)\" = org.cloudmaster.agent.0 ] && echo /dev/${p##*/}; done",
            Duration::from_secs(30),
        )
        .unwrap();
    assert!(port.starts_with("/dev/vport"), "{port}");
    // Root in the guest stops the agent and writes one line without end.
    con.run(
        // The port has one opener at a time: wait for cm-guest to let go.
        &format!(
            "killall cm-guest; while pidof cm-guest >/dev/null; do sleep 0.2; done; \
             (cat /dev/zero > {port} &)"
        ),
        Duration::from_secs(30),
    )
    .unwrap();
    let log = cloud.host("h1").log();
    let start = Instant::now();
    let mut most = before;
    let mut seen_at = None;
    while start.elapsed() < Duration::from_secs(150) {
        let rss = rss_kib(agent);
        most = most.max(rss);
        assert!(
            rss < before + 64 * 1024,
            "the agent grew from {before} KiB to {rss} KiB in {:?}",
            start.elapsed()
        );
        let said = std::fs::read_to_string(&log).unwrap_or_default();
        if seen_at.is_none() && said.contains("over-long lines") {
            seen_at = Some(Instant::now());
        }
        // The flood reached the agent, and went on for 20 s more.
        if seen_at.is_some_and(|t| t.elapsed() > Duration::from_secs(20)) {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(seen_at.is_some(), "the agent never saw the flood");
    eprintln!("agent RSS: {before} KiB before, at most {most} KiB during the flood");
    assert!(con
        .run("pidof cat", Duration::from_secs(30))
        .unwrap()
        .chars()
        .any(|c| c.is_ascii_digit()));
    wait_until("hb to be silent", Duration::from_secs(60), || {
        cloud
            .instance("hb")
            .filter(|i| i.guest.state.starts_with("silent for"))
    })
    .unwrap();
    // The flood ends and the agent starts again: heartbeats come through.
    con.run(
        "killall cat; (/sbin/cm-guest >/dev/console 2>&1 </dev/null &)",
        Duration::from_secs(30),
    )
    .unwrap();
    let i = wait_until("hb's heartbeats to resume", Duration::from_secs(60), || {
        cloud.instance("hb").filter(|i| i.guest.state == "up")
    })
    .unwrap();
    assert_eq!(i.guest.via.as_deref(), Some("virtio-serial"));
}

#[test]
fn a_console_flood_keeps_the_log_under_its_cap_across_agent_restarts_and_reboots() {
    const CAP: u64 = 64 * 1024;
    // What the guest may write between two looks of the agent (every
    // 250 ms; this guest's serial port writes about 50 KB/s under TCG).
    const SLACK: u64 = 64 * 1024;
    let mut cloud = Cloud::start().unwrap();
    cloud
        .add_host(
            "h1",
            HostOpts {
                extra: vec!["--console-log-max".into(), "64K".into()],
                ..HostOpts::default()
            },
        )
        .unwrap();
    cloud.add_test_image().unwrap();
    cloud.cm_ok(&[
        "instance", "create", "noisy", "--image", "cm-test", "--flavor", "m1.tiny",
    ]);
    let mut con = cloud.console("noisy").unwrap();
    con.wait_for_boot(BOOT).unwrap();
    let dir = instance_dir(&cloud, "h1", "noisy");
    let live = dir.join("console.log");
    let kept = |p: &Path| -> u64 {
        let len = |f: &Path| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0);
        len(p) + len(&p.with_extension("log.1"))
    };
    let tail = |cloud: &Cloud| cloud.cm_ok(&["instance", "console", "noisy"]);

    // The guest's root writes to its serial port for 30 s.
    con.send(
        "timeout 30 yes cm-flood-line-0123456789abcdef > /dev/ttyS0; echo cm-flood-done-$((6*7))",
    )
    .unwrap();
    let (mut most, mut rotations, mut last_live) = (0, 0, 0);
    wait_until("the first flood to end", Duration::from_secs(180), || {
        most = most.max(kept(&live));
        let l = std::fs::metadata(&live).map(|m| m.len()).unwrap_or(0);
        if l < last_live {
            rotations += 1;
        }
        last_live = l;
        con.text().contains("cm-flood-done-42").then_some(())
    })
    .unwrap();
    eprintln!("at most {most} bytes kept, {rotations} rotations");
    assert!(most <= CAP + SLACK, "the log held {most} bytes (cap {CAP})");
    assert!(
        rotations >= 5,
        "the flood wrote the cap over several times: {rotations} rotations"
    );
    // The tail still has the latest output.
    let t = wait_until("the tail to show the end", Duration::from_secs(10), || {
        Some(tail(&cloud)).filter(|t| t.contains("cm-flood-done-42"))
    })
    .unwrap();
    assert!(t.contains("cm-flood-line-0123456789abcdef"));
    let j: ConsoleLog = cloud.cm_as(&["instance", "console", "noisy"]);
    assert!(j.size <= CAP + SLACK, "{}", j.size);

    // The agent is away during a second flood; once back, it cuts the log.
    cloud.stop_host("h1", libc::SIGKILL);
    con.send(
        "timeout 10 yes cm-flood-line-0123456789abcdef > /dev/ttyS0; echo cm-flood-done-$((6*7+1))",
    )
    .unwrap();
    wait_until("the second flood to end", Duration::from_secs(120), || {
        con.text().contains("cm-flood-done-43").then_some(())
    })
    .unwrap();
    let grown = kept(&live);
    cloud.restart_host("h1").unwrap();
    let back = wait_until("the log to be cut again", Duration::from_secs(30), || {
        Some(kept(&live)).filter(|k| *k <= CAP + SLACK)
    })
    .unwrap();
    eprintln!("{grown} bytes with the agent away, {back} once it was back");
    cloud
        .wait_host_state("h1", "ready", Duration::from_secs(60))
        .unwrap();
    let t = tail(&cloud);
    assert!(t.contains("cm-flood-done-43"), "{t}");

    // A reboot appends to the same log, still capped.
    let boots = |con: &test_infra::console::Console| con.text().matches("cm-init: ready").count();
    let booted = boots(&con);
    cloud.cm_ok(&["instance", "reboot", "noisy"]);
    wait_until("the guest to boot again", BOOT, || {
        (boots(&con) > booted).then_some(())
    })
    .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    assert!(kept(&live) <= CAP + SLACK);
    let t = tail(&cloud);
    assert!(t.contains("cm-init: ready"), "{t}");
}

/// A service on the host's loopback that has nothing to do with guests.
fn unrelated_listener() -> (u16, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    std::thread::spawn(move || {
        for mut c in l.incoming().flatten() {
            h.fetch_add(1, Ordering::SeqCst);
            let _ = c.write_all(b"HTTP/1.0 200 OK\r\n\r\nunrelated-service\n");
        }
    });
    (port, hits)
}

#[test]
fn a_guest_reaches_only_the_masters_guest_routes() {
    let mut cloud = Cloud::start().unwrap();
    cloud.add_host("h1", HostOpts::default()).unwrap();
    cloud
        .add_host(
            "h2",
            HostOpts {
                extra: vec!["--guest-network".into(), "nat".into()],
                ..HostOpts::default()
            },
        )
        .unwrap();
    cloud.add_test_image().unwrap();
    let (other, hits) = unrelated_listener();
    let m = cloud.port;
    // cm-guest fetches its config and reports through the boot proxy.
    let cfg = cloud.dir.path().join("guest.toml");
    std::fs::write(&cfg, "#cm-guest\n[parameters]\nrole = \"fenced\"\n").unwrap();
    cloud.cm_ok(&[
        "instance",
        "create",
        "fenced",
        "--image",
        "cm-test",
        "--flavor",
        "m1.tiny",
        "--host",
        "h1",
        "--config",
        &cfg.to_string_lossy(),
    ]);
    let id = cloud.instance("fenced").unwrap().id.to_string();
    wait_until("fenced to be configured", BOOT, || {
        let r: ConfigDetail = cloud.cm_as(&["config", "show", &id]);
        (r.record.status.as_str() == "configured"
            && r.record.parameter_map.get("role").map(String::as_str) == Some("fenced"))
        .then_some(())
    })
    .unwrap();
    let mut con = cloud.console("fenced").unwrap();
    let run = |con: &mut test_infra::console::Console, cmd: &str| {
        con.run(cmd, Duration::from_secs(60)).unwrap()
    };

    // The master's admin API: refused by the proxy, even with the admin token.
    // Raw HTTP from inside the guest (wget, nc): a hostile guest's wire is the point.
    let out = run(
        &mut con,
        &format!(
            "wget -q -O - --header 'Authorization: Bearer {}' http://10.0.2.2:{m}/v1/info 2>&1; echo rc=$?",
            cloud.token
        ),
    );
    assert!(out.contains("403") && out.ends_with("rc=1"), "{out}");
    for target in [
        "/v1/info",
        "/boot/../v1/info",
        "/boot/%2e%2e/v1/info",
        &format!("http://127.0.0.1:{m}/v1/info"),
    ] {
        let out = run(
            &mut con,
            &format!(
                "printf 'GET {} HTTP/1.0\\r\\nAuthorization: Bearer {}\\r\\n\\r\\n' | timeout 20 nc 10.0.2.2 {m}",
                target.replace('%', "%%"),
                cloud.token
            ),
        );
        assert!(
            out.starts_with("HTTP/1.0 403") && out.contains(r#""code":"forbidden""#),
            "{target}: {out}"
        );
    }
    // Nothing else on the host: not the unrelated service, not the master
    // through the gateway, not any other port at the proxy's address.
    for (addr, port) in [("10.0.2.2", other), ("10.0.2.1", other), ("10.0.2.1", m)] {
        let out = run(
            &mut con,
            &format!("timeout 20 wget -q -O - http://{addr}:{port}/ 2>&1; echo rc=$?"),
        );
        assert!(!out.ends_with("rc=0"), "{addr}:{port}: {out}");
        assert!(!out.contains("unrelated-service"), "{addr}:{port}: {out}");
    }
    assert_eq!(hits.load(Ordering::SeqCst), 0);

    // The guest routes answer, with a record's credentials.
    let reg: Registered =
        cloud.cm_as(&["config", "pre-register", "--text", "#cm-guest\n# reached\n"]);
    let (uuid, secret) = (&reg.record.uuid.to_string(), &reg.secret);
    let got = run(
        &mut con,
        &format!("wget -q -O - http://{uuid}:{secret}@10.0.2.2:{m}/boot/v1/configs/{uuid}"),
    );
    assert!(got.contains("# reached"), "{got}");
    let meta = run(
        &mut con,
        &format!("wget -q -O - http://{uuid}:{secret}@10.0.2.2:{m}/nocloud/{uuid}/meta-data"),
    );
    assert!(meta.contains(uuid), "{meta}");
    drop(con);

    // `--guest-network nat`: the trade docs/host.md describes. The master's
    // address is still the proxy, but the gateway is the host's loopback.
    cloud.cm_ok(&[
        "instance", "create", "open", "--image", "cm-test", "--flavor", "m1.tiny", "--host", "h2",
    ]);
    let mut con = cloud.console("open").unwrap();
    con.wait_for_boot(BOOT).unwrap();
    let out = run(
        &mut con,
        &format!("wget -q -O - http://10.0.2.2:{m}/v1/info 2>&1; echo rc=$?"),
    );
    assert!(out.contains("403"), "{out}");
    let out = run(
        &mut con,
        &format!("timeout 20 wget -q -O - http://10.0.2.1:{other}/ 2>&1"),
    );
    assert!(out.contains("unrelated-service"), "{out}");
    assert!(hits.load(Ordering::SeqCst) >= 1);
}

/// What the proxy reads from a guest is bounded: an endless request head
/// is cut off, and the proxy keeps serving.
#[test]
fn the_boot_proxy_bounds_what_it_reads() {
    let mut cloud = Cloud::start().unwrap();
    cloud.add_host("h1", HostOpts::default()).unwrap();
    cloud.add_test_image().unwrap();
    cloud.cm_ok(&[
        "instance", "create", "p", "--image", "cm-test", "--flavor", "m1.tiny",
    ]);
    let sock = instance_dir(&cloud, "h1", "p").join("boot.sock");
    wait_until("the boot proxy's socket", BOOT, || {
        sock.exists().then_some(())
    })
    .unwrap();
    let agent = cloud.host("h1").pid().unwrap();
    let before = rss_kib(agent);
    // A header line without end: the proxy closes the connection.
    let mut s = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(b"GET /boot/v1/configs/x HTTP/1.1\r\nX-Long: ")
        .unwrap();
    let chunk = vec![b'a'; 64 * 1024];
    let mut sent = 0usize;
    while sent < 64 << 20 {
        match s.write(&chunk) {
            Ok(n) => sent += n,
            Err(_) => break,
        }
    }
    assert!(sent < 64 << 20, "the proxy read 64 MiB of one header");
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 431"),
        "{text}"
    );
    assert!(rss_kib(agent) < before + 32 * 1024);
    // A body over the limit: 413, as the JSON error document.
    let mut s = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    s.write_all(
        b"PUT /boot/v1/configs/x/status HTTP/1.1\r\nContent-Length: 10000000\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let _ = s.write_all(&vec![b'{'; 1 << 20]);
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    assert!(
        answer.starts_with("HTTP/1.1 413") && answer.contains("body_too_large"),
        "{answer}"
    );
}
