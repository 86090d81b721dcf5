//! Issue 11: deployables through the real `cm` and a real master, as a
//! user drives them. Specs in YAML and pacemaker-cloud's XML are applied,
//! listed, shown, compared, rolled back, followed and deleted; a bad spec
//! is refused with the path of every problem and creates nothing. The
//! policy engine is not part of this test: slots are not asserted.

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;
use test_infra::{bin, Cloud, MasterOpts};

const V1: &str = "\
name: web
assemblies:
  - name: web
    image: img
    count: 2
    ports: [{name: http, guest: 8080}]
    services:
      - name: httpd
        run: busybox httpd -f -p 8080
        check: {http: \"http://127.0.0.1:8080/\", interval: 1s}
        env: {DB: {ref: db.ipaddress}}
        pool: {balancer: edge, backend: web, port: http}
  - name: db
    image: img
    stateful: true
    services:
      - {name: db, run: nc -lk -p 5432}
";

fn example_xml() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../cm-api/tests/deploy_fixtures/pacemaker-cloud-deployable.xml")
}

/// A master with one balancer configured (the engine never reaches it
/// here) and the images the specs name.
fn cloud() -> Cloud {
    let cloud = Cloud::start_with(MasterOpts {
        extra: vec![
            "--balancer".into(),
            "edge=unix:/run/haproxy-test.sock".into(),
        ],
        ..Default::default()
    })
    .unwrap();
    // The XML names no image: each assembly's image is named after it.
    for name in ["img", "web1", "web2", "db1"] {
        cloud.add_fake_image(name);
    }
    cloud
}

fn write(cloud: &Cloud, name: &str, text: &str) -> String {
    let p = cloud.dir.path().join(name);
    std::fs::write(&p, text).unwrap();
    p.to_string_lossy().into_owned()
}

fn generation(cloud: &Cloud, name: &str) -> u64 {
    cloud.cm_json(&["deploy", "show", name])["generation"]
        .as_u64()
        .unwrap()
}

