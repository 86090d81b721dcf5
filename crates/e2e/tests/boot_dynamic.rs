//! Issue 3, point 4: the seed's flow (c). Ten guests booted with only the
//! rendezvous address and their domain's secret race for five dynamic
//! records: five get one each, none twice, the others hear "none left" and
//! keep trying; a fixed record of the same domain is never handed out.
//! Issue 9, point 17: a dynamic instance keeps its record across reboots,
//! and gives it back when it is deleted.

use cm_api::boot::{Config, ConfigDetail, Domain, Registered, Removed};
use std::collections::{HashMap, HashSet};
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
        let r: Registered = cloud.cm_as(&[
            "config",
            "pre-register",
            "--text",
            &text,
            "--domain",
            "pool",
            "--dynamic",
        ]);
        dynamic.insert(r.record.uuid.to_string());
    }
    let fixed: Registered = cloud.cm_as(&[
        "config",
        "pre-register",
        "--text",
        "#cm-guest\n",
        "--domain",
        "pool",
    ]);
    let fixed = fixed.record.uuid.to_string();

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
        Duration::from_secs(900),
        || {
            let list: Vec<Config> = cloud.cm_as(&["config", "list", "--domain", "pool"]);
            let done: Vec<Config> = list
                .into_iter()
                .filter(|r| r.dynamic && r.status.as_str() == "configured")
                .collect();
            (done.len() == 5).then_some(done)
        },
    )
    .unwrap();
    let uuids: HashSet<String> = configured.iter().map(|r| r.uuid.to_string()).collect();
    assert_eq!(uuids, dynamic, "exactly the five dynamic records");
    let members: HashSet<String> = configured
        .iter()
        .map(|r| r.parameter_map["member"].clone())
        .collect();
    assert_eq!(members.len(), 5, "each member config applied once");
    let held_by: HashSet<&str> = configured
        .iter()
        .filter_map(|r| r.assigned_to.as_deref())
        .collect();
    assert_eq!(held_by.len(), 5, "bound to five instances: {configured:?}");
    // Five different guests: each record is bound to the instance that took
    // it, and the consoles say who got what.
    let (winners, waiting) = wait_until(
        "every guest to have asked",
        Duration::from_secs(900),
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
    let f = cloud
        .cm_as::<ConfigDetail>(&["config", "show", &fixed])
        .record;
    assert_eq!((f.status.as_str(), f.assigned), ("registered", false));
    // One more dynamic record: one of the waiting guests takes it on its next try.
    let r: Registered = cloud.cm_as(&[
        "config",
        "pre-register",
        "--text",
        "#cm-guest\n[parameters]\nmember = \"late\"\n",
        "--domain",
        "pool",
        "--dynamic",
    ]);
    let late = r.record.uuid.to_string();
    wait_until(
        "a waiting guest to take the new record",
        Duration::from_secs(120),
        || {
            let rec = cloud
                .cm_as::<ConfigDetail>(&["config", "show", &late])
                .record;
            (rec.status.as_str() == "configured").then_some(())
        },
    )
    .unwrap();
}

