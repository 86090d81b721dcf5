//! Issue 3, points 1, 6 and 8: the rendezvous cache (`/v1/configs`, `cm
//! config`) with the seed's operations, its secrets, and stale entries.

use serde_json::{json, Value};
use std::time::{Duration, Instant};
use test_infra::{http, wait_until, Cloud, HostOpts, MasterOpts};

/// A guest-side call with Basic credentials.
fn as_guest(
    cloud: &Cloud,
    method: &str,
    path: &str,
    user: &str,
    secret: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let client = reqwest::blocking::Client::new();
    let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = client
        .request(m, format!("{}{path}", cloud.url))
        .basic_auth(user, Some(secret));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().unwrap();
    let status = resp.status().as_u16();
    let bytes = resp.bytes().unwrap();
    (
        status,
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into())),
    )
}

fn fetch(cloud: &Cloud, uuid: &str, secret: &str) -> (u16, Vec<u8>) {
    let resp = reqwest::blocking::Client::new()
        .get(format!("{}/boot/v1/configs/{uuid}", cloud.url))
        .basic_auth(uuid, Some(secret))
        .send()
        .unwrap();
    (resp.status().as_u16(), resp.bytes().unwrap().to_vec())
}

#[test]
fn the_cache_speaks_the_seeds_operations() {
    let cloud = Cloud::start().unwrap();
    // pre_register: the secret comes back once, with a boot string.
    let reg = cloud.cm_json(&[
        "config",
        "pre-register",
        "--text",
        "role = \"db\"\n",
        "--param",
        "tier=1",
    ]);
    let uuid = reg["record"]["uuid"].as_str().unwrap().to_string();
    let secret = reg["secret"].as_str().unwrap().to_string();
    assert_eq!(
        reg["boot_string"],
        format!("{uuid}:10.0.2.2:{}:{secret}", cloud.port)
    );
    // The seed's alias works too.
    let reg2 = cloud.cm_json(&["config", "pre_register", "--text", "x", "--domain", "batch"]);
    assert_eq!(reg2["record"]["domain"], "batch");

    // list/show: the seed's Config fields, never the secret.
    let list = cloud.cm_json(&["config", "list"]);
    let rec = list
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["uuid"] == uuid.as_str())
        .unwrap()
        .clone();
    for field in [
        "uuid",
        "my_conf_addr",
        "status",
        "parameter_map",
        "config_hosts",
        "dynamic",
        "domain",
    ] {
        assert!(
            rec.get(field).is_some() || field == "my_conf_addr",
            "{field} missing: {rec}"
        );
    }
    assert_eq!(rec["status"], "registered");
    assert_eq!(rec["parameter_map"]["tier"], "1");
    assert_eq!(
        rec["config_hosts"],
        json!([format!("10.0.2.2:{}", cloud.port)])
    );
    let shown = cloud.cm_json(&["config", "show", &uuid]);
    assert_eq!(shown["config"], "role = \"db\"\n");
    let table = cloud.cm_ok(&["config", "list"]);
    assert!(!table.contains(&secret) && !shown.to_string().contains(&secret));

    // The guest fetches it, and update_cache records address, parameters, status.
    let (s, body) = fetch(&cloud, &uuid, &secret);
    assert_eq!((s, body.as_slice()), (200, b"role = \"db\"\n".as_slice()));
    assert_eq!(
        cloud.cm_json(&["config", "show", &uuid])["status"],
        "fetched"
    );
    let trust = "t".repeat(32);
    let upd = json!({"my_conf_addr": "10.0.2.15", "parameter_map": {"port": "5432"}, "status": "configured", "config_version": 1, "trust_key": trust});
    let (s, _) = as_guest(
        &cloud,
        "PUT",
        &format!("/boot/v1/configs/{uuid}/status"),
        &uuid,
        &secret,
        Some(upd),
    );
    assert_eq!(s, 200);
    let rec = cloud.cm_json(&["config", "show", &uuid]);
    assert_eq!(
        (rec["status"].as_str(), rec["my_conf_addr"].as_str()),
        (Some("configured"), Some("10.0.2.15"))
    );
    assert_eq!(rec["parameter_map"]["port"], "5432");
    assert_eq!(rec["trust_key_set"], true);
    // cm update-cache (the seed's update_cache by hand) with the same trust key.
    cloud.cm_ok(&[
        "config",
        "update_cache",
        &uuid,
        "--secret",
        &secret,
        "--trust-key",
        &trust,
        "--status",
        "degraded",
        "--reason",
        "disk full",
    ]);
    let rec = cloud.cm_json(&["config", "show", &uuid]);
    assert_eq!(
        (rec["status"].as_str(), rec["reason"].as_str()),
        (Some("degraded"), Some("disk full"))
    );

    // A new body: a guest long-polling for it gets it at once.
    let (tx, rx) = std::sync::mpsc::channel();
    let (url, u2, s2) = (cloud.url.clone(), uuid.clone(), secret.clone());
    std::thread::spawn(move || {
        let t = Instant::now();
        let resp = reqwest::blocking::Client::new()
            .get(format!("{url}/boot/v1/configs/{u2}?after=1&wait=30"))
            .basic_auth(&u2, Some(&s2))
            .send()
            .unwrap();
        let v = resp.headers()["x-config-version"]
            .to_str()
            .unwrap()
            .to_string();
        let _ = tx.send((
            resp.status().as_u16(),
            v,
            resp.bytes().unwrap().to_vec(),
            t.elapsed(),
        ));
    });
    std::thread::sleep(Duration::from_millis(500));
    cloud.cm_ok(&["config", "set", &uuid, "--text", "role = \"primary\"\n"]);
    let (status, version, body, took) = rx.recv_timeout(Duration::from_secs(20)).unwrap();
    assert_eq!(
        (status, version.as_str(), body.as_slice()),
        (200, "2", b"role = \"primary\"\n".as_slice())
    );
    assert!(
        took < Duration::from_secs(10),
        "the long-poll took {took:?}"
    );
    // Nothing new: 304 after the wait.
    let resp = reqwest::blocking::Client::new()
        .get(format!(
            "{}/boot/v1/configs/{uuid}?after=2&wait=1",
            cloud.url
        ))
        .basic_auth(&uuid, Some(&secret))
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 304);

    // remove.
    cloud.cm_ok(&["config", "remove", &uuid]);
    assert_eq!(fetch(&cloud, &uuid, &secret).0, 403);
    assert!(cloud
        .cm(&["config", "show", &uuid])
        .stderr
        .contains("not found"));
}

