//! Specs in every format, the example XML, and bad specs with their paths.

use super::*;

const XML: &str = include_str!("../../tests/deploy_fixtures/pacemaker-cloud-deployable.xml");
const YAML: &str = include_str!("../../tests/deploy_fixtures/shop.yaml");
const TOML: &str = include_str!("../../tests/deploy_fixtures/shop.toml");
const JSON: &str = include_str!("../../tests/deploy_fixtures/shop.json");
const WEB: &str = include_str!("../../tests/deploy_fixtures/web.yaml");

fn ok(format: SpecFormat, text: &str) -> DeployableSpec {
    match load(format, text) {
        Ok(s) => s,
        Err(e) => panic!("{format:?} refused:\n{e}"),
    }
}

#[test]
fn the_same_deployable_in_every_format_is_the_same_spec() {
    let xml = ok(SpecFormat::Xml, XML);
    assert_eq!(ok(SpecFormat::Yaml, YAML), xml);
    assert_eq!(ok(SpecFormat::Toml, TOML), xml);
    assert_eq!(ok(SpecFormat::Json, JSON), xml);
    // Normalised JSON reads back to the same spec (what the store keeps).
    let again = serde_json::to_string(&xml).unwrap_or_default();
    assert_eq!(ok(SpecFormat::Json, &again), xml);
}

#[test]
fn the_example_xml_maps_element_for_element() {
    let s = ok(SpecFormat::Xml, XML);
    assert_eq!(s.name, "shop");
    assert_eq!(s.assemblies.len(), 3);
    let web1 = &s.assemblies[0];
    assert_eq!(
        (web1.name.as_str(), web1.image.as_str(), web1.count),
        ("web1", "web1", 1)
    );
    assert_eq!(
        web1.escalation,
        Some(Budget {
            failures: Limit::Count(3),
            period: Dur::from_secs(600)
        })
    );
    let httpd = &web1.services[0];
    assert_eq!(httpd.lsb.as_deref(), Some("httpd"));
    let check = httpd.check.as_ref().map(|c| (c.exec.clone(), c.interval));
    assert_eq!(
        check,
        Some((Some("/etc/init.d/httpd status".into()), Dur::from_secs(5)))
    );
    assert_eq!(
        httpd.env.get("listen_port"),
        Some(&EnvValue::Text("80".into()))
    );
    assert_eq!(
        httpd.env.get("db_ip"),
        Some(&EnvValue::Ref {
            reference: "db1.ipaddress".into()
        })
    );
    // Omitted escalation attributes: never escalate.
    let db = &s.assemblies[2];
    assert!(matches!(
        db.escalation.map(|b| b.failures),
        Some(Limit::Unlimited(_))
    ));
    let mysqld = &db.services[0];
    assert!(matches!(
        mysqld.escalation.map(|b| b.failures),
        Some(Limit::Unlimited(_))
    ));
    assert_eq!(
        mysqld.check.as_ref().map(|c| c.interval),
        Some(Dur::from_secs(10))
    );
}

#[test]
fn xml_accepts_both_spellings_and_the_image_attribute() {
    let text = XML
        .replacen("<parameters>", "<paramaters>", 1)
        .replacen("</parameters>", "</paramaters>", 1)
        .replace(
            "<parameter name=\"listen_port\"",
            "<paramater name=\"listen_port\"",
        )
        .replacen("</parameter>", "</paramater>", 1)
        .replace(
            "<assembly name=\"db1\"",
            "<assembly name=\"db1\" image=\"mariadb-11\"",
        );
    let s = ok(SpecFormat::Xml, &text);
    assert_eq!(s, {
        let mut want = ok(SpecFormat::Xml, XML);
        want.assemblies[2].image = "mariadb-11".into();
        want
    });
}

#[test]
fn xml_budgets_without_a_period_never_expire() {
    let text = XML.replace(
        "<assembly name=\"db1\" uuid=\"c3e8f1d2-5a6b-4c7d-8e9f-0a1b2c3d4e55\">",
        "<assembly name=\"db1\" uuid=\"c3e8f1d2-5a6b-4c7d-8e9f-0a1b2c3d4e55\" escalation_failures=\"2\">",
    )
    .replace("escalation_failures=\"3\" escalation_period=\"120\"", "escalation_failures=\"INFINITY\" escalation_period=\"120\"");
    let s = ok(SpecFormat::Xml, &text);
    assert_eq!(
        s.assemblies[2].escalation,
        Some(Budget {
            failures: Limit::Count(2),
            period: xml::FOREVER
        })
    );
    assert!(matches!(
        s.assemblies[0].services[0].escalation.map(|b| b.failures),
        Some(Limit::Unlimited(_))
    ));
}

