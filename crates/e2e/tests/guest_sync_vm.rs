//! Issue 12, point 6 (seed 002's "rsync + inotify" method): cm-guest in a
//! real (TCG) guest keeps `/srv/data` copied to `/mnt/copy` with `[[sync]]`.
//! A file written in the guest (through its serial console) is in the copy
//! within seconds (the delay is printed), excludes hold, deletions follow,
//! the sync is reported as the service `sync:/srv/data` through `cm
//! instance show`, and a config without it stops it. Driven as a user: the
//! real `cm` with the master's pointer file and a home of its own.
//! `/mnt/copy` is a plain directory here: attachable volumes are tested on
//! their own (docs/storage.md).

use cm_api::instance::Instance;
use cm_api::words::{KnownConfigStatus, KnownServiceStatus};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use test_infra::console::Console;
use test_infra::deploy::DeployUser;
use test_infra::{image_dir, wait_until, Cloud, HostOpts};

const BOOT: Duration = Duration::from_secs(120);
/// A command typed on the serial console.
const TYPED: Duration = Duration::from_secs(30);
const SYNC: &str = "sync:/srv/data";

const CONFIG: &str = r#"#cm-guest
[[command]]
run = "mkdir -p /srv/data /mnt/copy && echo seed > /srv/data/seed"

[[sync]]
source = "/srv/data"
target = "/mnt/copy"
delay_ms = 200
exclude = ["*.tmp"]
"#;

/// The console of `name`, through its socket on its host.
fn console(cloud: &Cloud, user: &DeployUser, name: &str) -> Console {
    let i = user.instance(name);
    let host = i.host.expect("the instance has a host");
    let dir = cloud.host(&host).instance_dir(&i.id.to_string());
    Console::connect(&dir.join("console.sock"), &dir.join("console.log")).expect("the console")
}

/// The sync's service in the instance's last heartbeat: running?, detail.
fn sync_state(i: &Instance) -> Option<(bool, String)> {
    i.guest.services.iter().find(|s| s.name == SYNC).map(|s| {
        (
            s.state == KnownServiceStatus::Running,
            s.detail.clone().unwrap_or_default(),
        )
    })
}

/// Run `cmd` in the guest until its output satisfies `ok`.
fn guest_until(con: &mut Console, what: &str, cmd: &str, ok: impl Fn(&str) -> bool) -> String {
    wait_until(what, Duration::from_secs(60), || {
        con.run(cmd, TYPED).ok().filter(|o| ok(o))
    })
    .unwrap_or_else(|e| panic!("{e}: {}", con.run(cmd, TYPED).unwrap_or_default()))
}

