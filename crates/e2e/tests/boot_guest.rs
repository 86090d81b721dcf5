//! Issue 3, points 3 and 5: cm-guest in real VMs fetches its config,
//! applies it (files, commands, services with health checks; other formats
//! through the image's handler), reports with update_cache, follows config
//! changes, survives a master restart during boot, and heartbeats.

use cm_api::boot::{Config, ConfigDetail, Registered};
use cm_api::words::KnownConfigStatus;
use std::io::{Read, Write};
use std::time::{Duration, Instant};
use test_infra::{free_port, wait_until, Cloud, HostOpts};

const BOOT: Duration = Duration::from_secs(120);

fn web_config(text: &str, role: &str) -> String {
    format!(
        r#"#cm-guest
[[file]]
path = "/www/index.html"
content = "{text}\n"

[[command]]
run = "echo ran > /run/cmd-ran"

[[service]]
name = "web"
run = "httpd -f -p 8080 -h /www"
[service.check]
http = "http://127.0.0.1:8080/"
interval_secs = 1

[parameters]
role = "{role}"
"#
    )
}

fn http_get(port: u16) -> Option<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    Some(buf)
}

/// The instance's config record (by the instance's id).
fn record(cloud: &Cloud, instance: &str) -> Config {
    let id = cloud.instance(instance).unwrap().id.to_string();
    cloud.cm_as::<ConfigDetail>(&["config", "show", &id]).record
}

/// A parameter the guest reported ("" when it did not).
fn param<'a>(r: &'a Config, key: &str) -> &'a str {
    r.parameter_map.get(key).map(String::as_str).unwrap_or("")
}

fn wait_status(cloud: &Cloud, instance: &str, status: &str, version: u64) -> Config {
    wait_until(
        &format!("{instance}'s config to be {status} at version {version}"),
        BOOT,
        || {
            let r = record(cloud, instance);
            (r.status.as_str() == status && param(&r, "config_version") == version.to_string())
                .then_some(r)
        },
    )
    .unwrap()
}