#[test]
fn bodies_are_binary_safe_up_to_two_mib() {
    let cloud = Cloud::start().unwrap();
    let body: Vec<u8> = (0..(1usize << 20) + 12345)
        .map(|i| u8::try_from(i * 7 % 256).unwrap_or(0))
        .collect();
    let file = cloud.dir.path().join("blob.bin");
    std::fs::write(&file, &body).unwrap();
    let reg = cloud.cm_json(&["config", "pre-register", "--file", &file.to_string_lossy()]);
    let (uuid, secret) = (
        reg["record"]["uuid"].as_str().unwrap(),
        reg["secret"].as_str().unwrap(),
    );
    assert_eq!(reg["record"]["config_size"], body.len());
    let (s, got) = fetch(&cloud, uuid, secret);
    assert_eq!(s, 200);
    assert!(got == body, "the body came back changed");
    let out = std::process::Command::new(test_infra::bin("cm"))
        .args(["config", "show", uuid, "--raw"])
        .env("CM_URL", &cloud.url)
        .env("CM_TOKEN", &cloud.token)
        .output()
        .unwrap();
    assert!(out.stdout == body, "cm config show --raw changed the body");
    // Over the limit: refused, nothing written.
    let big = vec![b'a'; 2 * 1024 * 1024 + 1];
    let (s, e) = http(
        "POST",
        &format!("{}/v1/configs", cloud.url),
        Some(&cloud.token),
        Some((
            "application/json",
            serde_json::to_vec(&json!({"config": String::from_utf8(big).unwrap()})).unwrap(),
        )),
    );
    assert_eq!(
        (s, e["error"]["field"].as_str()),
        (400, Some("config")),
        "{e}"
    );
    assert_eq!(
        cloud.cm_json(&["config", "list"]).as_array().unwrap().len(),
        1
    );
}

