//! Issue 3, point 2: `cm instance create --config FILE` registers a record
//! under the instance's uuid and hands `uuid:IP:port:secret` to the guest on
//! the kernel command line and in an SMBIOS type 11 OEM string (type 1
//! serial carries the cloud-init NoCloud seed).

use std::time::Duration;
use test_infra::{Cloud, HostOpts};

const BOOT: Duration = Duration::from_secs(120);

#[test]
fn the_boot_string_reaches_the_guest_and_its_secret_fetches_the_config() {
    let mut cloud = Cloud::start().unwrap();
    cloud.add_host("h1", HostOpts::default()).unwrap();
    cloud.add_test_image().unwrap();
    let cfg = cloud.dir.path().join("guest.toml");
    std::fs::write(&cfg, "# a config for the guest\n").unwrap();
    cloud.cm_ok(&[
        "instance",
        "create",
        "b1",
        "--image",
        "cm-test",
        "--flavor",
        "m1.tiny",
        "--config",
        &cfg.to_string_lossy(),
    ]);
    let i = cloud.instance("b1").unwrap();
    let id = i["id"].as_str().unwrap().to_string();
    // The record is registered under the instance's uuid.
    let rec = cloud.cm_json(&["config", "show", &id]);
    assert_eq!(rec["instance"], "b1");
    assert_eq!(rec["config"], "# a config for the guest\n");

    let mut con = cloud.console("b1").unwrap();
    con.wait_for_boot(BOOT).unwrap();
    // Kernel image: on the command line.
    let cmdline = con
        .run("cat /proc/cmdline", Duration::from_secs(30))
        .unwrap();
    let boot = cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix("cm.boot="))
        .unwrap_or_else(|| panic!("no cm.boot= in {cmdline}"))
        .to_string();
    let parts: Vec<&str> = boot.split(':').collect();
    assert_eq!(parts.len(), 4, "{boot}");
    assert_eq!(parts[0], id);
    assert_eq!(
        parts[1], "10.0.2.2",
        "the guest reaches the local master through the user-mode gateway"
    );
    assert_eq!(parts[2], cloud.port.to_string());
    let secret = parts[3];
    // And in an SMBIOS type 11 OEM string (what disk images read).
    let oem = con
        .run(
            "strings /sys/firmware/dmi/entries/11-0/raw",
            Duration::from_secs(30),
        )
        .unwrap();
    assert!(oem.contains(&format!("cm.boot={boot}")), "{oem}");
    // Type 1 serial: the NoCloud seed, with the same credentials.
    let serial = con
        .run(
            "cat /sys/class/dmi/id/product_serial",
            Duration::from_secs(30),
        )
        .unwrap();
    assert_eq!(
        serial.trim(),
        format!(
            "ds=nocloud-net;s=http://{id}:{secret}@10.0.2.2:{}/nocloud/{id}/",
            cloud.port
        )
    );
    // The SMBIOS system UUID is the instance's id.
    let product_uuid = con
        .run(
            "cat /sys/class/dmi/id/product_uuid",
            Duration::from_secs(30),
        )
        .unwrap();
    assert_eq!(product_uuid.trim(), id);

    // From inside the guest, through 10.0.2.2, the secret fetches the config.
    let url = format!(
        "http://{id}:{secret}@10.0.2.2:{}/boot/v1/configs/{id}",
        cloud.port
    );
    let got = con
        .run(&format!("wget -q -O - {url}"), Duration::from_secs(60))
        .unwrap();
    assert!(got.contains("# a config for the guest"), "{got}");
    // The secret is not in what the master shows.
    let shown = cloud.cm_ok(&["--json", "instance", "show", "b1"])
        + &cloud.cm_ok(&["--json", "config", "list"]);
    assert!(!shown.contains(secret));
}
