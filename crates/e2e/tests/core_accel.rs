//! Issue 2, point 7: `--accel kvm|tcg|auto`. `auto` is proven by a probe
//! boot of a real kernel under KVM; on these machines `/dev/kvm` exists but
//! nested KVM hangs, so the probe must fall back to TCG, and say why.

use cm_api::host::Host;
use cm_api::words::ResolvedAccel;
use std::time::Duration;
use test_infra::{image_dir, Cloud, HostOpts};

fn qemu_cmdline(pid: u32) -> String {
    String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/cmdline")).unwrap())
        .replace('\0', " ")
}

#[test]
fn auto_is_proven_by_a_probe_boot_and_instances_follow_it() {
    let mut cloud = Cloud::start().unwrap();
    let kernel = image_dir().join("vmlinuz");
    let opts = HostOpts {
        accel: "auto".into(),
        extra: vec![
            "--probe-kernel".into(),
            kernel.display().to_string(),
            "--kvm-probe-timeout".into(),
            "8".into(),
        ],
        ..Default::default()
    };
    cloud.add_host("h1", opts).unwrap();
    cloud.add_test_image().unwrap();
    let h: Host = cloud.cm_as(&["host", "show", "h1"]);
    let (accel, note) = (h.accel, h.accel_note.as_str());
    let kvm_usable = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    match accel {
        // Where KVM really works, the probe booted the kernel under it.
        ResolvedAccel::Kvm => assert!(note.contains("booted a kernel"), "{note}"),
        ResolvedAccel::Tcg if kvm_usable => assert!(note.contains("KVM probe failed"), "{note}"),
        ResolvedAccel::Tcg => assert!(note.contains("no usable /dev/kvm"), "{note}"),
    }

    // auto: what the probe found.
    cloud.cm_ok(&[
        "instance", "create", "a", "--image", "cm-test", "--flavor", "m1.tiny",
    ]);
    let i = cloud.instance("a").unwrap();
    assert_eq!((i.accel.as_str(), i.accel_used), ("auto", Some(accel)));
    assert!(qemu_cmdline(i.pid.unwrap()).contains(&format!("-accel {accel}")));
    cloud
        .console("a")
        .unwrap()
        .wait_for_boot(Duration::from_secs(120))
        .unwrap();

    // tcg: always TCG.
    cloud.cm_ok(&[
        "instance", "create", "t", "--image", "cm-test", "--flavor", "m1.tiny", "--accel", "tcg",
    ]);
    let i = cloud.instance("t").unwrap();
    assert_eq!(i.accel_used, Some(ResolvedAccel::Tcg));
    assert!(qemu_cmdline(i.pid.unwrap()).contains("-accel tcg"));

    // kvm: only on a host whose probe proved it; here a clear refusal.
    let out = cloud.cm(&[
        "instance", "create", "k", "--image", "cm-test", "--flavor", "m1.tiny", "--accel", "kvm",
    ]);
    if accel == ResolvedAccel::Tcg {
        assert_eq!(out.code, 1);
        assert!(
            out.stderr.contains("no working KVM")
                || out.stderr.contains("no ready host has working KVM"),
            "{}",
            out.stderr
        );
        assert!(out.stderr.contains("accel"), "{}", out.stderr);
    } else {
        assert_eq!(out.code, 0, "{}", out.stderr);
    }

    // The probe's answer is kept for this machine boot: a restart does not probe again.
    cloud.stop_host("h1", libc::SIGTERM);
    let cache = cloud.host("h1").data_dir.join("accel-probe.json");
    assert!(cache.exists());
    let t = std::time::Instant::now();
    cloud.restart_host("h1").unwrap();
    let log = cloud.host("h1").log();
    test_infra::wait_until(
        "the restarted agent to resolve accel",
        Duration::from_secs(30),
        || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            (text.matches("accel auto =").count() >= 2).then_some(())
        },
    )
    .unwrap();
    let h2: Host = cloud.cm_as(&["host", "show", "h1"]);
    assert_eq!(h2.accel_note, h.accel_note);
    assert!(
        t.elapsed() < Duration::from_secs(8),
        "probed again: {:?}",
        t.elapsed()
    );
}