#[test]
fn xml_errors_have_logical_paths_and_lines() {
    let text = XML.replace("monitor_interval=\"10s\"", "monitor_interval=\"soon\"");
    let e = load(SpecFormat::Xml, &text).err().unwrap_or_default();
    assert_eq!(
        e.first_path(),
        "assemblies[2].services[0].monitor_interval",
        "{e}"
    );
    assert!(e.0[0].message.contains("(line 43:79)"), "{e}");
    // A rule broken (checked after the parse) points at the element too.
    let text = XML.replace("assembly=\"db1\" parameter=\"ipaddress\"/>\n            </parameter>\n          </parameters>\n        </service>\n      </services>\n    </assembly>\n    <assembly name=\"web2\"", "assembly=\"nodb\" parameter=\"ipaddress\"/>\n            </parameter>\n          </parameters>\n        </service>\n      </services>\n    </assembly>\n    <assembly name=\"web2\"");
    let e = load(SpecFormat::Xml, &text).err().unwrap_or_default();
    assert_eq!(
        e.first_path(),
        "assemblies[0].services[0].env.db_ip.ref",
        "{e}"
    );
    assert!(
        e.0[0].message.contains("no assembly 'nodb' (line 23:13)"),
        "{e}"
    );
}

#[test]
fn yaml_features_parse_and_check() {
    let s = ok(SpecFormat::Yaml, WEB);
    assert_eq!(s.assemblies[0].count, 3);
    assert!(s.assemblies[1].stateful);
    assert_eq!(s.policy.escalation.failures, Limit::Count(2));
    assert_eq!(
        s.assemblies[0].services[0]
            .check
            .as_ref()
            .map(|c| c.timeout),
        Some(Dur::from_millis(500))
    );
}

#[test]
fn every_problem_is_reported_at_most_twenty() {
    let mut y = String::from("name: many\nassemblies:\n");
    for i in 0..30 {
        y.push_str(&format!("  - {{name: a{i}, image: x, count: 0}}\n"));
    }
    let e = load(SpecFormat::Yaml, &y).err().unwrap_or_default();
    assert_eq!(e.0.len(), SpecErrors::MAX, "{e}");
    assert_eq!(e.0[1].path, "assemblies[1].count");
    assert_eq!(e.to_string().lines().count(), SpecErrors::MAX);
}

/// A good spec to break one field at a time.
const BASE: &str = r#"
name: app
assemblies:
  - name: web
    image: img
    count: 2
    ports: [{name: http, guest: 8080}]
    services:
      - name: httpd
        run: httpd -f
        check: {http: "http://127.0.0.1:8080/"}
        pool: {balancer: edge, backend: web, port: http}
  - name: db
    image: img
    stateful: true
    services:
      - {name: db, run: db}
"#;

#[test]
fn base_is_good() {
    ok(SpecFormat::Yaml, BASE);
}