#[test]
fn assign_dynamic_is_first_come_first_served_beside_fixed_records() {
    let cloud = Cloud::start().unwrap();
    let dom = cloud.cm_json(&["config", "domain", "create", "pool"]);
    let dsecret = dom["secret"].as_str().unwrap().to_string();
    assert!(dom["boot_string"]
        .as_str()
        .unwrap()
        .starts_with("@pool:10.0.2.2:"));
    let mut dynamic = Vec::new();
    for n in 0..5 {
        let r = cloud.cm_json(&[
            "config",
            "pre-register",
            "--text",
            &format!("member {n}"),
            "--domain",
            "pool",
            "--dynamic",
        ]);
        dynamic.push(r["record"]["uuid"].as_str().unwrap().to_string());
    }
    let fixed = cloud.cm_json(&[
        "config",
        "pre-register",
        "--text",
        "fixed",
        "--domain",
        "pool",
    ]);
    // Ten callers race for the five dynamic records.
    let handles: Vec<_> = (0..10)
        .map(|_| {
            let (url, d) = (cloud.url.clone(), dsecret.clone());
            std::thread::spawn(move || {
                let resp = reqwest::blocking::Client::new()
                    .post(format!("{url}/boot/v1/assign"))
                    .basic_auth("pool", Some(&d))
                    .json(&json!({"domain": "pool"}))
                    .send()
                    .unwrap();
                (resp.status().as_u16(), resp.json::<Value>().unwrap())
            })
        })
        .collect();
    let results: Vec<(u16, Value)> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let mut got: Vec<String> = results
        .iter()
        .filter(|(s, _)| *s == 200)
        .map(|(_, v)| v["uuid"].as_str().unwrap().to_string())
        .collect();
    let refused: Vec<&Value> = results
        .iter()
        .filter(|(s, _)| *s == 409)
        .map(|(_, v)| v)
        .collect();
    assert_eq!(got.len(), 5, "{results:?}");
    assert_eq!(refused.len(), 5);
    for r in refused {
        assert_eq!(r["error"]["code"], "none_left");
        assert!(r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("none left"));
    }
    got.sort();
    got.dedup();
    let mut want = dynamic.clone();
    want.sort();
    assert_eq!(
        got, want,
        "every dynamic record once, none twice, no fixed one"
    );
    // The assigned secret is the record's: it fetches its own config.
    let (_, first) = results.iter().find(|(s, _)| *s == 200).unwrap();
    let (s, body) = fetch(
        &cloud,
        first["uuid"].as_str().unwrap(),
        first["secret"].as_str().unwrap(),
    );
    assert_eq!(s, 200);
    assert!(String::from_utf8(body).unwrap().starts_with("member "));
    let fixed_rec = cloud.cm_json(&["config", "show", fixed["record"]["uuid"].as_str().unwrap()]);
    assert_eq!(
        (fixed_rec["dynamic"].as_bool(), fixed_rec["status"].as_str()),
        (Some(false), Some("registered"))
    );
    let domains = cloud.cm_json(&["config", "domain", "list"]);
    assert_eq!(
        (
            domains[0]["dynamic_total"].as_u64(),
            domains[0]["dynamic_free"].as_u64()
        ),
        (Some(5), Some(0))
    );
    // A wrong domain secret: 403, nothing handed out.
    let (s, _) = as_guest(
        &cloud,
        "POST",
        "/boot/v1/assign",
        "pool",
        "nope",
        Some(json!({"domain": "pool"})),
    );
    assert_eq!(s, 403);
    let out = cloud.cm(&[
        "config",
        "assign_dynamic",
        "--domain",
        "pool",
        "--domain-secret",
        &dsecret,
    ]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("none left"), "{}", out.stderr);
}