#[test]
fn a_config_is_applied_reported_and_followed_when_it_changes() {
    let mut cloud = Cloud::start().unwrap();
    cloud.add_host("h1", HostOpts::default()).unwrap();
    cloud.add_test_image().unwrap();
    let port = free_port();
    let cfg = cloud.dir.path().join("web.toml");
    std::fs::write(&cfg, web_config("hello from cm-guest", "web")).unwrap();
    let t = Instant::now();
    cloud.cm_ok(&[
        "instance",
        "create",
        "web",
        "--image",
        "cm-test",
        "--flavor",
        "m1.tiny",
        "--port",
        &format!("8080:{port}"),
        "--config",
        &cfg.to_string_lossy(),
    ]);
    let rec = wait_status(&cloud, "web", "configured", 1);
    eprintln!("create → configured: {:?}", t.elapsed());
    assert_eq!(rec.my_conf_addr.as_deref(), Some("10.0.2.15"), "{rec:?}");
    assert_eq!(param(&rec, "role"), "web");
    assert_eq!(param(&rec, "hostname"), "cm-guest");
    assert!(rec.trust_key_set);
    assert_eq!(
        cloud.instance("web").unwrap().config_status,
        Some(KnownConfigStatus::Configured.into())
    );
    // The file and the service: served through the port forward.
    let page = wait_until("the service to answer", Duration::from_secs(30), || {
        http_get(port).filter(|b| b.contains("hello from cm-guest"))
    })
    .unwrap();
    assert!(page.contains("200"), "{page}");
    // The command ran; the service is reported running in the heartbeats.
    let mut con = cloud.console("web").unwrap();
    assert_eq!(
        con.run("cat /run/cmd-ran", Duration::from_secs(30))
            .unwrap(),
        "ran"
    );
    let i = wait_until(
        "the web service in a heartbeat",
        Duration::from_secs(30),
        || {
            cloud.instance("web").filter(|i| {
                i.guest
                    .services
                    .first()
                    .is_some_and(|s| s.state == cm_api::words::KnownServiceStatus::Running)
            })
        },
    )
    .unwrap();
    assert_eq!(i.guest.state, "up");
    assert_eq!(i.guest.services[0].name, "web");
    let shown = cloud.cm_ok(&["instance", "show", "web"]);
    assert!(
        shown.contains("web: running") && shown.contains("guest: up"),
        "{shown}"
    );

    // A new version on the master reaches the running guest within seconds.
    let id = i.id.to_string();
    let t = Instant::now();
    let v2 = cloud.dir.path().join("web2.toml");
    std::fs::write(&v2, web_config("version two", "web2")).unwrap();
    cloud.cm_ok(&["config", "set", &id, "--file", &v2.to_string_lossy()]);
    let rec = wait_status(&cloud, "web", "configured", 2);
    let took = t.elapsed();
    eprintln!("config change → configured: {took:?}");
    assert!(took < Duration::from_secs(15), "{took:?}");
    assert_eq!(param(&rec, "role"), "web2");
    wait_until("the new page", Duration::from_secs(30), || {
        http_get(port).filter(|b| b.contains("version two"))
    })
    .unwrap();

    // A config that fails: status failed with the reason.
    std::fs::write(
        &v2,
        "#cm-guest\n[[command]]\nrun = \"echo no disk left >&2; exit 3\"\n",
    )
    .unwrap();
    cloud.cm_ok(&["config", "set", &id, "--file", &v2.to_string_lossy()]);
    let rec = wait_status(&cloud, "web", "failed", 3);
    assert!(
        rec.reason.as_deref().unwrap_or("").contains("no disk left"),
        "{rec:?}"
    );
    assert_eq!(
        cloud.instance("web").unwrap().config_status,
        Some(KnownConfigStatus::Failed.into())
    );
    let console = cloud.cm_ok(&["instance", "console", "web"]);
    for line in [
        "cm-guest: fetched config version 1",
        "cm-guest: configured (version 1)",
        "cm-guest: configured (version 2)",
        "cm-guest: failed (version 3)",
    ] {
        assert!(
            console.contains(line),
            "no {line:?} on the console:\n{console}"
        );
    }
}

#[test]
fn other_formats_go_to_the_images_handler() {
    let mut cloud = Cloud::start().unwrap();
    cloud.add_host("h1", HostOpts::default()).unwrap();
    cloud.add_test_image().unwrap();
    let cfg = cloud.dir.path().join("app.json");
    std::fs::write(&cfg, "{\"app\": {\"replicas\": 3}}\n").unwrap();
    cloud.cm_ok(&[
        "instance",
        "create",
        "h",
        "--image",
        "cm-test",
        "--flavor",
        "m1.tiny",
        "--config",
        &cfg.to_string_lossy(),
    ]);
    let rec = wait_status(&cloud, "h", "configured", 1);
    assert_eq!(param(&rec, "handled"), "yes", "{rec:?}");
    assert_eq!(param(&rec, "bytes"), "25");
    let mut con = cloud.console("h").unwrap();
    let kept = con
        .run("cat /run/handled-config", Duration::from_secs(30))
        .unwrap();
    assert_eq!(kept, "{\"app\": {\"replicas\": 3}}");
}

#[test]
fn a_master_restart_during_boot_is_survived() {
    let mut cloud = Cloud::start().unwrap();
    cloud.add_host("h1", HostOpts::default()).unwrap();
    cloud.add_test_image().unwrap();
    let cfg = cloud.dir.path().join("c.toml");
    std::fs::write(&cfg, "#cm-guest\n[parameters]\nsurvived = \"yes\"\n").unwrap();
    cloud.cm_ok(&[
        "instance",
        "create",
        "r",
        "--image",
        "cm-test",
        "--flavor",
        "m1.tiny",
        "--config",
        &cfg.to_string_lossy(),
    ]);
    // Down before the guest's agent starts (the guest needs ~3 s to boot).
    cloud.stop_master(libc::SIGKILL);
    let con = {
        let i_dir = std::fs::read_dir(cloud.host("h1").data_dir.join("instances"))
            .unwrap()
            .flatten()
            .next()
            .unwrap()
            .path();
        test_infra::console::Console::connect(
            &i_dir.join("console.sock"),
            &i_dir.join("console.log"),
        )
        .unwrap()
    };
    con.expect("cm-guest: fetch:", BOOT).unwrap();
    std::thread::sleep(Duration::from_secs(4));
    cloud.start_master().unwrap();
    let rec = wait_status(&cloud, "r", "configured", 1);
    assert_eq!(param(&rec, "survived"), "yes");
    assert!(con.text().contains("retrying in"), "{}", con.text());
}