/// (what to replace, with what, the path expected first, a word of its message)
const BAD: &[(&str, &str, &str, &str)] = &[
    ("name: app", "name: App", "name", "lowercase"),
    ("name: app", "name: ''", "name", "empty"),
    ("name: app\n", "", "name", "missing field"),
    ("name: app", "name: app\nbogus: 1", "bogus", "unknown field `bogus`"),
    ("  - name: web\n", "  - name: web_1\n", "assemblies[0].name", "lowercase"),
    ("  - name: db\n", "  - name: web\n", "assemblies[1].name", "twice"),
    ("    count: 2", "    count: 0", "assemblies[0].count", "between 1 and 64"),
    ("    count: 2", "    count: 65", "assemblies[0].count", "between 1 and 64"),
    ("    count: 2", "    count: -1", "assemblies[0].count", "invalid type"),
    ("    count: 2", "    count: two", "assemblies[0].count", "invalid type"),
    ("    image: img\n    count", "    image: 'a b'\n    count", "assemblies[0].image", "only"),
    ("    count: 2", "    count: 2\n    memory_mib: 1", "assemblies[0].memory_mib", "between"),
    ("    count: 2", "    count: 2\n    vcpus: 0", "assemblies[0].vcpus", "between"),
    ("    count: 2", "    count: 2\n    colour: red", "assemblies[0].colour", "unknown field `colour`"),
    ("guest: 8080", "guest: 0", "assemblies[0].ports[0].guest", "not a port"),
    ("guest: 8080", "guest: 70000", "assemblies[0].ports[0].guest", "invalid value"),
    ("        run: httpd -f\n", "", "assemblies[0].services[0]", "run"),
    ("        run: httpd -f\n", "        run: httpd -f\n        lsb: httpd\n", "assemblies[0].services[0]", "not both"),
    ("        run: httpd -f\n", "        lsb: ../x\n", "assemblies[0].services[0].lsb", "init script"),
    ("http://127.0.0.1:8080/", "not a url", "assemblies[0].services[0].check.http", "not a URL"),
    ("http://127.0.0.1:8080/", "https://127.0.0.1/", "assemblies[0].services[0].check.http", "http"),
    ("check: {http:", "check: {exec: x, http:", "assemblies[0].services[0].check", "not both"),
    ("check: {http: \"http://127.0.0.1:8080/\"}", "check: {interval: 1s}", "assemblies[0].services[0].check", "exec"),
    ("check: {http: \"http://127.0.0.1:8080/\"}", "check: {exec: x, interval: soon}", "assemblies[0].services[0].check.interval", "duration"),
    ("check: {http: \"http://127.0.0.1:8080/\"}", "check: {exec: x, timeout: 0s}", "assemblies[0].services[0].check.timeout", "longer than 0"),
    ("port: http}", "port: web}", "assemblies[0].services[0].pool.port", "no port 'web'"),
    ("balancer: edge", "balancer: /tmp/sock", "assemblies[0].services[0].pool.balancer", "must start"),
    ("backend: web", "backend: 'w b'", "assemblies[0].services[0].pool.backend", "backend"),
    ("        run: httpd -f\n", "        run: httpd -f\n        depends_on: [nope]\n", "assemblies[0].services[0].depends_on[0]", "no service 'nope'"),
    ("        run: httpd -f\n", "        run: httpd -f\n        depends_on: [db.nope]\n", "assemblies[0].services[0].depends_on[0]", "no service"),
    ("      - {name: db, run: db}", "      - {name: db, run: db, depends_on: [db2]}\n      - {name: db2, run: db, depends_on: [db.db]}", "assemblies[1].services[1].depends_on[0]", "cycle db.db → db.db2 → db.db"),
    ("        run: httpd -f\n", "        run: httpd -f\n        depends_on: [httpd]\n", "assemblies[0].services[0].depends_on[0]", "cycle"),
    ("        run: httpd -f\n", "        run: httpd -f\n        env: {DB: {ref: nodb.ipaddress}}\n", "assemblies[0].services[0].env.DB.ref", "no assembly 'nodb'"),
    ("        run: httpd -f\n", "        run: httpd -f\n        env: {DB: {ref: db}}\n", "assemblies[0].services[0].env.DB.ref", "assembly.parameter"),
    ("        run: httpd -f\n", "        run: httpd -f\n        env: {1DB: x}\n", "assemblies[0].services[0].env.1DB", "environment variable"),
    ("        run: httpd -f\n", "        run: httpd -f\n        may_move_to: [db]\n", "assemblies[0].services[0].may_move_to[0]", "stateful"),
    ("        run: httpd -f\n", "        run: httpd -f\n        may_move_to: [gone]\n", "assemblies[0].services[0].may_move_to[0]", "no assembly"),
    ("      - {name: db, run: db}", "      - {name: db, run: db}\n      - {name: db, run: db2}", "assemblies[1].services[1].name", "twice"),
    ("name: app\n", "name: app\npolicy: {heartbeat_interval: 100ms}\n", "policy.heartbeat_interval", "shorter than 200ms"),
    ("name: app\n", "name: app\npolicy: {heartbeat_interval: 2s, heartbeat_timeout: 2s}\n", "policy.heartbeat_timeout", "longer than heartbeat_interval"),
    ("name: app\n", "name: app\npolicy: {escalation: {failures: many, period: 1m}}\n", "policy.escalation.failures", "a count or \"unlimited\""),
    ("name: app\n", "name: app\npolicy: {escalation: {failures: 3, period: 0}}\n", "policy.escalation.period", "longer than 0"),
    ("name: app\n", "name: app\npolicy: {restart_backoff: {initial: 10s, max: 1s}}\n", "policy.restart_backoff.max", "at least initial"),
    ("name: app\n", "name: app\nupdate: {max_parallel: 0}\n", "update.max_parallel", "at least 1"),
    ("name: app\n", "name: a2345678901234567890123456789012345678901234567890123\n", "assemblies[0].name", "63"),
    ("name: app\n", "name: app\nuuid: nope\n", "uuid", ""),
    ("    stateful: true", "    stateful: maybe", "assemblies[1].stateful", "invalid"),
    ("    count: 2", "    count: 2\n    spread: far", "assemblies[0].spread", "unknown variant"),
];

