//! Issue 2, points 3, 4 and 5: images, flavors honoured inside the guest,
//! and the whole life of an instance on real QEMU.

use cm_api::image::{FileRole, Image, ImageKind};
use cm_api::instance::{Instance, InstanceState};
use cm_api::operation::{Operation, OperationStatus};
use cm_api::words::{EventKind, OperationKind};
use serde_json::Value;
use std::io::{Read, Write};
use std::process::Command;
use std::time::{Duration, Instant};
use test_infra::{image_dir, wait_until, Cloud, HostOpts};

const BOOT: Duration = Duration::from_secs(120);

fn sha256(path: &std::path::Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// The kernel's own count of the RAM it was given: "Memory: 93788K/130552K available".
fn ram_kib(dmesg_line: &str) -> u64 {
    let total = dmesg_line.split('/').nth(1).unwrap_or("");
    total
        .trim_end_matches(|c: char| !c.is_ascii_digit())
        .split('K')
        .next()
        .unwrap()
        .parse()
        .unwrap_or(0)
}

#[test]
fn flavors_are_honoured_inside_the_guest() {
    let mut cloud = Cloud::start().unwrap();
    cloud.add_host("h1", HostOpts::default()).unwrap();
    cloud.add_test_image().unwrap();
    cloud.cm_ok(&[
        "instance", "create", "tiny", "--image", "cm-test", "--flavor", "m1.tiny",
    ]);
    cloud.cm_ok(&[
        "instance", "create", "custom", "--image", "cm-test", "--memory", "256M", "--vcpus", "2",
    ]);
    for (name, mib, cpus) in [("tiny", 128u64, 1u32), ("custom", 256, 2)] {
        let i = cloud.instance(name).unwrap();
        assert_eq!((i.memory_mib, i.vcpus), (mib, cpus));
        let mut con = cloud.console(name).unwrap();
        con.wait_for_boot(BOOT).unwrap();
        let meminfo = con
            .run("head -1 /proc/meminfo", Duration::from_secs(20))
            .unwrap();
        let nproc = con.run("nproc", Duration::from_secs(20)).unwrap();
        let mem_line = con
            .run("dmesg | grep 'Memory:'", Duration::from_secs(20))
            .unwrap();
        assert_eq!(nproc.trim(), cpus.to_string(), "{name}: nproc");
        let total_kb: u64 = meminfo.split_whitespace().nth(1).unwrap().parse().unwrap();
        // MemTotal is what is left after the kernel's own image and tables.
        assert!(
            total_kb < mib * 1024 && total_kb > (mib - 64) * 1024,
            "{name}: {meminfo}"
        );
        // The RAM the kernel found is what was asked, less the BIOS holes (<2 MiB).
        let ram = ram_kib(&mem_line);
        assert!(
            ram <= mib * 1024 && ram >= mib * 1024 - 2048,
            "{name}: {mem_line} ({ram} KiB for {mib} MiB)"
        );
    }
}

#[test]
fn an_instance_lives_its_whole_life() {
    let mut cloud = Cloud::start().unwrap();
    cloud.add_host("h1", HostOpts::default()).unwrap();
    cloud.add_test_image().unwrap();

    // The image: size and sha256 recorded, equal to the files.
    let img: Image = cloud.cm_as(&["image", "show", "cm-test"]);
    assert_eq!(img.kind, ImageKind::Kernel);
    let kernel = img.file(FileRole::Kernel).unwrap();
    let k = image_dir().join("vmlinuz");
    assert_eq!(kernel.size, std::fs::metadata(&k).unwrap().len());
    assert_eq!(kernel.sha256, sha256(&k));

    // Create, with a port forward; cm waits for the operation.
    let port = test_infra::free_port();
    let t = Instant::now();
    let created: Instance = cloud.cm_as(&[
        "instance",
        "create",
        "web",
        "--image",
        "cm-test",
        "--flavor",
        "m1.tiny",
        "--port",
        &format!("80:{port}"),
    ]);
    assert_eq!(created.state, InstanceState::Running, "{created:?}");
    assert!(t.elapsed() < Duration::from_secs(30));
    let id = created.id.to_string();
    let dir = cloud.host("h1").instance_dir(&id);
    let mut con = cloud.console("web").unwrap();
    con.wait_for_boot(BOOT).unwrap();

    // The host cached the image once.
    let cached = cloud
        .host("h1")
        .data_dir
        .join("images")
        .join(img.id.to_string())
        .join("kernel");
    let mtime = std::fs::metadata(&cached).unwrap().modified().unwrap();

    // The port forward reaches the guest: a web server in it, from the console.
    con.run(
        "mkdir -p /www && echo hello-from-guest > /www/index.html && httpd -p 80 -h /www",
        Duration::from_secs(20),
    )
    .unwrap();
    let body = wait_until(
        "the forwarded port to answer",
        Duration::from_secs(30),
        || {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
            s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
            s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n").ok()?;
            let mut buf = String::new();
            s.read_to_string(&mut buf).ok()?;
            buf.contains("hello-from-guest").then_some(buf)
        },
    )
    .unwrap();
    assert!(body.contains("200"), "{body}");

    // console: the serial log through the master.
    let log = cloud.cm_ok(&["instance", "console", "web"]);
    assert!(log.contains("cm-init: ready"), "{log}");

    // stop: an ACPI shutdown the guest honours.
    let t = Instant::now();
    let stopped: Operation = cloud.cm_as(&["instance", "stop", "web"]);
    assert_eq!(stopped.status, OperationStatus::Succeeded, "{stopped:?}");
    let i = cloud.instance("web").unwrap();
    assert_eq!(
        (i.state, i.reason.as_deref()),
        (InstanceState::Stopped, Some("stopped")),
        "{i:?}"
    );
    assert!(
        t.elapsed() < Duration::from_secs(25),
        "ACPI shutdown took {:?}",
        t.elapsed()
    );
    assert!(cloud.qemu_pids().is_empty(), "QEMU is gone after a stop");

    // start again; the same disk-less kernel image boots again.
    drop(con);
    cloud.cm_ok(&["instance", "start", "web"]);
    assert_eq!(cloud.instance("web").unwrap().state, InstanceState::Running);
    let con = cloud.console("web").unwrap();
    con.expect("cm-init: ready", BOOT).unwrap();

    // reboot: a reset of the running VM (the same QEMU boots again).
    let pid = cloud.qemu_pids();
    cloud.cm_ok(&["instance", "reboot", "web"]);
    let booted = wait_until("a second boot after the reset", BOOT, || {
        (con.text().matches("cm-init: ready").count() >= 2).then_some(())
    });
    booted.unwrap();
    assert_eq!(cloud.qemu_pids(), pid, "reboot resets the VM in place");

    // stop of a guest that ignores ACPI: forced off after the timeout.
    let mut con = con;
    con.run("killall acpid", Duration::from_secs(20)).unwrap();
    drop(con);
    let t = Instant::now();
    let out: Operation = cloud.cm_as(&["instance", "stop", "web", "--stop-timeout", "3"]);
    assert_eq!(out.status, OperationStatus::Succeeded);
    assert!(
        t.elapsed() >= Duration::from_secs(3),
        "forced before the timeout: {:?}",
        t.elapsed()
    );
    let i = cloud.instance("web").unwrap();
    assert_eq!(i.reason.as_deref(), Some("stopped (forced off)"), "{i:?}");
    // Starting it did not fetch the image again.
    assert_eq!(
        std::fs::metadata(&cached).unwrap().modified().unwrap(),
        mtime
    );

    // delete: every file goes.
    assert!(dir.exists());
    cloud.cm_ok(&["instance", "delete", "web"]);
    assert!(
        cloud.instance("web").is_none(),
        "deleted instances are gone"
    );
    assert!(!dir.exists(), "{} is left behind", dir.display());
    let events = cloud.events(None);
    for kind in [
        EventKind::InstanceCreated,
        EventKind::InstanceStop,
        EventKind::InstanceStart,
        EventKind::InstanceReboot,
        EventKind::InstanceDelete,
        EventKind::InstanceDeleted,
    ] {
        assert!(events.iter().any(|e| e.kind == kind), "no {kind} event");
    }
}

#[test]
fn disk_images_get_a_qcow2_overlay_removed_on_delete() {
    let mut cloud = Cloud::start().unwrap();
    cloud.add_host("h1", HostOpts::default()).unwrap();
    let base = cloud.dir.path().join("base.qcow2");
    let ok = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&base)
        .arg("64M")
        .status()
        .unwrap();
    assert!(ok.success());
    cloud.cm_ok(&["image", "add", "blank", "--disk", &base.to_string_lossy()]);
    let img: Image = cloud.cm_as(&["image", "show", "blank"]);
    assert_eq!(img.kind, ImageKind::Disk);
    assert_eq!(img.files[0].format.as_deref(), Some("qcow2"));
    assert_eq!(img.files[0].virtual_size, Some(64 << 20));
    // A raw non-image and a missing file are refused.
    let junk = cloud.dir.path().join("notes.txt");
    std::fs::write(&junk, "hello").unwrap();
    // (cm uploads local files: a missing one is its own error, code 5.)
    let out = cloud.cm(&["image", "add", "missing", "--disk", "/nonexistent.qcow2"]);
    assert_eq!(out.code, 5, "{}", out.stderr);

    // m1.small asks for a 10 GiB root disk: the overlay is grown to it.
    cloud.cm_ok(&[
        "instance", "create", "d1", "--image", "blank", "--flavor", "m1.small", "--memory", "128",
    ]);
    let i = cloud.instance("d1").unwrap();
    assert_eq!(i.state, InstanceState::Running);
    let dir = cloud.host("h1").instance_dir(&i.id.to_string());
    let info = Command::new("qemu-img")
        .args(["info", "--output=json", "-U"])
        .arg(dir.join("disk.qcow2"))
        .output()
        .unwrap();
    let info: Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(info["format"], "qcow2");
    assert_eq!(info["virtual-size"], 10u64 << 30);
    let backing = info["backing-filename"].as_str().unwrap();
    assert!(backing.ends_with(&format!("{}/disk", img.id)), "{backing}");

    cloud.cm_ok(&["instance", "delete", "d1"]);
    assert!(!dir.join("disk.qcow2").exists());
    // An image in use cannot be deleted; an unused one can.
    cloud.cm_ok(&["image", "delete", "blank"]);
}

#[test]
fn slow_actions_return_operations_to_wait_on() {
    let mut cloud = Cloud::start().unwrap();
    cloud.add_host("h1", HostOpts::default()).unwrap();
    cloud.add_test_image().unwrap();
    let op: Operation = cloud.cm_as(&[
        "instance",
        "create",
        "o1",
        "--image",
        "cm-test",
        "--flavor",
        "m1.tiny",
        "--no-wait",
    ]);
    assert_eq!(op.kind, OperationKind::InstanceCreate);
    let id = op.id.to_string();
    let done: Operation = cloud.cm_as(&["operation", "wait", &id]);
    assert_eq!(done.status, OperationStatus::Succeeded, "{done:?}");
    assert_eq!(done.progress, "running");
    // A start of a running instance is an operation that is done at once.
    let again: Operation = cloud.cm_as(&["instance", "start", "o1"]);
    assert_eq!(again.status, OperationStatus::Succeeded);
    let ops: Vec<Operation> = cloud.cm_as(&["operation", "list"]);
    assert!(ops.len() >= 2);
    // An image in use cannot be deleted.
    let out = cloud.cm(&["image", "delete", "cm-test"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("used by instances: o1"),
        "{}",
        out.stderr
    );
}
