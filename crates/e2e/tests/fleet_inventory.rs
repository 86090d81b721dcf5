//! Issue 4, points 1 and 2: inventories (the seed's cloudManager.ini as is,
//! the native TOML) and target expressions, through `cm nodes`.

use serde_json::Value;
use std::path::Path;
use test_infra::sshd::{cm_as, Run};

/// The seed's example, verbatim (indented as in the document).
const SEED_INI: &str = "  [nodes]
  A=10.0.2.12:80
  B=10.0.2.13:80
  C=10.0.2.14:81
  D=10.0.2.15:81
  E=10.0.2.16:8080

  [referee]
  ip=10.0.2.151
  config=/etc/apache2/includes/proxybalancer
  clusterID=meuCluster
  clusterFolder=cs
";

const TOML: &str = r#"[ssh]
user = "deploy"

[nodes.web01]
host = "10.0.3.1"
web_port = 8080
groups = ["web"]

[nodes.web02]
host = "10.0.3.2"
web_port = 8080
groups = ["web"]
ssh = { port = 2222 }

[nodes.web03]
host = "10.0.3.3"
groups = ["web"]

[nodes.web10]
host = "10.0.3.10"
groups = ["web"]

[nodes.db1]
host = "10.0.4.1"
groups = ["db"]

[groups.db]
ssh = { user = "postgres" }
"#;

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

fn nodes(inv: &str, expr: &str) -> Run {
    cm_as("cm", &["nodes", expr, "--inventory", inv], &[], None)
}

fn names(r: &Run) -> Vec<&str> {
    assert_eq!(r.code, 0, "{r:?}");
    r.stdout.lines().collect()
}

#[test]
fn the_seed_ini_is_read_as_it_is() {
    let d = tempfile::tempdir().unwrap();
    let ini = write(d.path(), "cloudManager.ini", SEED_INI);
    let r = cm_as("cm", &["--json", "nodes", "--inventory", &ini], &[], None);
    assert_eq!(r.code, 0, "{r:?}");
    let v = r.json_lines();
    let got: Vec<(String, String, u64)> = v
        .iter()
        .map(|o| {
            (
                o["name"].as_str().unwrap().to_string(),
                o["host"].as_str().unwrap().to_string(),
                o["web_port"].as_u64().unwrap(),
            )
        })
        .collect();
    let want = [
        ("A", "10.0.2.12", 80),
        ("B", "10.0.2.13", 80),
        ("C", "10.0.2.14", 81),
        ("D", "10.0.2.15", 81),
        ("E", "10.0.2.16", 8080),
    ];
    assert_eq!(
        got,
        want.iter()
            .map(|(n, h, p)| (n.to_string(), h.to_string(), *p))
            .collect::<Vec<_>>()
    );
    // The seed's target forms: one, a list, `*` and `all`, exclusion.
    assert_eq!(names(&nodes(&ini, "A")), ["A"]);
    assert_eq!(names(&nodes(&ini, "D,B")), ["B", "D"]);
    assert_eq!(names(&nodes(&ini, "*")), ["A", "B", "C", "D", "E"]);
    assert_eq!(names(&nodes(&ini, "all")), ["A", "B", "C", "D", "E"]);
    assert_eq!(names(&nodes(&ini, "*,!C")), ["A", "B", "D", "E"]);
    assert_eq!(names(&nodes(&ini, "!C")), ["A", "B", "D", "E"]);
}

#[test]
fn the_native_toml_has_groups_ranges_and_ssh_settings() {
    let d = tempfile::tempdir().unwrap();
    let t = write(d.path(), "fleet.toml", TOML);
    assert_eq!(
        names(&nodes(&t, "@web")),
        ["web01", "web02", "web03", "web10"]
    );
    assert_eq!(
        names(&nodes(&t, "web[01-03,10]")),
        ["web01", "web02", "web03", "web10"]
    );
    assert_eq!(names(&nodes(&t, "web[01-03],!web02")), ["web01", "web03"]);
    assert_eq!(
        names(&nodes(&t, "@web,!web[02-03],@db")),
        ["web01", "web10", "db1"]
    );
    // Per node and per group SSH settings, over the file's defaults.
    let r = cm_as(
        "cm",
        &["--json", "nodes", "all", "--inventory", &t],
        &[],
        None,
    );
    assert_eq!(r.code, 0, "{r:?}");
    let v = r.json_lines();
    let by = |n: &str| v.iter().find(|o| o["name"] == n).cloned().unwrap();
    assert_eq!(
        (
            by("web02")["ssh_user"].clone(),
            by("web02")["ssh_port"].clone()
        ),
        (Value::from("deploy"), Value::from(2222))
    );
    assert_eq!(by("web01")["ssh_port"], Value::Null);
    assert_eq!(by("db1")["ssh_user"], "postgres");
    assert_eq!(by("web01")["web_port"], 8080);
}

