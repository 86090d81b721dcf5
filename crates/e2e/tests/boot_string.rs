//! Issue 3, point 2: `cm instance create --config FILE` registers a record
//! under the instance's uuid and hands `uuid:IP:port:secret` to the guest.
//! Issue 9, point 12: through a fw_cfg file, never on QEMU's command line:
//! no secret of the instance shows in `ps` on the host; the SMBIOS type 1
//! serial carries the cloud-init NoCloud seed with a credential of its own
//! that reads `/nocloud` only.

use cm_api::boot::{ConfigDetail, UpdateCache};
use std::time::Duration;
use test_infra::{Cloud, HostOpts};

const BOOT: Duration = Duration::from_secs(300);

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
    let id = i.id.to_string();
    // The record is registered under the instance's uuid.
    let rec: ConfigDetail = cloud.cm_as(&["config", "show", &id]);
    assert_eq!(rec.record.instance.as_deref(), Some("b1"));
    assert_eq!(rec.config.as_deref(), Some("# a config for the guest\n"));

    let mut con = cloud.console("b1").unwrap();
    con.wait_for_boot(BOOT).unwrap();
    // In fw_cfg (a 0600 file for QEMU), with the boot's re-key credential.
    let raw = con
        .run(
            "cat /sys/firmware/qemu_fw_cfg/by_name/opt/org.cloudmaster/boot/raw",
            Duration::from_secs(30),
        )
        .unwrap();
    let boot = raw
        .lines()
        .find_map(|l| l.trim().strip_prefix("cm.boot="))
        .unwrap_or_else(|| panic!("no cm.boot= in fw_cfg: {raw}"))
        .to_string();
    let rekey = raw
        .lines()
        .find_map(|l| l.trim().strip_prefix("cm.rekey="))
        .unwrap_or_else(|| panic!("no cm.rekey= in fw_cfg: {raw}"))
        .to_string();
    let parts: Vec<&str> = boot.split(':').collect();
    assert_eq!(parts.len(), 4, "{boot}");
    assert_eq!(parts[0], id);
    assert_eq!(
        parts[1], "10.0.2.2",
        "the guest reaches the local master through the user-mode gateway"
    );
    assert_eq!(parts[2], cloud.port.to_string());
    let secret = parts[3].to_string();
    // Nowhere else: not on the kernel command line, not in OEM strings.
    let cmdline = con
        .run("cat /proc/cmdline", Duration::from_secs(30))
        .unwrap();
    assert!(!cmdline.contains("cm.boot"), "{cmdline}");
    let oem = con
        .run(
            "cat /sys/firmware/dmi/entries/11-*/raw 2>/dev/null | strings; echo end",
            Duration::from_secs(30),
        )
        .unwrap();
    assert!(!oem.contains("cm.boot"), "{oem}");
    // Type 1 serial: the NoCloud seed, with a credential that is not the secret.
    let serial = con
        .run(
            "cat /sys/class/dmi/id/product_serial",
            Duration::from_secs(30),
        )
        .unwrap();
    let prefix = format!("ds=nocloud-net;s=http://{id}:");
    let suffix = format!("@10.0.2.2:{}/nocloud/{id}/", cloud.port);
    let nocloud = serial
        .trim()
        .strip_prefix(&prefix)
        .and_then(|r| r.strip_suffix(&suffix))
        .unwrap_or_else(|| panic!("serial {serial}"))
        .to_string();
    assert!(nocloud.len() >= 32 && nocloud != secret && nocloud != rekey);
    // The SMBIOS system UUID is still the instance's id.
    let product_uuid = con
        .run(
            "cat /sys/class/dmi/id/product_uuid",
            Duration::from_secs(30),
        )
        .unwrap();
    assert_eq!(product_uuid.trim(), id);

    // No process on the host shows any of them (QEMU's files are gone too).
    let seen = test_infra::procs::showing(&[&secret, &nocloud, &rekey]);
    assert!(seen.is_empty(), "secrets in ps: {seen:?}");
    let ps = test_infra::procs::ps_args();
    assert!(ps.contains(&format!("cm-{id}")), "no QEMU of b1 in ps");
    assert!(ps.contains("-fw_cfg name=opt/org.cloudmaster/boot,file="));
    for s in [&secret, &nocloud, &rekey] {
        assert!(!ps.contains(s.as_str()), "a secret in ps -eo args");
    }
    let vm_dir = cloud.host("h1").instance_dir(&id);
    assert!(!vm_dir.join("boot.fwcfg").exists() && !vm_dir.join("smbios-type1.bin").exists());

    // From inside the guest, through 10.0.2.2, the secret fetches the config
    // (raw HTTP: what a guest's wget sends is the point).
    let url = format!(
        "http://{id}:{secret}@10.0.2.2:{}/boot/v1/configs/{id}",
        cloud.port
    );
    let got = con
        .run(&format!("wget -q -O - {url}"), Duration::from_secs(60))
        .unwrap();
    assert!(got.contains("# a config for the guest"), "{got}");
    // The NoCloud credential reads NoCloud data, and nothing else. Raw HTTP
    // for /nocloud: cloud-init's datasource, which no cm-client route speaks.
    let base = format!("http://127.0.0.1:{}/nocloud/{id}", cloud.port);
    let nocloud_get = |file: &str, pass: &str| {
        reqwest::blocking::Client::new()
            .get(format!("{base}/{file}"))
            .basic_auth(&id, Some(pass))
            .send()
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    };
    assert_eq!(nocloud_get("meta-data", &nocloud), 200);
    let fetched = cloud.api().call(cm_client::api::boot::fetch(&id, &nocloud));
    assert_eq!(
        fetched.err().and_then(|e| e.status()).map(|s| s.as_u16()),
        Some(403)
    );
    assert_eq!(nocloud_get("meta-data", &rekey), 403);

    // The trust key is the guest's own: once it has reported, a mere holder
    // of the record's secret cannot replace it; this boot's re-key
    // credential (only in the VM's fw_cfg) can.
    test_infra::wait_until("b1's first update", BOOT, || {
        let rec: ConfigDetail = cloud.cm_as(&["config", "show", &id]);
        rec.record.trust_key_set.then_some(())
    })
    .unwrap();
    let api = cloud.api();
    let put = |rekey: Option<&str>, key: &str| {
        let body = UpdateCache {
            status: "configured".into(),
            trust_key: key.into(),
            rekey: rekey.map(str::to_string),
            my_conf_addr: None,
            parameter_map: Default::default(),
            reason: None,
            config_version: 0,
        };
        let r = api.call(cm_client::api::boot::update_status(&id, &secret, &body));
        let code = match &r {
            Ok(_) => 200,
            Err(e) => e.status().map(|s| s.as_u16()).unwrap_or(0),
        };
        (code, r)
    };
    let (code, err) = put(None, &"k".repeat(64));
    assert_eq!(code, 403, "{err:?}");
    let err = err.unwrap_err();
    assert_eq!(
        err.api().and_then(|a| a.error.field.as_deref()),
        Some("trust_key"),
        "{err}"
    );
    // Nor derive the guest's key from the secret and the public SMBIOS
    // uuid, as the key was made before (HMAC-SHA256(secret, uuid)).
    let derived = {
        use hmac::Mac;
        let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        m.update(id.as_bytes());
        hex::encode(m.finalize().into_bytes())
    };
    assert_eq!(put(None, &derived).0, 403);
    assert_eq!(put(Some(&nocloud), &"k".repeat(64)).0, 403);
    assert_eq!(put(Some(&rekey), &"k".repeat(64)).0, 200);
    assert_eq!(cloud.events(Some("config.trust")).len(), 1);
    // The secret is not in what the master shows.
    let shown = cloud.cm_ok(&["--json", "instance", "show", "b1"])
        + &cloud.cm_ok(&["--json", "config", "list"]);
    assert!(!shown.contains(&secret) && !shown.contains(&nocloud) && !shown.contains(&rekey));
}
