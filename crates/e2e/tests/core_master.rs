//! Issue 2, points 1, 8 and 9: the master keeps its state across a crash,
//! guards every request with a token that `cm` finds by itself, refuses bad
//! input without writing anything, and `cm` speaks tables, JSON and errors.

use cm_api::instance::{Instance, InstanceState};
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;
use test_infra::{http, Cloud, HostOpts};

#[test]
fn state_survives_a_master_crash_and_the_token_is_private() {
    let mut cloud = Cloud::start().unwrap();
    let token_file = cloud.master_dir().join("admin.token");
    let mode = std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        mode, 0o600,
        "admin.token must be readable by its owner only"
    );
    // The store is SQLite in WAL mode under the data dir.
    let db = cloud.master_dir().join("cloud.db");
    let mut header = [0u8; 20];
    std::io::Read::read_exact(&mut std::fs::File::open(&db).unwrap(), &mut header).unwrap();
    assert_eq!(&header[..16], b"SQLite format 3\0");
    assert_eq!(header[18], 2, "the database is in WAL mode");

    cloud.add_host("h1", HostOpts::default()).unwrap();
    cloud.add_test_image().unwrap();
    cloud.cm_ok(&[
        "flavor", "create", "c1.test", "--memory", "160", "--vcpus", "1",
    ]);
    cloud.cm_ok(&[
        "instance", "create", "a1", "--image", "cm-test", "--flavor", "c1.test",
    ]);
    let before = cloud.instance("a1").unwrap();
    assert_eq!(before.state, InstanceState::Running);
    let pids = cloud.qemu_pids();
    assert_eq!(pids.len(), 1);

    // Crash the master and start it again on the same data dir.
    cloud.stop_master(libc::SIGKILL);
    cloud.start_master().unwrap();
    cloud
        .wait_host_state("h1", "ready", Duration::from_secs(30))
        .unwrap();
    let after = cloud
        .wait_instance_state("a1", InstanceState::Running, Duration::from_secs(30))
        .unwrap();
    assert_eq!(after.id, before.id);
    assert_eq!(after.memory_mib, 160);
    assert!(cloud.cm_ok(&["image", "list"]).contains("cm-test"));
    assert!(cloud.cm_ok(&["flavor", "list"]).contains("c1.test"));
    let list: Vec<Instance> = cloud.cm_as(&["instance", "list"]);
    assert_eq!(list.len(), 1, "no instance lost or duplicated: {list:?}");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(cloud.qemu_pids(), pids, "the same QEMU, not a second one");
    // The admin token is the same after the restart.
    let again = std::fs::read_to_string(&token_file).unwrap();
    assert_eq!(again.trim(), cloud.token);
}

#[test]
fn cm_finds_the_local_master_and_every_request_needs_a_token() {
    let cloud = Cloud::start().unwrap();
    let home = tempfile::tempdir().unwrap();
    // No URL, no token, no config: the master's pointer file says where it is.
    let out = cloud.cm_local(&["host", "list"], &cloud.runtime_dir(), home.path());
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("NAME"), "{}", out.stdout);

    // Or a config file, with the token in a file.
    let empty_run = tempfile::tempdir().unwrap();
    let cfg_dir = home.path().join(".config/cm");
    std::fs::create_dir_all(&cfg_dir).unwrap();
    std::fs::write(
        cfg_dir.join("config.toml"),
        format!(
            "url = \"{}\"\ntoken_file = \"{}\"\n",
            cloud.url,
            cloud.master_dir().join("admin.token").display()
        ),
    )
    .unwrap();
    let out = cloud.cm_local(&["flavor", "list"], empty_run.path(), home.path());
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("m1.tiny"));

    // Without any of these, cm says what is missing.
    let bare_home = tempfile::tempdir().unwrap();
    let out = cloud.cm_local(&["host", "list"], empty_run.path(), bare_home.path());
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("no token"), "{}", out.stderr);

    // Every endpoint wants a token, and a valid one. Raw HTTP: requests
    // without or with a wrong token, which the typed client never sends.
    for path in [
        "/v1/hosts",
        "/v1/instances",
        "/v1/images",
        "/v1/events",
        "/v1/info",
    ] {
        let (status, body) = http("GET", &format!("{}{path}", cloud.url), None, None);
        assert_eq!(status, 401, "{path}: {body}");
        assert_eq!(body["error"]["code"], "unauthorized");
        let (status, _) = http(
            "GET",
            &format!("{}{path}", cloud.url),
            Some("cma_wrong"),
            None,
        );
        assert_eq!(status, 401, "{path}");
    }
}

