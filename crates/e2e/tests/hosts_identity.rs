//! Issue 9, point 13: a host is its credential, not its name. A twin with
//! the same name is refused and takes nothing; a removed host's agent stops
//! its VMs and waits instead of joining again by itself; the join token is
//! kept hashed, read from a file or the environment (never argv), and a
//! rotation ends the old one at once.

use cm_api::agent::{ObservedState, RegisterHost};
use cm_api::host::{Host, HostFacts, HostState, Orphan};
use cm_api::instance::{Instance, InstanceState};
use cm_api::ErrorCode;
use cm_client::api;
use std::time::Duration;
use test_infra::cloud::is_qemu;
use test_infra::{bin, wait_until, Cloud, HostOpts};

const BOOT: Duration = Duration::from_secs(120);

fn pid_of(i: &Instance) -> u32 {
    i.pid.expect("a running instance has a pid")
}

fn log_of(cloud: &Cloud, key: &str) -> String {
    std::fs::read_to_string(cloud.host(key).log()).unwrap_or_default()
}

/// `POST /v1/agent/register` as `name` with join token `t`: the master's
/// typed refusal.
fn register(cloud: &Cloud, t: &str, name: &str) -> cm_client::Error {
    let req = RegisterHost {
        name: name.into(),
        join_token: t.into(),
        facts: HostFacts::default(),
    };
    match cloud.api().call(api::agent::register(&req)) {
        Ok(r) => panic!("{name} registered: {r:?}"),
        Err(e) => e,
    }
}