#[test]
fn secrets_are_hashed_checked_alike_and_never_shown() {
    // 400 failed logins from one address below: lift the per-address limit
    // on failures (master_limits.rs tests it), or most would be 429s.
    let cloud = Cloud::start_with(MasterOpts {
        extra: vec!["--auth-fail-burst".into(), "100000".into()],
        ..Default::default()
    })
    .unwrap();
    let reg = cloud.cm_json(&["config", "pre-register", "--text", "s"]);
    let (uuid, secret) = (
        reg["record"]["uuid"].as_str().unwrap().to_string(),
        reg["secret"].as_str().unwrap().to_string(),
    );
    let dom = cloud.cm_json(&["config", "domain", "create", "d1"]);
    let dsecret = dom["secret"].as_str().unwrap().to_string();

    // A wrong secret and an unknown uuid: the same 403.
    let unknown = uuid::Uuid::new_v4().to_string();
    let wrong = as_guest(
        &cloud,
        "GET",
        &format!("/boot/v1/configs/{uuid}"),
        &uuid,
        "wrong",
        None,
    );
    let missing = as_guest(
        &cloud,
        "GET",
        &format!("/boot/v1/configs/{unknown}"),
        &unknown,
        &secret,
        None,
    );
    assert_eq!(wrong.0, 403);
    assert_eq!(wrong, missing, "different answers give the record away");
    let no_auth = http(
        "GET",
        &format!("{}/boot/v1/configs/{uuid}", cloud.url),
        None,
        None,
    );
    assert_eq!(no_auth.0, 403);
    // ... and the same time: interleaved, the medians stay close.
    let time = |u: &str, s: &str| {
        let t = Instant::now();
        let _ = as_guest(&cloud, "GET", &format!("/boot/v1/configs/{u}"), u, s, None);
        t.elapsed()
    };
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..200 {
        a.push(time(&uuid, "wrong-secret-wrong-secret"));
        b.push(time(&unknown, "wrong-secret-wrong-secret"));
    }
    a.sort();
    b.sort();
    let (ma, mb) = (a[100].as_secs_f64(), b[100].as_secs_f64());
    let ratio = ma.max(mb) / ma.min(mb);
    eprintln!(
        "403 median: wrong secret {:.0} µs, unknown uuid {:.0} µs",
        ma * 1e6,
        mb * 1e6
    );
    assert!(
        ratio < 1.5,
        "wrong secret {ma:.6}s vs unknown uuid {mb:.6}s"
    );

    // update_cache carries the trust key of the first update.
    let upd = |key: &str| json!({"status": "configured", "trust_key": key});
    let path = format!("/boot/v1/configs/{uuid}/status");
    assert_eq!(
        as_guest(
            &cloud,
            "PUT",
            &path,
            &uuid,
            &secret,
            Some(upd("first-trust-key-0001"))
        )
        .0,
        200
    );
    assert_eq!(
        as_guest(
            &cloud,
            "PUT",
            &path,
            &uuid,
            &secret,
            Some(upd("first-trust-key-0001"))
        )
        .0,
        200
    );
    let (s, e) = as_guest(
        &cloud,
        "PUT",
        &path,
        &uuid,
        &secret,
        Some(upd("another-key-00000002")),
    );
    assert_eq!(
        (s, e["error"]["field"].as_str()),
        (403, Some("trust_key")),
        "{e}"
    );
    assert_eq!(
        as_guest(
            &cloud,
            "PUT",
            &path,
            &uuid,
            "wrong",
            Some(upd("first-trust-key-0001"))
        )
        .0,
        403
    );

    // Stored only as salted hashes: neither the secrets, the trust key, nor
    // their plain SHA-256 are anywhere in the store's files.
    let sha = |s: &str| {
        use std::io::Write;
        let mut c = std::process::Command::new("sha256sum")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        c.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
        String::from_utf8(c.wait_with_output().unwrap().stdout).unwrap()[..64].to_string()
    };
    for entry in std::fs::read_dir(cloud.master_dir()).unwrap() {
        let p = entry.unwrap().path();
        if p.is_file()
            && p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("cloud.db")
        {
            let bytes = std::fs::read(&p).unwrap();
            let text = String::from_utf8_lossy(&bytes);
            for needle in [
                secret.as_str(),
                dsecret.as_str(),
                "first-trust-key-0001",
                &sha(&secret),
                &sha("first-trust-key-0001"),
            ] {
                assert!(
                    !text.contains(needle),
                    "{} holds a secret in a recoverable form",
                    p.display()
                );
                let raw = hex_bytes(needle);
                if let Some(r) = raw {
                    assert!(
                        !bytes.windows(r.len()).any(|w| w == r.as_slice()),
                        "{} holds raw secret bytes",
                        p.display()
                    );
                }
            }
        }
    }
    // Never in list output, events or the master's log.
    let everything = [
        cloud.cm_ok(&["--json", "config", "list"]),
        cloud.cm_ok(&["--json", "config", "show", &uuid]),
        cloud.cm_ok(&["--json", "config", "domain", "list"]),
        cloud.cm_ok(&["--json", "event", "list"]),
        std::fs::read_to_string(cloud.master_log()).unwrap(),
    ]
    .join("\n");
    for needle in [secret.as_str(), dsecret.as_str(), "first-trust-key-0001"] {
        assert!(
            !everything.contains(needle),
            "a secret leaked into output, events or logs"
        );
    }
}