#[test]
fn unknown_names_and_bad_expressions_are_errors() {
    let d = tempfile::tempdir().unwrap();
    let ini = write(d.path(), "cloudManager.ini", SEED_INI);
    for (expr, says) in [
        ("A,Z", "unknown node 'Z'"),
        ("@web", "unknown group '@web'"),
        ("A,!A", "selects no node"),
        ("web[01-", "bad target expression 'web[01-'"),
        ("web[3-1]", "bad target expression"),
    ] {
        let r = nodes(&ini, expr);
        assert_eq!(r.code, 2, "{expr}: {r:?}");
        assert!(r.stdout.is_empty(), "{expr}: {r:?}");
        assert!(r.stderr.contains(says), "{expr}: {}", r.stderr);
    }
}

#[test]
fn errors_in_the_file_name_its_line() {
    let d = tempfile::tempdir().unwrap();
    let cases = [
        (
            "bad-port.ini",
            "[nodes]\nA=10.0.2.12:80\nB=10.0.2.13:http\n",
            ":3:",
            "B",
        ),
        (
            "twice.ini",
            "[nodes]\nA=10.0.2.12:80\n\n[nodes]\nA=10.0.2.14:80\n",
            ":",
            "A",
        ),
        (
            "group.ini",
            "[nodes]\nA=10.0.2.12:80\n[groups]\nweb=A,Q\n",
            ":4:",
            "unknown node Q",
        ),
        (
            "unclosed.ini",
            "[nodes]\nA=10.0.2.12:80\n[referee\nip=1.2.3.4\n",
            ":3:",
            "",
        ),
        (
            "key.toml",
            "[nodes.a]\nhost = \"10.0.0.1\"\n\n[nodes.b]\nhost = \"10.0.0.2\"\nwebport = 80\n",
            ":6:",
            "webport",
        ),
        ("syntax.toml", "[nodes.a]\nhost = \"10.0.0.1\n", ":2:", ""),
    ];
    for (name, text, line, says) in cases {
        let p = write(d.path(), name, text);
        let r = nodes(&p, "all");
        assert_eq!(r.code, 2, "{name}: {r:?}");
        assert!(r.stdout.is_empty(), "{name}: {r:?}");
        assert!(
            r.stderr.contains(&format!("{p}{line}")) && r.stderr.contains(says),
            "{name}: {}",
            r.stderr
        );
    }
    // A file that is not there.
    let r = nodes(&d.path().join("nope.ini").display().to_string(), "all");
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("nope.ini"), "{}", r.stderr);
}

#[test]
fn the_inventory_is_the_flag_then_cm_inventory_then_etc() {
    let d = tempfile::tempdir().unwrap();
    let ini = write(d.path(), "cloudManager.ini", SEED_INI);
    let toml = write(d.path(), "fleet.toml", TOML);
    let r = cm_as("cm", &["nodes", "@db"], &[("CM_INVENTORY", &toml)], None);
    assert_eq!(names(&r), ["db1"]);
    // The flag wins over the environment.
    let r = cm_as(
        "cm",
        &["nodes", "--inventory", &ini],
        &[("CM_INVENTORY", &toml)],
        None,
    );
    assert_eq!(names(&r), ["A", "B", "C", "D", "E"]);
    // With neither, /etc/cloudManager.ini; this machine's own is never touched.
    let etc = Path::new("/etc/cloudManager.ini");
    if etc.exists() {
        return;
    }
    let r = cm_as("cm", &["nodes"], &[], None);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("/etc/cloudManager.ini"), "{}", r.stderr);
    std::fs::write(etc, SEED_INI).unwrap();
    let r = cm_as("cm", &["nodes", "B,D"], &[], None);
    let _ = std::fs::remove_file(etc);
    assert_eq!(names(&r), ["B", "D"]);
}
