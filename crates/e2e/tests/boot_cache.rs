//! Issue 3, points 1, 6 and 8: the rendezvous cache (`/v1/configs`, `cm
//! config`) with the seed's operations, its secrets, and stale entries.

use cm_api::boot::{
    AssignDynamic, Assigned, Config, ConfigDetail, Domain, DomainCreated, Registered, Removed,
    UpdateCache,
};
use cm_api::ErrorCode;
use cm_client::api;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use test_infra::rest::assert_refused;
use test_infra::{http, wait_until, Cloud, HostOpts, MasterOpts};

/// A guest's fetch of its config (`GET /boot/v1/configs/{uuid}`), through
/// the typed client: the body, or the master's typed refusal.
fn fetch(cloud: &Cloud, uuid: &str, secret: &str) -> Result<Vec<u8>, cm_client::Error> {
    cloud.api().call(api::boot::fetch(uuid, secret))
}

/// The status of a refused call (0 when it was answered).
fn refused_with<T>(r: &Result<T, cm_client::Error>) -> u16 {
    r.as_ref()
        .err()
        .and_then(|e| e.status())
        .map_or(0, |s| s.as_u16())
}

/// `update_cache` as a guest sends it: `status` with `trust_key`.
fn update(status: &str, trust_key: &str) -> UpdateCache {
    UpdateCache {
        my_conf_addr: None,
        parameter_map: BTreeMap::new(),
        status: status.into(),
        reason: None,
        config_version: 0,
        trust_key: trust_key.to_string(),
        rekey: None,
    }
}

#[test]
fn the_cache_speaks_the_seeds_operations() {
    let cloud = Cloud::start().unwrap();
    // pre_register: the secret comes back once, with a boot string.
    let reg: Registered = cloud.cm_as(&[
        "config",
        "pre-register",
        "--text",
        "role = \"db\"\n",
        "--param",
        "tier=1",
    ]);
    let uuid = reg.record.uuid.to_string();
    let secret = reg.secret.clone();
    assert_eq!(
        reg.boot_string,
        format!("{uuid}:10.0.2.2:{}:{secret}", cloud.port)
    );
    // The seed's alias works too.
    let reg2: Registered =
        cloud.cm_as(&["config", "pre_register", "--text", "x", "--domain", "batch"]);
    assert_eq!(reg2.record.domain, "batch");

    // list/show: the seed's Config fields (read as cm-api's Config), never the secret.
    let list: Vec<Config> = cloud.cm_as(&["config", "list"]);
    let rec = list
        .into_iter()
        .find(|r| r.uuid == reg.record.uuid)
        .unwrap();
    assert_eq!(rec.status.as_str(), "registered");
    assert_eq!(rec.parameter_map["tier"], "1");
    assert_eq!(rec.config_hosts, [format!("10.0.2.2:{}", cloud.port)]);
    let shown: ConfigDetail = cloud.cm_as(&["config", "show", &uuid]);
    assert_eq!(shown.config.as_deref(), Some("role = \"db\"\n"));
    let table = cloud.cm_ok(&["config", "list"]);
    let shown_json = cloud.cm_ok(&["--json", "config", "show", &uuid]);
    assert!(!table.contains(&secret) && !shown_json.contains(&secret));

    // The guest fetches it, and update_cache records address, parameters, status.
    let body = fetch(&cloud, &uuid, &secret).unwrap();
    assert_eq!(body.as_slice(), b"role = \"db\"\n".as_slice());
    let shown: ConfigDetail = cloud.cm_as(&["config", "show", &uuid]);
    assert_eq!(shown.record.status.as_str(), "fetched");
    let trust = "t".repeat(32);
    let upd = UpdateCache {
        my_conf_addr: Some("10.0.2.15".into()),
        parameter_map: BTreeMap::from([("port".to_string(), "5432".to_string())]),
        config_version: 1,
        ..update("configured", &trust)
    };
    cloud
        .api()
        .call(api::boot::update_status(&uuid, &secret, &upd))
        .unwrap();
    let rec = cloud
        .cm_as::<ConfigDetail>(&["config", "show", &uuid])
        .record;
    assert_eq!(
        (rec.status.as_str(), rec.my_conf_addr.as_deref()),
        ("configured", Some("10.0.2.15"))
    );
    assert_eq!(rec.parameter_map["port"], "5432");
    assert!(rec.trust_key_set);
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
    let rec = cloud
        .cm_as::<ConfigDetail>(&["config", "show", &uuid])
        .record;
    assert_eq!(
        (rec.status.as_str(), rec.reason.as_deref()),
        ("degraded", Some("disk full"))
    );

    // A new body: a guest long-polling for it gets it at once. Raw HTTP: the
    // point is the wire (the X-Config-Version header and 304), which
    // cm-guest reads and the typed client does not model.
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
    assert_eq!(refused_with(&fetch(&cloud, &uuid, &secret)), 403);
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
    let reg: Registered =
        cloud.cm_as(&["config", "pre-register", "--file", &file.to_string_lossy()]);
    let uuid = &reg.record.uuid.to_string();
    assert_eq!(reg.record.config_size, body.len() as u64);
    let got = fetch(&cloud, uuid, &reg.secret).unwrap();
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
    let too_big = cloud
        .api()
        .call(api::configs::pre_register(&cm_api::boot::PreRegister {
            config: Some(String::from_utf8(big).unwrap()),
            ..Default::default()
        }));
    assert_refused(
        "a config over 2 MiB",
        too_big,
        400,
        ErrorCode::InvalidInput,
        Some("config"),
    );
    assert_eq!(cloud.cm_as::<Vec<Config>>(&["config", "list"]).len(), 1);
}