fn hex_bytes(s: &str) -> Option<Vec<u8>> {
    (s.len().is_multiple_of(2) && s.chars().all(|c| c.is_ascii_hexdigit())).then(|| {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap_or(0))
            .collect()
    })
}

#[test]
fn remove_stale_keeps_records_of_live_instances_and_runs_on_a_schedule() {
    let mut cloud = Cloud::start_with(MasterOpts {
        extra: vec!["--remove-stale-after".into(), "4".into()],
        ..Default::default()
    })
    .unwrap();
    cloud.add_host("h1", HostOpts::default()).unwrap();
    cloud.add_test_image().unwrap();
    // An instance's record (never stale while the instance exists) and a loose one.
    cloud.cm_ok(&[
        "instance",
        "create",
        "kept",
        "--image",
        "cm-test",
        "--flavor",
        "m1.tiny",
        "--restart-policy",
        "no",
        "--config",
        "/dev/null",
    ]);
    let kept_id = cloud.instance("kept").unwrap().id.to_string();
    let loose = cloud.cm_json(&["config", "pre-register", "--text", "old"]);
    let loose_id = loose["record"]["uuid"].as_str().unwrap().to_string();
    // By hand: nothing is older than an hour.
    let r = cloud.cm_json(&["config", "remove-stale", "--older-than", "3600"]);
    assert_eq!(r["removed"], 0);
    // On the schedule (every second here): the loose record goes, the instance's stays.
    wait_until(
        "the scheduled remove_stale",
        Duration::from_secs(30),
        || {
            cloud
                .cm(&["config", "show", &loose_id])
                .stderr
                .contains("not found")
                .then_some(())
        },
    )
    .unwrap();
    std::thread::sleep(Duration::from_secs(6));
    let kept = cloud.cm_json(&["config", "show", &kept_id]);
    assert_eq!(kept["instance"], "kept");
    let ev = cloud.events(Some("config.removed"));
    assert!(
        ev.iter().any(|e| e.message.contains("removed 1 record")),
        "{ev:?}"
    );
    // remove_stale by hand counts what it removed; the stopped instance's record stays too.
    cloud.cm_ok(&["instance", "stop", "kept", "--force"]);
    for n in 0..3 {
        cloud.cm_json(&["config", "pre-register", "--text", &format!("{n}")]);
    }
    std::thread::sleep(Duration::from_millis(1500));
    let r = cloud.cm_json(&["config", "remove_stale", "--older-than", "1"]);
    assert_eq!(r["removed"], 3);
    assert_eq!(
        cloud.cm_json(&["config", "show", &kept_id])["uuid"],
        kept_id.as_str()
    );
    // Deleting the instance removes its record with it.
    cloud.cm_ok(&["instance", "delete", "kept"]);
    assert!(cloud
        .cm(&["config", "show", &kept_id])
        .stderr
        .contains("not found"));
}