#[test]
fn heartbeats_say_up_silent_or_no_agent() {
    let mut cloud = Cloud::start().unwrap();
    cloud.add_host("h1", HostOpts::default()).unwrap();
    cloud.add_test_image().unwrap();
    cloud.cm_ok(&[
        "instance", "create", "hb", "--image", "cm-test", "--flavor", "m1.tiny",
    ]);
    // No config: the agent has nothing to apply but still heartbeats.
    let i = wait_until("hb's agent to be up", BOOT, || {
        cloud.instance("hb").filter(|i| i.guest.state == "up")
    })
    .unwrap();
    assert_eq!(i.guest.via.as_deref(), Some("virtio-serial"));
    let seq = i.guest.seq.unwrap();
    wait_until("the sequence to advance", Duration::from_secs(30), || {
        cloud
            .instance("hb")
            .filter(|i| i.guest.seq.unwrap_or(0) > seq)
    })
    .unwrap();
    // The agent stops: silent, and the silence grows.
    let mut con = cloud.console("hb").unwrap();
    con.run("killall cm-guest", Duration::from_secs(30))
        .unwrap();
    let i = wait_until("hb to be silent", Duration::from_secs(60), || {
        cloud
            .instance("hb")
            .filter(|i| i.guest.state.starts_with("silent for"))
    })
    .unwrap();
    assert!(
        cloud
            .cm_ok(&["instance", "show", "hb"])
            .contains("silent for"),
        "{i:?}"
    );
    // A VM without any agent (a blank disk that boots nothing): no agent.
    let base = cloud.dir.path().join("blank.qcow2");
    assert!(std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&base)
        .arg("16M")
        .status()
        .unwrap()
        .success());
    cloud.cm_ok(&["image", "add", "blank", "--disk", &base.to_string_lossy()]);
    cloud.cm_ok(&[
        "instance", "create", "mute", "--image", "blank", "--memory", "128",
    ]);
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(cloud.instance("mute").unwrap().guest.state, "no agent");
}

#[test]
fn a_guest_outside_our_hosts_heartbeats_over_http() {
    // The seed's federated case: cm-guest on a machine that is not one of
    // our VMs (here: this machine, with a directory as its root).
    let cloud = Cloud::start().unwrap();
    let reg: Registered = cloud.cm_as(&["config", "pre-register", "--text", "#cm-guest\n[[file]]\npath = \"/etc/motd\"\ncontent = \"federated\"\n[parameters]\nsite = \"elsewhere\"\n"]);
    let (uuid, secret) = (reg.record.uuid.to_string(), reg.secret.as_str());
    let uuid = uuid.as_str();
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("proc")).unwrap();
    std::fs::write(
        root.path().join("proc/cmdline"),
        format!("cm.boot={uuid}:127.0.0.1:{}:{secret}\n", cloud.port),
    )
    .unwrap();
    std::fs::create_dir_all(root.path().join("etc")).unwrap();
    std::fs::write(
        root.path().join("etc/cm-guest.toml"),
        format!(
            "heartbeat_secs = 1\nstate_dir = \"{}\"\n",
            root.path().join("state").display()
        ),
    )
    .unwrap();
    let guest =
        test_infra::workspace_root().join("target/guest/x86_64-unknown-linux-gnu/guest/cm-guest");
    let log = std::fs::File::create(root.path().join("cm-guest.log")).unwrap();
    let mut child = std::process::Command::new(&guest)
        .arg("--root")
        .arg(root.path())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("{} (make guest): {e}", guest.display()));
    let res = wait_until(
        "the federated guest to be configured and up",
        Duration::from_secs(60),
        || {
            let r = cloud
                .cm_as::<ConfigDetail>(&["config", "show", uuid])
                .record;
            let up = r.guest.as_ref().is_some_and(|g| g.state == "up");
            (r.status.as_str() == "configured" && up).then_some(r)
        },
    );
    let _ = child.kill();
    let _ = child.wait();
    let r = res.unwrap();
    assert_eq!(
        r.guest.as_ref().and_then(|g| g.via.as_deref()),
        Some("http")
    );
    assert_eq!(param(&r, "site"), "elsewhere");
    assert_eq!(
        std::fs::read_to_string(root.path().join("etc/motd")).unwrap(),
        "federated"
    );
    let said = std::fs::read_to_string(root.path().join("cm-guest.log")).unwrap();
    assert!(
        said.contains("heartbeats every 1s to HTTP to the master"),
        "{said}"
    );
    assert!(!said.contains(secret), "the agent printed its secret");
}