#[test]
fn assign_dynamic_is_first_come_first_served_beside_fixed_records() {
    let cloud = Cloud::start().unwrap();
    let dom: DomainCreated = cloud.cm_as(&["config", "domain", "create", "pool"]);
    let dsecret = dom.secret.clone();
    assert!(dom.boot_string.starts_with("@pool:10.0.2.2:"));
    let mut dynamic = Vec::new();
    for n in 0..5 {
        let r: Registered = cloud.cm_as(&[
            "config",
            "pre-register",
            "--text",
            &format!("member {n}"),
            "--domain",
            "pool",
            "--dynamic",
        ]);
        dynamic.push(r.record.uuid);
    }
    let fixed: Registered = cloud.cm_as(&[
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
                let client = cm_client::blocking::Client::new(&url, "").unwrap();
                client.call(api::boot::assign("pool", &d, &pool()))
            })
        })
        .collect();
    let results: Vec<Result<Assigned, cm_client::Error>> =
        handles.into_iter().map(|h| h.join().unwrap()).collect();
    let assigned: Vec<&Assigned> = results.iter().flatten().collect();
    let mut got: Vec<_> = assigned.iter().map(|a| a.uuid).collect();
    assert_eq!(got.len(), 5, "{results:?}");
    for e in results.iter().filter_map(|r| r.as_ref().err()) {
        let doc = e.api().map(|a| &a.error);
        assert_eq!(e.status().map(|s| s.as_u16()), Some(409), "{e}");
        assert_eq!(doc.map(|d| d.code), Some(ErrorCode::NoneLeft), "{e}");
        assert!(doc.is_some_and(|d| d.message.contains("none left")), "{e}");
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
    let first = assigned[0];
    let body = fetch(&cloud, &first.uuid.to_string(), &first.secret).unwrap();
    assert!(String::from_utf8(body).unwrap().starts_with("member "));
    let fixed_rec = cloud
        .cm_as::<ConfigDetail>(&["config", "show", &fixed.record.uuid.to_string()])
        .record;
    assert_eq!(
        (fixed_rec.dynamic, fixed_rec.status.as_str()),
        (false, "registered")
    );
    let domains: Vec<Domain> = cloud.cm_as(&["config", "domain", "list"]);
    assert_eq!((domains[0].dynamic_total, domains[0].dynamic_free), (5, 0));
    // A wrong domain secret: 403, nothing handed out.
    let wrong = cloud.api().call(api::boot::assign("pool", "nope", &pool()));
    assert_eq!(refused_with(&wrong), 403);
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
    let reg: Registered = cloud.cm_as(&["config", "pre-register", "--text", "s"]);
    let (uuid, secret) = (reg.record.uuid.to_string(), reg.secret.clone());
    let dom: DomainCreated = cloud.cm_as(&["config", "domain", "create", "d1"]);
    let dsecret = dom.secret.clone();

    // A wrong secret and an unknown uuid: the same 403.
    let unknown = uuid::Uuid::new_v4().to_string();
    let wrong = fetch(&cloud, &uuid, "wrong");
    let missing = fetch(&cloud, &unknown, &secret);
    assert_eq!(refused_with(&wrong), 403);
    let answer = |r: &Result<Vec<u8>, cm_client::Error>| {
        r.as_ref().err().map(|e| (e.status(), e.api().cloned()))
    };
    assert_eq!(
        answer(&wrong),
        answer(&missing),
        "different answers give the record away"
    );
    // Raw HTTP: no credentials at all, which the typed client never sends.
    let no_auth = http(
        "GET",
        &format!("{}/boot/v1/configs/{uuid}", cloud.url),
        None,
        None,
    );
    assert_eq!(no_auth.0, 403);
    // ... and the same time: interleaved, the medians stay close.
    let client = cloud.api();
    let time = |u: &str, s: &str| {
        let t = Instant::now();
        let _ = client.call(api::boot::fetch(u, s));
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
    let upd = |secret: &str, key: &str| {
        client.call(api::boot::update_status(
            &uuid,
            secret,
            &update("configured", key),
        ))
    };
    upd(&secret, "first-trust-key-0001").unwrap();
    upd(&secret, "first-trust-key-0001").unwrap();
    assert_refused(
        "another trust key",
        upd(&secret, "another-key-00000002"),
        403,
        ErrorCode::Forbidden,
        Some("trust_key"),
    );
    assert_eq!(refused_with(&upd("wrong", "first-trust-key-0001")), 403);

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

/// `assign_dynamic` of the domain `pool`.
fn pool() -> AssignDynamic {
    AssignDynamic {
        domain: "pool".into(),
        instance: None,
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
    let loose: Registered = cloud.cm_as(&["config", "pre-register", "--text", "old"]);
    let loose_id = loose.record.uuid.to_string();
    // By hand: nothing is older than an hour.
    let r: Removed = cloud.cm_as(&["config", "remove-stale", "--older-than", "3600"]);
    assert_eq!(r.removed, 0);
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
    let kept = cloud
        .cm_as::<ConfigDetail>(&["config", "show", &kept_id])
        .record;
    assert_eq!(kept.instance.as_deref(), Some("kept"));
    let ev = cloud.events(Some("config.removed"));
    assert!(
        ev.iter().any(|e| e.message.contains("removed 1 record")),
        "{ev:?}"
    );
    // remove_stale by hand counts what it removed; the stopped instance's record stays too.
    cloud.cm_ok(&["instance", "stop", "kept", "--force"]);
    for n in 0..3 {
        cloud.cm_ok(&["config", "pre-register", "--text", &format!("{n}")]);
    }
    std::thread::sleep(Duration::from_millis(1500));
    let r: Removed = cloud.cm_as(&["config", "remove_stale", "--older-than", "1"]);
    assert_eq!(r.removed, 3);
    let kept = cloud
        .cm_as::<ConfigDetail>(&["config", "show", &kept_id])
        .record;
    assert_eq!(kept.uuid.to_string(), kept_id);
    // Deleting the instance removes its record with it.
    cloud.cm_ok(&["instance", "delete", "kept"]);
    assert!(cloud
        .cm(&["config", "show", &kept_id])
        .stderr
        .contains("not found"));
}