#[test]
fn a_sync_copies_what_the_guest_writes_within_seconds() {
    let mut cloud = Cloud::start().unwrap();
    cloud.add_host("h1", HostOpts::default()).unwrap();
    let user = DeployUser::new(&cloud, "sync-user");
    let img = image_dir();
    user.ok(&[
        "image",
        "add",
        "cm-test",
        "--kernel",
        &img.join("vmlinuz").to_string_lossy(),
        "--initrd",
        &img.join("initrd.img").to_string_lossy(),
        "--cmdline",
        "quiet",
    ]);
    let cfg: PathBuf = cloud.dir.path().join("sync.toml");
    std::fs::write(&cfg, CONFIG).unwrap();
    let t = Instant::now();
    user.ok(&[
        "instance",
        "create",
        "sv",
        "--image",
        "cm-test",
        "--flavor",
        "m1.tiny",
        "--config",
        &cfg.to_string_lossy(),
    ]);
    // Configured, and the sync's first full run reported in a heartbeat.
    let i = wait_until("the sync running in a heartbeat", BOOT, || {
        Some(user.instance("sv")).filter(|i| sync_state(i).is_some_and(|(running, _)| running))
    })
    .unwrap_or_else(|e| panic!("{e}: {:?}", user.instance("sv").guest));
    println!("create -> sync running: {:?}", t.elapsed());
    assert_eq!(
        i.config_status,
        Some(KnownConfigStatus::Configured.into()),
        "{i:?}"
    );
    let (_, detail) = sync_state(&i).unwrap();
    assert!(detail.starts_with("last run: 1 file"), "{detail}");
    let shown = user.ok(&["instance", "show", "sv"]);
    assert!(
        shown.contains("sync:/srv/data: running (last run:"),
        "{shown}"
    );

    let mut con = console(&cloud, &user, "sv");
    con.wait_for_boot(BOOT).unwrap();
    let v = con.run("rsync --version | head -n 1", TYPED).unwrap();
    assert!(v.starts_with("rsync  version"), "{v}");
    assert_eq!(con.run("cat /mnt/copy/seed", TYPED).unwrap(), "seed");

    // Written in the guest; timed there (in /proc/uptime's 10 ms steps) by
    // a loop in the background, so a slow console does not count.
    con.run(
        "(t0=$(cut -d' ' -f1 /proc/uptime); echo hello-sync > /srv/data/new.txt; \
          mkdir -p /srv/data/sub; echo deep > /srv/data/sub/f; echo x > /srv/data/skip.tmp; \
          i=0; while [ ! -e /mnt/copy/sub/f ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done; \
          echo \"$t0 $(cut -d' ' -f1 /proc/uptime)\" > /run/sync-delay) & :",
        TYPED,
    )
    .unwrap();
    let times = guest_until(&mut con, "the timing loop", "cat /run/sync-delay", |o| {
        o.split_whitespace().count() == 2
    });
    let v: Vec<f64> = times
        .split_whitespace()
        .map(|x| x.parse().expect("uptime seconds"))
        .collect();
    let delay = v[1] - v[0];
    println!("written in the guest -> in /mnt/copy: {delay:.2}s (delay_ms = 200, TCG)");
    assert!(delay < 30.0, "{delay}s");
    assert_eq!(
        con.run("cat /mnt/copy/new.txt", TYPED).unwrap(),
        "hello-sync"
    );
    assert_eq!(con.run("cat /mnt/copy/sub/f", TYPED).unwrap(), "deep");
    assert_eq!(
        con.run("ls /mnt/copy/skip.tmp 2>/dev/null | wc -l", TYPED)
            .unwrap(),
        "0",
        "an excluded file was copied"
    );

    // A deletion follows. Nothing is typed on the console until the
    // guest's heartbeat says the run that deleted it ended: the run's
    // console line is then written while no command echoes (typed
    // characters echo between the line's pieces on the shared serial
    // console, which once cut the line in two).
    con.run("rm /srv/data/new.txt", TYPED).unwrap();
    wait_until("the deletion's run in the heartbeats", BOOT, || {
        let i = user.instance("sv");
        sync_state(&i).filter(|(_, d)| d.contains("1 deleted"))
    })
    .unwrap_or_else(|e| panic!("{e}: {:?}", user.instance("sv").guest));
    std::thread::sleep(Duration::from_secs(1));
    guest_until(
        &mut con,
        "the deletion in the copy",
        "ls /mnt/copy/new.txt 2>/dev/null | wc -l",
        |o| o == "0",
    );

    // A config without the sync stops it: gone from the heartbeats, and a
    // new file stays where it was written.
    let id = i.id.to_string();
    std::fs::write(&cfg, "#cm-guest\n[parameters]\nsync = \"off\"\n").unwrap();
    user.ok(&["config", "set", &id, "--file", &cfg.to_string_lossy()]);
    wait_until("the sync gone from the heartbeats", BOOT, || {
        Some(user.instance("sv")).filter(|i| sync_state(i).is_none())
    })
    .unwrap_or_else(|e| panic!("{e}: {:?}", user.instance("sv").guest));
    con.run("echo late > /srv/data/late", TYPED).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        con.run("ls /mnt/copy/late 2>/dev/null | wc -l", TYPED)
            .unwrap(),
        "0",
        "a stopped sync still copies"
    );
    let said = user.ok(&["instance", "console", "sv"]);
    for line in [
        "cm-guest: sync /srv/data -> /mnt/copy: 1 file in ",
        "cm-guest: sync /srv/data -> /mnt/copy: 0 files, 1 deleted in ",
        "cm-guest: sync /srv/data -> /mnt/copy: stopped",
    ] {
        assert!(said.contains(line), "no {line:?} on the console:\n{said}");
    }
}
