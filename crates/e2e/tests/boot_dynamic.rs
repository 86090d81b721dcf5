//! Issue 3, point 4: the seed's flow (c). Ten guests booted with only the
//! rendezvous address and their domain's secret race for five dynamic
//! records: five get one each, none twice, the others hear "none left" and
//! keep trying; a fixed record of the same domain is never handed out.

use std::collections::HashSet;
use std::time::Duration;
use test_infra::{wait_until, Cloud, HostOpts};

#[test]
fn ten_guests_race_for_five_dynamic_records() {
    let mut cloud = Cloud::start().unwrap();
    cloud.add_host("h1", HostOpts::default()).unwrap();
    cloud.add_test_image().unwrap();
    cloud.cm_ok(&["config", "domain", "create", "pool"]);
    let mut dynamic = HashSet::new();
    for n in 0..5 {
        let text = format!("#cm-guest\n[parameters]\nmember = \"{n}\"\n");
        let r = cloud.cm_json(&[
            "config",
            "pre-register",
            "--text",
            &text,
            "--domain",
            "pool",
            "--dynamic",
        ]);
        dynamic.insert(r["record"]["uuid"].as_str().unwrap().to_string());
    }
    let fixed = cloud.cm_json(&[
        "config",
        "pre-register",
        "--text",
        "#cm-guest\n",
        "--domain",
        "pool",
    ]);
    let fixed = fixed["record"]["uuid"].as_str().unwrap().to_string();

    for n in 0..10 {
        let out = cloud.cm(&[
            "instance",
            "create",
            &format!("g{n}"),
            "--image",
            "cm-test",
            "--memory",
            "96",
            "--dynamic-domain",
            "pool",
            "--no-wait",
        ]);
        assert_eq!(out.code, 0, "{}", out.stderr);
    }
    // Five records configured, by five different guests.
    let configured = wait_until(
        "five dynamic records configured",
        Duration::from_secs(300),
        || {
            let list = cloud.cm_json(&["config", "list", "--domain", "pool"]);
            let done: Vec<serde_json::Value> = list
                .as_array()
                .unwrap()
                .iter()
                .filter(|r| r["dynamic"] == true && r["status"] == "configured")
                .cloned()
                .collect();
            (done.len() == 5).then_some(done)
        },
    )
    .unwrap();
    let uuids: HashSet<String> = configured
        .iter()
        .map(|r| r["uuid"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(uuids, dynamic, "exactly the five dynamic records");
    let members: HashSet<String> = configured
        .iter()
        .map(|r| r["parameter_map"]["member"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(members.len(), 5, "each member config applied once");
    // Five different guests: each record's trust key is keyed on its VM's
    // id, and the consoles say who got what.
    let (winners, waiting) = wait_until(
        "every guest to have asked",
        Duration::from_secs(300),
        || {
            let mut winners = Vec::new();
            let mut waiting = 0;
            for n in 0..10 {
                let console = cloud.cm_ok(&["instance", "console", &format!("g{n}")]);
                if let Some(line) = console.lines().find(|l| l.contains("assign_dynamic: got ")) {
                    let uuid = line
                        .split("got ")
                        .nth(1)?
                        .split_whitespace()
                        .next()?
                        .to_string();
                    winners.push(uuid);
                } else if console.contains("assign_dynamic: none left in domain pool; retrying in")
                {
                    waiting += 1;
                }
            }
            (winners.len() + waiting == 10).then_some((winners, waiting))
        },
    )
    .unwrap();
    let distinct: HashSet<&String> = winners.iter().collect();
    assert_eq!((winners.len(), distinct.len()), (5, 5), "{winners:?}");
    assert_eq!(waiting, 5, "the other five hear none left and retry");
    // The fixed record of the same domain was never handed out.
    let f = cloud.cm_json(&["config", "show", &fixed]);
    assert_eq!(
        (f["status"].as_str(), f["assigned"].as_bool()),
        (Some("registered"), Some(false))
    );
    // One more dynamic record: one of the waiting guests takes it on its next try.
    let r = cloud.cm_json(&[
        "config",
        "pre-register",
        "--text",
        "#cm-guest\n[parameters]\nmember = \"late\"\n",
        "--domain",
        "pool",
        "--dynamic",
    ]);
    let late = r["record"]["uuid"].as_str().unwrap().to_string();
    wait_until(
        "a waiting guest to take the new record",
        Duration::from_secs(120),
        || (cloud.cm_json(&["config", "show", &late])["status"] == "configured").then_some(()),
    )
    .unwrap();
}