/// Issue 9, point 11, in a real guest: a link planted where a config writes
/// is replaced, not written through; a link on the way fails the config;
/// a command writing far more than a pipe holds ends when it ends.
#[test]
fn a_config_neither_follows_planted_links_nor_hangs_on_output() {
    let mut cloud = Cloud::start().unwrap();
    cloud.add_host("h1", HostOpts::default()).unwrap();
    cloud.add_test_image().unwrap();
    let cfg = cloud.dir.path().join("c.toml");
    std::fs::write(&cfg, "#cm-guest\n").unwrap();
    cloud.cm_ok(&[
        "instance",
        "create",
        "fs",
        "--image",
        "cm-test",
        "--flavor",
        "m1.tiny",
        "--config",
        &cfg.to_string_lossy(),
    ]);
    let id = wait_status(&cloud, "fs", "configured", 1).uuid.to_string();
    // What a guest user could have left in a place the config writes to.
    let mut con = cloud.console("fs").unwrap();
    con.run(
        "mkdir -p /srv && ln -s /etc/passwd /srv/notes && ln -s /etc /srv/site && echo planted",
        Duration::from_secs(30),
    )
    .unwrap();
    std::fs::write(
        &cfg,
        "#cm-guest\n\
         [[file]]\npath = \"/srv/notes\"\ncontent = \"my notes\\n\"\n\
         [[command]]\nrun = \"head -c 400000 /dev/zero; head -c 400000 /dev/zero >&2\"\ntimeout_secs = 900\n",
    )
    .unwrap();
    let t = Instant::now();
    cloud.cm_ok(&["config", "set", &id, "--file", &cfg.to_string_lossy()]);
    wait_status(&cloud, "fs", "configured", 2);
    let took = t.elapsed();
    assert!(took < Duration::from_secs(300), "{took:?}");
    std::fs::write(
        &cfg,
        "#cm-guest\n[[file]]\npath = \"/srv/site/passwd\"\ncontent = \"root::0:0::/:/bin/sh\\n\"\n",
    )
    .unwrap();
    cloud.cm_ok(&["config", "set", &id, "--file", &cfg.to_string_lossy()]);
    let rec = wait_status(&cloud, "fs", "failed", 3);
    assert!(
        rec.reason
            .as_deref()
            .unwrap_or("")
            .contains("/srv/site is a symbolic link"),
        "{rec:?}"
    );
    let seen = con
        .run(
            "cat /etc/passwd; ls -l /srv/notes | cut -c1; cat /srv/notes",
            Duration::from_secs(30),
        )
        .unwrap();
    assert_eq!(
        seen.lines().collect::<Vec<_>>(),
        vec!["root:x:0:0:root:/root:/bin/sh", "-", "my notes"],
        "{seen}"
    );
    eprintln!("a command with 800 KB of output: configured in {took:?}");
}