#[test]
fn bad_specs_name_the_field() {
    assert!(BAD.len() >= 30);
    for (from, to, path, word) in BAD {
        assert!(BASE.contains(from), "case {path}: '{from}' not in BASE");
        let text = BASE.replacen(from, to, 1);
        match load(SpecFormat::Yaml, &text) {
            Ok(_) => panic!("accepted with {to:?} (expected {path})"),
            Err(e) => {
                assert_eq!(e.first_path(), *path, "{to:?}:\n{e}");
                assert!(e.0[0].message.contains(word), "{to:?}: {e}");
            }
        }
    }
}

#[test]
fn a_cycle_across_assemblies_reads_by_assembly() {
    let text = BASE
        .replacen(
            "        run: httpd -f\n",
            "        run: httpd -f\n        depends_on: [db.db]\n",
            1,
        )
        .replacen(
            "{name: db, run: db}",
            "{name: db, run: db, depends_on: [web.httpd]}",
            1,
        );
    let e = load(SpecFormat::Yaml, &text).err().unwrap_or_default();
    assert_eq!(
        e.to_string(),
        "assemblies[1].services[0].depends_on[0]: cycle web → db → web"
    );
}

#[test]
fn toml_and_json_errors_have_paths_too() {
    let t = TOML.replacen("interval = \"5s\"", "interval = \"5 parsecs\"", 1);
    let e = load(SpecFormat::Toml, &t).err().unwrap_or_default();
    assert_eq!(
        e.first_path(),
        "assemblies[0].services[0].check.interval",
        "{e}"
    );
    assert!(e.0[0].message.contains("(line "), "{e}");
    let j =
        JSON.replacen("\"count\"", "\"x\"", 1)
            .replacen("\"image\": \"web2\"", "\"image\": 7", 1);
    let e = load(SpecFormat::Json, &j).err().unwrap_or_default();
    assert_eq!(e.first_path(), "assemblies[1].image", "{e}");
    let e = load(SpecFormat::Toml, "name = [").err().unwrap_or_default();
    assert_eq!(e.first_path(), "spec", "{e}");
}

/// Parsing never panics, whatever the bytes: every fixture cut, spliced and
/// with bytes flipped, in every format (a deterministic generator, so a
/// failure repeats).
#[test]
fn parse_never_panics_on_mutated_input() {
    let seeds = [XML, YAML, TOML, JSON, WEB, BASE];
    let formats = [
        SpecFormat::Xml,
        SpecFormat::Yaml,
        SpecFormat::Toml,
        SpecFormat::Json,
    ];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    // A number below n.
    let mut below = move |n: usize| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        usize::try_from(x % u64::try_from(n.max(1)).unwrap_or(1)).unwrap_or(0)
    };
    let noise = b"{}[]<>:,-'\"\n #&*!|>%@`\\\x00\xff0123456789.e";
    let mut runs = 0;
    for _ in 0..3000 {
        let seed = seeds[below(seeds.len())];
        let mut bytes = seed.as_bytes().to_vec();
        for _ in 0..below(6) + 1 {
            if bytes.is_empty() {
                break;
            }
            let at = below(bytes.len());
            match below(4) {
                0 => bytes.truncate(at),
                1 => bytes[at] = noise[below(noise.len())],
                2 => {
                    let len = below(40);
                    let end = (at + len).min(bytes.len());
                    bytes.drain(at..end);
                }
                _ => {
                    let from = below(bytes.len());
                    let end = (from + 30).min(bytes.len());
                    let piece = bytes[from..end].to_vec();
                    bytes.splice(at..at, piece);
                }
            }
        }
        let text = String::from_utf8_lossy(&bytes);
        for f in formats {
            let _ = load(f, &text);
            runs += 1;
        }
    }
    assert_eq!(runs, 12_000);
}

#[test]
fn too_long_a_spec_is_refused_before_reading() {
    let text = "#".repeat(MAX_SPEC_BYTES + 1);
    let e = parse(SpecFormat::Yaml, &text).err().unwrap_or_default();
    assert!(e.0[0].message.contains("too long"), "{e}");
}