fn names(cloud: &Cloud) -> Vec<String> {
    let v = cloud.cm_json(&["deploy", "list"]);
    v["deployables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn specs_apply_diff_rollback_and_delete_through_cm() {
    let cloud = cloud();
    let v1 = write(&cloud, "web.yaml", V1);
    let out = cloud.cm_ok(&["deploy", "apply", "--file", &v1]);
    assert!(out.contains("deployable web: generation 1"), "{out}");
    assert!(out.contains("add") && out.contains("0,1"), "{out}");
    // The same spec again changes nothing.
    let out = cloud.cm_ok(&["deploy", "apply", "--file", &v1]);
    assert!(out.contains("unchanged at generation 1"), "{out}");

    // pacemaker-cloud's XML, as shipped.
    let out = cloud.cm_ok(&["deploy", "apply", "--file", example_xml().to_str().unwrap()]);
    assert!(out.contains("deployable shop: generation 1"), "{out}");
    let shop = cloud.cm_json(&["deploy", "show", "shop"]);
    let web1 = &shop["spec"]["assemblies"][0];
    assert_eq!(web1["image"], "web1");
    assert_eq!(web1["services"][0]["lsb"], "httpd");
    assert_eq!(web1["services"][0]["env"]["db_ip"]["ref"], "db1.ipaddress");
    assert_eq!(names(&cloud), ["shop", "web"]);
    let table = cloud.cm_ok(&["deploy", "list"]);
    assert!(
        table.contains("shop") && table.contains("converging"),
        "{table}"
    );
    let show = cloud.cm_ok(&["deploy", "show", "shop"]);
    assert!(show.contains("1 × web1 (web1)"), "{show}");

    // A diff says what would change and writes nothing.
    let v2 = write(&cloud, "web-v2.yml", &V1.replace("count: 2", "count: 3"));
    let out = cloud.cm_ok(&["deploy", "diff", "--file", &v2]);
    assert!(out.contains("count 2 → 3"), "{out}");
    assert_eq!(generation(&cloud, "web"), 1);
    let out = cloud.cm_ok(&["deploy", "apply", "--file", &v2]);
    assert!(out.contains("generation 2"), "{out}");
    // The stored source is the file as sent.
    let src = cloud.cm_ok(&["deploy", "show", "web", "--source", "--generation", "2"]);
    assert_eq!(src, std::fs::read_to_string(&v2).unwrap());

    // Rollback: generation 1's spec again, as generation 3.
    let out = cloud.cm_ok(&["deploy", "rollback", "web"]);
    assert!(
        out.contains("generation 3") && out.contains("remove"),
        "{out}"
    );
    let web = cloud.cm_json(&["deploy", "show", "web"]);
    assert_eq!(web["spec"]["assemblies"][0]["count"], 2);
    let out = cloud.cm_ok(&["deploy", "rollback", "web", "--to-generation", "2"]);
    assert!(out.contains("generation 4"), "{out}");

    // The deployable's events, and only its own. The engine adds its own
    // (its slots wait: this cloud has no host); the applies are these.
    let ev = cloud.cm_ok(&["deploy", "events", "web"]);
    assert!(!ev.contains(" shop"), "{ev}");
    let lines: Vec<&str> = ev
        .lines()
        .filter(|l| l.contains("deployable.applied"))
        .collect();
    assert_eq!(lines.len(), 4, "{ev}");
    assert!(
        lines[0].contains("web deployable.applied →generation 1"),
        "{ev}"
    );
    assert!(lines[2].contains("\"rollback to generation 1"), "{ev}");
    assert!(!ev.contains("shop"), "{ev}");

    let out = cloud.cm_ok(&["deploy", "delete", "web"]);
    assert!(out.contains("deleting"), "{out}");
    assert_eq!(names(&cloud), ["shop"]);
    // Nothing there to delete or show.
    let gone = cloud.cm(&["deploy", "show", "nope"]);
    assert_eq!(gone.code, 1, "{gone:?}");
    assert!(gone.stderr.contains("not found"), "{gone:?}");
}

#[test]
fn a_bad_spec_is_refused_with_every_path_and_creates_nothing() {
    let cloud = cloud();
    // Refused by cm's own check, before anything is sent.
    let bad = V1
        .replace("count: 2", "count: 0")
        .replace("http://127.0.0.1:8080/", "not a url")
        .replace("port: http}", "port: https}");
    let f = write(&cloud, "bad.yaml", &bad);
    let out = cloud.cm(&["deploy", "apply", "--file", &f]);
    assert_eq!(out.code, 1, "{out:?}");
    for line in [
        "assemblies[0].count: count must be between 1 and 64, got 0",
        "assemblies[0].services[0].check.http: not a URL",
        "assemblies[0].services[0].pool.port: no port 'https'",
    ] {
        assert!(out.stderr.contains(line), "{line} not in {}", out.stderr);
    }
    // Refused by the master: what only it knows (images, balancers).
    let f = write(
        &cloud,
        "unknown.yaml",
        &V1.replace("image: img\n    stateful", "image: web9\n    stateful")
            .replace("balancer: edge", "balancer: lb"),
    );
    let out = cloud.cm(&["deploy", "apply", "--file", &f]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("assemblies[1].image: no image 'web9'"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(
            "assemblies[0].services[0].pool.balancer: no balancer 'lb' (configured: edge)"
        ),
        "{}",
        out.stderr
    );
    // XML errors carry the same logical paths, with the line.
    let xml = std::fs::read_to_string(example_xml())
        .unwrap()
        .replace("monitor_interval=\"10s\"", "monitor_interval=\"often\"");
    let f = write(&cloud, "bad.xml", &xml);
    let out = cloud.cm(&["deploy", "diff", "--file", &f]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr
            .contains("assemblies[2].services[0].monitor_interval: 'often' is not a duration"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("(line 43:"), "{}", out.stderr);
    // A format cm cannot tell.
    let f = write(&cloud, "spec.txt", V1);
    let out = cloud.cm(&["deploy", "apply", "--file", &f]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("--format"), "{}", out.stderr);
    // Nothing was created, and no event written.
    assert!(names(&cloud).is_empty());
    let ev = cloud.cm_ok(&["event", "list", "--type", "deployable.applied"]);
    assert!(!ev.contains("web"), "{ev}");
    // The same file with --format is fine.
    cloud.cm_ok(&["deploy", "apply", "--file", &f, "--format", "yaml"]);
    assert_eq!(names(&cloud), ["web"]);
}

#[test]
fn deploy_events_follow_prints_new_events_as_they_happen() {
    let cloud = cloud();
    let v1 = write(&cloud, "web.yaml", V1);
    cloud.cm_ok(&["deploy", "apply", "--file", &v1]);
    let mut child = Command::new(bin("cm"))
        .args(["deploy", "events", "web", "--follow"])
        .env("CM_URL", &cloud.url)
        .env("CM_TOKEN", &cloud.token)
        .env("HOME", cloud.dir.path())
        .env_remove("CM_CONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // The next apply's line (the engine's own lines come in between: its
    // slots wait, as this cloud has no host).
    let next = |rx: &mpsc::Receiver<String>| loop {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(l) if !l.contains("deployable.applied") => continue,
            other => break other,
        }
    };
    let first = next(&rx);
    // Another deployable's apply is not shown; this one's next is.
    let xml = example_xml();
    cloud.cm_ok(&["deploy", "apply", "--file", xml.to_str().unwrap()]);
    let v2 = write(&cloud, "v2.yaml", &V1.replace("count: 2", "count: 4"));
    cloud.cm_ok(&["deploy", "apply", "--file", &v2]);
    let second = next(&rx);
    let _ = child.kill();
    let _ = child.wait();
    let first = first.unwrap();
    assert!(first.contains("→generation 1"), "{first}");
    let second = second.unwrap();
    assert!(
        second.contains("→generation 2") && second.contains("count 2 → 4"),
        "{second}"
    );
    let v: Value = cloud.cm_json(&["deploy", "show", "web"]);
    assert_eq!(v["generation"], 2);
}