/// POST `body` to /v1/instances and return the status and error document.
/// Raw HTTP and JSON: the point is the wire (malformed, unknown or
/// mistyped fields, the exact error document).
fn post_instance(cloud: &Cloud, body: &Value) -> (u16, Value) {
    http(
        "POST",
        &format!("{}/v1/instances", cloud.url),
        Some(&cloud.token),
        Some(("application/json", serde_json::to_vec(body).unwrap())),
    )
}

fn assert_error(what: &str, got: (u16, Value), status: u16, code: &str, field: Option<&str>) {
    let (s, body) = got;
    assert_eq!(s, status, "{what}: {body}");
    assert_eq!(body["error"]["code"], code, "{what}: {body}");
    assert!(
        !body["error"]["message"].as_str().unwrap_or("").is_empty(),
        "{what}: no message"
    );
    if let Some(f) = field {
        assert_eq!(body["error"]["field"], f, "{what}: {body}");
    }
}

#[test]
fn bad_input_gets_a_4xx_json_error_and_writes_nothing() {
    let mut cloud = Cloud::start().unwrap();
    cloud
        .add_host(
            "h1",
            HostOpts {
                memory_mib: Some(2048),
                ..Default::default()
            },
        )
        .unwrap();
    cloud.add_test_image().unwrap();
    let events_before = cloud.events(None).len();
    let ok = json!({"name": "good", "image": "cm-test", "flavor": "m1.tiny"});
    // Every route's bad fields (names, types, unknown references, limits)
    // are a table run in process: cloudmasterd's
    // api::tests_input::every_routes_bad_input_is_refused_with_its_code_and_field_and_writes_nothing.
    // Here: one through the real server, then what needs a socket, real
    // credentials and the real `cm`.
    let mut bad = ok.clone();
    bad["name"] = json!("Bad_Name!");
    assert_error(
        "invalid name",
        post_instance(&cloud, &bad),
        400,
        "invalid_input",
        Some("name"),
    );

    let url = format!("{}/v1/instances", cloud.url);
    let malformed = http(
        "POST",
        &url,
        Some(&cloud.token),
        Some(("application/json", b"{\"name\": ".to_vec())),
    );
    assert_error("malformed JSON", malformed, 400, "malformed_body", None);
    let not_json = http(
        "POST",
        &url,
        Some(&cloud.token),
        Some(("text/plain", b"name=x".to_vec())),
    );
    assert_error("not JSON", not_json, 400, "malformed_body", None);
    let huge = vec![b' '; 5 * 1024 * 1024];
    let too_big = http(
        "POST",
        &url,
        Some(&cloud.token),
        Some(("application/json", huge)),
    );
    assert_error("oversized body", too_big, 413, "body_too_large", None);
    let no_token = http(
        "POST",
        &url,
        None,
        Some(("application/json", serde_json::to_vec(&ok).unwrap())),
    );
    assert_error("missing token", no_token, 401, "unauthorized", None);
    let wrong = http(
        "POST",
        &url,
        Some("cma_nottheone"),
        Some(("application/json", serde_json::to_vec(&ok).unwrap())),
    );
    assert_error("wrong token", wrong, 401, "unauthorized", None);
    // A host's own token is not an admin token.
    let creds: Value = serde_json::from_str(
        &std::fs::read_to_string(cloud.host("h1").data_dir.join("host.json")).unwrap(),
    )
    .unwrap();
    let host_token = creds["host_token"].as_str().unwrap();
    let as_host = http(
        "POST",
        &url,
        Some(host_token),
        Some(("application/json", serde_json::to_vec(&ok).unwrap())),
    );
    assert_error("a host token", as_host, 403, "forbidden", None);
    let (s, body) = http(
        "GET",
        &format!("{}/v1/nothing-here", cloud.url),
        Some(&cloud.token),
        None,
    );
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    let (s, body) = http(
        "PUT",
        &format!("{}/v1/hosts", cloud.url),
        Some(&cloud.token),
        None,
    );
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (405, Some("method_not_allowed"))
    );

    // Nothing was written: no instance, no event, host memory untouched.
    let list: Vec<Instance> = cloud.cm_as(&["instance", "list"]);
    assert!(list.is_empty(), "{list:?}");
    assert_eq!(
        cloud.events(None).len(),
        events_before,
        "a refused request wrote an event"
    );
    assert_eq!(cloud.qemu_pids().len(), 0);

    // cm: a non-zero exit and the server's message.
    let out = cloud.cm(&[
        "instance", "create", "x1", "--image", "cm-test", "--memory", "1T",
    ]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("no host has 1048576 MiB"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("memory_mib"), "{}", out.stderr);
    let out = cloud.cm(&[
        "instance", "create", "x1", "--image", "nope", "--flavor", "m1.tiny",
    ]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("image 'nope' not found"),
        "{}",
        out.stderr
    );
    let out = cloud.cm(&[
        "instance", "create", "x1", "--image", "cm-test", "--memory", "lots",
    ]);
    assert_eq!(out.code, 2, "a usage error: {}", out.stderr);
    let out = cloud.cm(&["instance", "show", "ghost"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("instance 'ghost' not found"),
        "{}",
        out.stderr
    );
}

#[test]
fn cm_prints_tables_json_and_an_example_in_every_help() {
    let cloud = Cloud::start().unwrap();
    let table = cloud.cm_ok(&["flavor", "list"]);
    let header = table.lines().next().unwrap();
    for col in ["NAME", "MEMORY", "VCPUS"] {
        assert!(header.contains(col), "{header}");
    }
    assert!(
        table
            .lines()
            .any(|l| l.trim_start().starts_with("m1.small")),
        "{table}"
    );
    let v: Vec<cm_api::image::Flavor> = cloud.cm_as(&["flavor", "list"]);
    let tiny = v.iter().find(|f| f.name == "m1.tiny").unwrap();
    assert_eq!((tiny.memory_mib, tiny.vcpus), (128, 1));

    let commands: &[&[&str]] = &[
        &[],
        &["host", "list"],
        &["host", "show"],
        &["host", "disable"],
        &["host", "enable"],
        &["host", "join-token"],
        &["image", "add"],
        &["image", "list"],
        &["image", "show"],
        &["image", "delete"],
        &["flavor", "list"],
        &["flavor", "show"],
        &["flavor", "create"],
        &["flavor", "delete"],
        &["instance", "create"],
        &["instance", "list"],
        &["instance", "show"],
        &["instance", "start"],
        &["instance", "stop"],
        &["instance", "reboot"],
        &["instance", "delete"],
        &["instance", "console"],
        &["operation", "list"],
        &["operation", "show"],
        &["operation", "wait"],
        &["event", "list"],
    ];
    for c in commands {
        let mut args = c.to_vec();
        args.push("--help");
        let out = cloud.cm(&args);
        assert_eq!(out.code, 0, "cm {} --help: {}", c.join(" "), out.stderr);
        assert!(
            out.stdout.contains("Example"),
            "cm {} --help has no example:\n{}",
            c.join(" "),
            out.stdout
        );
    }
}