#[test]
fn a_twin_is_refused_and_the_first_host_keeps_its_record_and_instance() {
    let mut cloud = Cloud::start().unwrap();
    cloud.add_host("h1", HostOpts::default()).unwrap();
    cloud.add_test_image().unwrap();
    cloud.cm_ok(&[
        "instance", "create", "v1", "--image", "cm-test", "--flavor", "m1.tiny",
    ]);
    let v1 = cloud
        .wait_instance_state("v1", InstanceState::Running, BOOT)
        .unwrap();
    let host_before: Host = cloud.cm_as(&["host", "show", "h1"]);

    // A second agent with the same name and its own data dir.
    cloud
        .spawn_host_as("twin", "h1", HostOpts::default())
        .unwrap();
    let code = wait_until("the twin to give up", Duration::from_secs(90), || {
        cloud.host_exit("twin")
    })
    .unwrap();
    assert_ne!(code, 0, "the twin must fail");
    let log = log_of(&cloud, "twin");
    assert!(
        log.contains("host h1 is registered; `cm host remove h1` first"),
        "the twin says why: {log}"
    );
    let twin_dir = cloud.host("twin").data_dir.clone();
    assert!(
        !twin_dir.join("host.json").exists(),
        "the twin got no token"
    );
    let twin_vms = std::fs::read_dir(twin_dir.join("instances"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(twin_vms, 0, "the twin started nothing");

    // The first keeps its record, its token (it goes on reporting) and its VM.
    std::thread::sleep(Duration::from_secs(3));
    let host_after: Host = cloud.cm_as(&["host", "show", "h1"]);
    assert_eq!(host_after.id, host_before.id);
    assert_eq!(host_after.state, HostState::Ready, "{host_after:?}");
    assert_ne!(
        host_after.last_seen, host_before.last_seen,
        "h1 still reports"
    );
    let now = cloud.instance("v1").unwrap();
    assert_eq!(now.state, InstanceState::Running, "{now:?}");
    assert_eq!(now.host.as_deref(), Some("h1"));
    assert_eq!(pid_of(&now), pid_of(&v1), "the same QEMU");
    let registered = cloud
        .events(Some("host.registered"))
        .iter()
        .filter(|e| e.target == "h1")
        .count();
    assert_eq!(registered, 1, "h1 registered once");
    assert_eq!(cloud.qemu_pids().len(), 1);

    // The API's answer to anyone holding the join token.
    let join = std::fs::read_to_string(cloud.master_dir().join("join.token")).unwrap();
    let e = register(&cloud, join.trim(), "h1");
    assert_eq!(e.status().map(|s| s.as_u16()), Some(409), "{e}");
    let doc = &e.api().expect("an error document").error;
    assert_eq!(doc.code, ErrorCode::Conflict);
    assert_eq!(doc.field.as_deref(), Some("name"));
    assert_eq!(
        doc.message,
        "host h1 is registered; `cm host remove h1` first"
    );
}

#[test]
fn a_removed_host_stops_its_vms_and_comes_back_only_by_rejoining() {
    let mut cloud = Cloud::start().unwrap();
    cloud.add_host("h1", HostOpts::default()).unwrap();
    cloud.add_test_image().unwrap();
    cloud.cm_ok(&[
        "instance", "create", "v1", "--image", "cm-test", "--flavor", "m1.tiny",
    ]);
    let v1 = cloud
        .wait_instance_state("v1", InstanceState::Running, BOOT)
        .unwrap();
    let pid = pid_of(&v1);
    let id = v1.id;
    cloud.console("v1").unwrap().wait_for_boot(BOOT).unwrap();

    // Refused while an instance is placed there; nothing changes.
    let out = cloud.cm(&["host", "remove", "h1"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("--force"), "{}", out.stderr);
    assert!(cloud.host_state("h1").is_some());

    let out = cloud.cm_ok(&["host", "remove", "h1", "--force"]);
    assert!(out.contains("host h1 removed"), "{out}");
    assert!(out.contains("v1"), "the forgotten instance is named: {out}");

    // Its agent is refused: it stops the VM, keeps its files, says what to do.
    wait_until("the removed host to stop its VM", BOOT, || {
        (!is_qemu(pid)).then_some(())
    })
    .unwrap();
    let log = log_of(&cloud, "h1");
    assert!(log.contains("refused this host's token"), "{log}");
    assert!(log.contains("--rejoin"), "the log says what to do: {log}");
    // ... and never joins again by itself.
    for _ in 0..8 {
        std::thread::sleep(Duration::from_secs(1));
        assert_eq!(cloud.host_state("h1"), None, "h1 came back by itself");
        assert_eq!(
            cloud.host_exit("h1"),
            None,
            "the agent waits, it does not exit"
        );
    }
    assert!(
        cloud
            .host("h1")
            .instance_dir(&id.to_string())
            .join("state.json")
            .exists(),
        "its files are kept"
    );

    // The operator's way back: --rejoin. The old VM is an orphan.
    cloud.stop_host("h1", libc::SIGTERM);
    cloud.set_host_extra("h1", vec!["--rejoin".into()]);
    cloud.restart_host("h1").unwrap();
    cloud
        .wait_host_state("h1", "ready", Duration::from_secs(60))
        .unwrap();
    let orphans = wait_until("the old VM to be listed", Duration::from_secs(30), || {
        let v: Vec<Orphan> = cloud.cm_as(&["host", "orphans", "h1"]);
        v.iter().any(|o| o.id == id).then_some(v)
    })
    .unwrap();
    assert_eq!(orphans[0].state, ObservedState::Stopped, "{orphans:?}");
    assert_eq!(orphans[0].name, "v1");
    assert!(cloud.qemu_pids().is_empty(), "nothing was started again");
}

#[test]
fn the_join_token_is_hashed_read_from_a_file_or_the_environment_and_rotation_ends_it() {
    let mut cloud = Cloud::start().unwrap();
    let file = cloud.master_dir().join("join.token");
    let token = std::fs::read_to_string(&file).unwrap().trim().to_string();
    assert!(token.starts_with("cmj_"), "{token}");
    assert_eq!(cloud.cm_ok(&["host", "join-token"]).trim(), token);

    // The store holds no copy of it in clear.
    for entry in std::fs::read_dir(cloud.master_dir()).unwrap() {
        let p = entry.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("cloud.db") {
            let bytes = std::fs::read(&p).unwrap();
            assert!(
                !String::from_utf8_lossy(&bytes).contains(&token),
                "the join token is in {name}"
            );
        }
    }

    // On the command line it is refused (ps would show it to every user).
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(bin("cloudhostd"))
        .args(["--master", &cloud.url, "--join-token", &token, "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("ps") && err.contains("--join-token-file"),
        "{err}"
    );

    // From the environment it works, and argv holds no token.
    cloud
        .spawn_host_as(
            "envhost",
            "envhost",
            HostOpts {
                join_token_file: false,
                env: vec![("CLOUDHOSTD_JOIN_TOKEN".into(), token.clone())],
                ..Default::default()
            },
        )
        .unwrap();
    cloud
        .wait_host_state("envhost", "ready", Duration::from_secs(60))
        .unwrap();
    let pid = cloud.host("envhost").pid().unwrap();
    let argv = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(!String::from_utf8_lossy(&argv).contains(&token));

    // A rotation prints the new one, and the old one no longer registers.
    let out = cloud.cm(&["host", "join-token", "--rotate"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let new = out.stdout.trim().to_string();
    assert!(new.starts_with("cmj_") && new != token, "{new}");
    assert!(out.stderr.contains("no longer works"), "{}", out.stderr);
    assert_eq!(std::fs::read_to_string(&file).unwrap().trim(), new);
    let e = register(&cloud, &token, "late");
    assert_eq!(e.status().map(|s| s.as_u16()), Some(401), "{e}");
    assert_eq!(
        e.api().and_then(|a| a.error.field.as_deref()),
        Some("join_token")
    );
    assert_eq!(cloud.host_state("late"), None);

    // An agent holding the old token says so and exits.
    let old_file = cloud.dir.path().join("old.token");
    std::fs::write(&old_file, &token).unwrap();
    cloud
        .spawn_host_as(
            "stale",
            "stale",
            HostOpts {
                join_token_file: false,
                extra: vec!["--join-token-file".into(), old_file.display().to_string()],
                ..Default::default()
            },
        )
        .unwrap();
    let code = wait_until("the stale agent to exit", Duration::from_secs(60), || {
        cloud.host_exit("stale")
    })
    .unwrap();
    assert_ne!(code, 0);
    assert!(
        log_of(&cloud, "stale").contains("refused the join token"),
        "{}",
        log_of(&cloud, "stale")
    );

    // The new one works.
    cloud.add_host("late", HostOpts::default()).unwrap();
}