/// The uuid of every `assign_dynamic: got UUID` line on `name`'s console.
fn got_lines(cloud: &Cloud, name: &str) -> Vec<String> {
    cloud
        .cm_ok(&["instance", "console", name])
        .lines()
        .filter_map(|l| l.split("assign_dynamic: got ").nth(1))
        .filter_map(|r| r.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// record uuid -> (instance holding it, status), for the domain `pool`.
fn holders(cloud: &Cloud) -> HashMap<String, (String, String)> {
    cloud
        .cm_as::<Vec<Config>>(&["config", "list", "--domain", "pool"])
        .into_iter()
        .map(|r| {
            (
                r.uuid.to_string(),
                (
                    r.assigned_to.unwrap_or_default(),
                    r.status.as_str().to_string(),
                ),
            )
        })
        .collect()
}

/// Issue 9, point 17: ten dynamic guests, five of them rebooted twice; each
/// keeps its record (its own credential binds the record to its instance),
/// none takes a second one, `remove_stale` removes none of them, and
/// deleting an instance puts its record back in the pool for the next one.
/// The rebooted guests lost their trust keys (the test image keeps its
/// state in RAM): each boot sets a new one with its re-key credential.
#[test]
fn dynamic_guests_keep_their_records_across_reboots() {
    const SLOW: Duration = Duration::from_secs(600);
    let mut cloud = Cloud::start().unwrap();
    cloud.add_host("h1", HostOpts::default()).unwrap();
    cloud.add_test_image().unwrap();
    cloud.cm_ok(&["config", "domain", "create", "pool"]);
    for n in 0..10 {
        let text = format!("#cm-guest\n[parameters]\nmember = \"{n}\"\n");
        cloud.cm_ok(&[
            "config",
            "pre-register",
            "--text",
            &text,
            "--domain",
            "pool",
            "--dynamic",
        ]);
    }
    let names: Vec<String> = (0..10).map(|n| format!("d{n}")).collect();
    for name in &names {
        let out = cloud.cm(&[
            "instance",
            "create",
            name,
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
    let all_configured = |cloud: &Cloud| {
        let h = holders(cloud);
        (h.len() == 10 && h.values().all(|(i, s)| !i.is_empty() && s == "configured")).then_some(h)
    };
    let t0 = std::time::Instant::now();
    let before = wait_until("ten records configured", SLOW, || all_configured(&cloud)).unwrap();
    eprintln!("ten dynamic guests configured in {:?}", t0.elapsed());
    let held: HashSet<&String> = before.values().map(|(i, _)| i).collect();
    assert_eq!(held.len(), 10, "one record per instance: {before:?}");

    // Five of them rebooted, twice.
    for round in 2..=3 {
        for name in &names[..5] {
            cloud.cm_ok(&["instance", "reboot", name]);
        }
        wait_until(
            &format!("boot {round} of the five rebooted guests"),
            SLOW,
            || {
                names[..5]
                    .iter()
                    .all(|n| got_lines(&cloud, n).len() >= round)
                    .then_some(())
            },
        )
        .unwrap();
        // The record goes through assigned/fetched again, then configured.
        wait_until(&format!("all configured after round {round}"), SLOW, || {
            let h = all_configured(&cloud)?;
            names[..5]
                .iter()
                .all(|n| got_lines(&cloud, n).len() == round)
                .then_some(h)
        })
        .unwrap();
        eprintln!("reboot round {round} done at {:?}", t0.elapsed());
    }
    // Each guest holds the record it held before; each boot got that one.
    let after = holders(&cloud);
    assert_eq!(after, before, "a record moved, or one was taken anew");
    for name in &names[..5] {
        let got = got_lines(&cloud, name);
        let mine: Vec<&String> = before
            .iter()
            .filter(|(_, (i, _))| i == name)
            .map(|(u, _)| u)
            .collect();
        assert_eq!(got.len(), 3, "{name}: {got:?}");
        assert!(got.iter().all(|u| *u == *mine[0]), "{name}: {got:?}");
    }
    // Each reboot's new trust key was set with that boot's re-key credential.
    let rekeyed = cloud.events(Some("config.trust"));
    assert_eq!(rekeyed.len(), 10, "{rekeyed:?}");
    // None leaked: the pool is exactly full.
    let pool = |cloud: &Cloud| {
        let d: Vec<Domain> = cloud.cm_as(&["config", "domain", "list"]);
        let p = d.into_iter().find(|d| d.name == "pool").unwrap();
        (p.dynamic_total, p.dynamic_free)
    };
    assert_eq!(pool(&cloud), (10, 0));

    // remove_stale: every guest heartbeats (through its host), none is stale.
    std::thread::sleep(Duration::from_secs(2));
    let r: Removed = cloud.cm_as(&["config", "remove-stale", "--older-than", "1"]);
    assert_eq!(r.removed, 0, "{r:?}");
    assert_eq!(holders(&cloud), before);

    // Deleting an instance releases its record; a new dynamic instance takes it.
    let (freed, _) = before.iter().find(|(_, (i, _))| i == "d9").unwrap();
    cloud.cm_ok(&["instance", "delete", "d9"]);
    let rec = cloud
        .cm_as::<ConfigDetail>(&["config", "show", freed])
        .record;
    assert_eq!(
        (
            rec.assigned,
            rec.assigned_to.as_deref(),
            rec.status.as_str(),
            rec.trust_key_set
        ),
        (false, None, "registered", false),
        "{rec:?}"
    );
    assert_eq!(pool(&cloud), (10, 1));
    cloud.cm_ok(&[
        "instance",
        "create",
        "d10",
        "--image",
        "cm-test",
        "--memory",
        "96",
        "--dynamic-domain",
        "pool",
    ]);
    wait_until("d10 to hold the released record", SLOW, || {
        let h = holders(&cloud);
        (h.get(freed) == Some(&("d10".to_string(), "configured".to_string()))).then_some(())
    })
    .unwrap();
    assert_eq!(pool(&cloud), (10, 0));
}
