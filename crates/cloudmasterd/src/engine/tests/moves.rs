//! The move rung's table (engine/moves.rs): which slot a failed slot's
//! service goes to, only where the spec allows, under a name that never
//! collides, on again when its host fails, and back when its own slot is
//! healthy again.

use super::ladder::slot;
use crate::engine::moves::{plan, Transfer};
use crate::engine::render::{render, split_moved, SlotPart};
use crate::store::SlotRow;
use cm_api::deploy::DeployableSpec;
use cm_api::words::{EngineAction, SlotState};

fn spec() -> DeployableSpec {
    serde_json::from_value(serde_json::json!({
        "name": "app",
        "assemblies": [
            {"name": "web", "image": "tiny", "count": 2,
             "services": [{"name": "httpd", "run": "httpd -f"}]},
            {"name": "worker", "image": "tiny", "count": 2,
             "services": [{"name": "job", "run": "job --queue q", "may_move_to": ["web"],
                           "env": {"DB": {"ref": "db.address"}}},
                          {"name": "log", "run": "logger"}]},
            {"name": "db", "image": "tiny", "stateful": true,
             "services": [{"name": "pg", "run": "pg"}]}
        ]
    }))
    .unwrap()
}

fn at(asm: &str, idx: u32, state: SlotState) -> SlotRow {
    let mut s = slot(state);
    s.assembly = asm.into();
    s.idx = idx;
    s
}

/// web-0, web-1, worker-0, worker-1, db-0, all healthy.
fn slots() -> Vec<SlotRow> {
    vec![
        at("web", 0, SlotState::Healthy),
        at("web", 1, SlotState::Healthy),
        at("worker", 0, SlotState::Healthy),
        at("worker", 1, SlotState::Healthy),
        at("db", 0, SlotState::Healthy),
    ]
}

fn apply(slots: &mut [SlotRow], t: &Transfer) {
    for (i, row) in &t.sides {
        slots[*i] = row.clone();
    }
}

/// Every transfer until none is left (bounded).
fn settle(spec: &DeployableSpec, slots: &mut [SlotRow]) -> Vec<Transfer> {
    let mut done = Vec::new();
    for _ in 0..20 {
        match plan(spec, slots) {
            Some(t) => {
                apply(slots, &t);
                done.push(t);
            }
            None => return done,
        }
    }
    panic!("the move rung does not settle: {done:#?}");
}

fn list(spec: &DeployableSpec, s: &SlotRow) -> Vec<String> {
    s.services.clone().unwrap_or_else(|| {
        let a = spec
            .assemblies
            .iter()
            .find(|a| a.name == s.assembly)
            .unwrap();
        a.services.iter().map(|x| x.name.clone()).collect()
    })
}

/// Each service of each slot runs in exactly one place.
fn assert_once(spec: &DeployableSpec, slots: &[SlotRow]) {
    for own in slots {
        let a = spec
            .assemblies
            .iter()
            .find(|a| a.name == own.assembly)
            .unwrap();
        for svc in &a.services {
            let here = list(spec, own).contains(&svc.name) as usize;
            let moved = format!("{}.{}", own.name(), svc.name);
            let away = slots
                .iter()
                .filter(|s| list(spec, s).contains(&moved))
                .count();
            assert_eq!(here + away, 1, "{moved}: {slots:#?}");
        }
    }
}

#[test]
fn nothing_moves_while_no_slot_has_failed() {
    let mut s = slots();
    s[3].state = SlotState::Down;
    assert_eq!(plan(&spec(), &s), None);
}

#[test]
fn a_failed_slots_movable_service_goes_to_the_first_healthy_slot_named() {
    let spec = spec();
    let mut s = slots();
    s[3].state = SlotState::Failed;
    s[3].reason = Some("VM crashed; replace budget 3/3 in 10m exhausted".into());
    let t = plan(&spec, &s).expect("a move");
    assert_eq!((t.from.as_str(), t.to.as_str()), ("worker-1", "web-0"));
    assert_eq!(t.object, "worker-1.job");
    assert!(
        t.reason.contains("worker-1 failed: job moved to web-0"),
        "{}",
        t.reason
    );
    apply(&mut s, &t);
    // Only `job` has may_move_to: `log` stays on its failed slot.
    assert_eq!(s[3].services, Some(vec!["log".to_string()]));
    assert_eq!(
        s[0].services,
        Some(vec!["httpd".to_string(), "worker-1.job".to_string()])
    );
    assert_eq!(
        s[3].state,
        SlotState::Failed,
        "the failed slot stays failed"
    );
    let why = s[3].reason.clone().unwrap();
    assert!(
        why.starts_with("VM crashed; replace budget") && why.ends_with("| moved: job → web-0"),
        "{why}"
    );
    assert_eq!(plan(&spec, &s), None, "one move is enough");
    assert_once(&spec, &s);
    // The host renders it under its moved name, from worker's spec, with
    // its references resolved as for its own slot.
    let job = &spec.assemblies[1].services[0];
    let moved = [("worker-1.job".to_string(), job)];
    let part = SlotPart {
        services: s[0].services.as_deref(),
        restart_gens: None,
        moved: &moved,
    };
    let lookup = |r: &str| (r == "db.address").then(|| "10.0.0.9:30002".to_string());
    let text = render(&spec.assemblies[0], 500, part, &lookup).unwrap();
    let v: toml::Table = toml::from_str(&text).unwrap();
    let names: Vec<_> = v["service"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["httpd", "worker-1.job"]);
    assert_eq!(v["service"][1]["run"].as_str(), Some("job --queue q"));
    assert_eq!(
        v["service"][1]["env"]["DB"].as_str(),
        Some("10.0.0.9:30002")
    );
}

#[test]
fn never_to_an_unhealthy_busy_or_unnamed_slot() {
    let spec = spec();
    let mut s = slots();
    s[3].state = SlotState::Failed;
    s[0].state = SlotState::Degraded;
    s[1].action = Some(EngineAction::RestartAssembly);
    // worker-0 and db-0 are healthy but not named in may_move_to.
    assert_eq!(plan(&spec, &s), None);
    s[1].action = None;
    let t = plan(&spec, &s).unwrap();
    assert_eq!(t.to, "web-1", "the first healthy one by index");
    for st in [SlotState::Booting, SlotState::Suspect, SlotState::Failed] {
        let mut s = slots();
        s[3].state = SlotState::Failed;
        s[0].state = st;
        s[1].state = st;
        assert_eq!(plan(&spec, &s), None, "{st:?}");
    }
}

#[test]
fn two_failed_slots_moved_to_one_host_never_collide() {
    let spec = spec();
    let mut s = slots();
    s[2].state = SlotState::Failed;
    s[3].state = SlotState::Failed;
    let done = settle(&spec, &mut s);
    assert_eq!(done.len(), 2);
    let on_web0 = list(&spec, &s[0]);
    assert_eq!(on_web0, ["httpd", "worker-0.job", "worker-1.job"]);
    let mut uniq = on_web0.clone();
    uniq.dedup();
    assert_eq!(uniq, on_web0);
    // A moved name is never a service name (those have no dot).
    assert!(on_web0.iter().skip(1).all(|n| split_moved(n).is_some()));
    assert!(split_moved("httpd").is_none());
    assert_eq!(
        split_moved("my-web-12.job"),
        Some(("my-web-12", "my-web", "job"))
    );
    assert_once(&spec, &s);
}

#[test]
fn a_failed_host_passes_them_on_or_gives_them_back() {
    let spec = spec();
    let mut s = slots();
    s[3].state = SlotState::Failed;
    settle(&spec, &mut s);
    // web-0 fails too: its guest cannot run the moved service.
    s[0].state = SlotState::Failed;
    let t = plan(&spec, &s).unwrap();
    assert_eq!((t.from.as_str(), t.to.as_str()), ("web-0", "web-1"));
    assert!(
        t.reason
            .contains("web-0 failed: job of worker-1 moved on to web-1"),
        "{}",
        t.reason
    );
    apply(&mut s, &t);
    assert_eq!(list(&spec, &s[1]), ["httpd", "worker-1.job"]);
    assert_eq!(list(&spec, &s[0]), ["httpd"]);
    assert!(s[3]
        .reason
        .as_deref()
        .unwrap()
        .ends_with("moved: job → web-1"));
    assert_once(&spec, &s);
    // Then web-1 fails and no web slot is healthy: back on its own
    // (failed) slot, with an event, never lost.
    s[1].state = SlotState::Failed;
    let t = plan(&spec, &s).unwrap();
    assert_eq!(t.to, "worker-1");
    assert!(
        t.reason.contains("is back on its failed slot worker-1"),
        "{}",
        t.reason
    );
    apply(&mut s, &t);
    assert_eq!(s[3].services, None, "all its own services again");
    assert_eq!(plan(&spec, &s), None);
    assert_once(&spec, &s);
    // A web slot healthy again takes it.
    s[0].state = SlotState::Healthy;
    let t = plan(&spec, &s).unwrap();
    assert_eq!((t.from.as_str(), t.to.as_str()), ("worker-1", "web-0"));
}

#[test]
fn a_slot_healthy_again_takes_its_services_back() {
    let spec = spec();
    let mut s = slots();
    s[3].state = SlotState::Failed;
    settle(&spec, &mut s);
    // Repaired, on its way back: the service stays where it runs.
    s[3].state = SlotState::Booting;
    assert_eq!(plan(&spec, &s), None);
    assert_once(&spec, &s);
    s[3].state = SlotState::Healthy;
    let t = plan(&spec, &s).unwrap();
    assert_eq!((t.from.as_str(), t.to.as_str()), ("web-0", "worker-1"));
    assert!(
        t.reason
            .contains("worker-1 is healthy again: job taken back from web-0"),
        "{}",
        t.reason
    );
    apply(&mut s, &t);
    assert_eq!(s[0].services, None);
    assert_eq!(s[3].services, None);
    assert_eq!(plan(&spec, &s), None);
    assert_once(&spec, &s);
}

#[test]
fn a_service_whose_slot_left_the_spec_is_dropped_from_its_host() {
    let spec = spec();
    let mut s = slots();
    s[0].services = Some(vec!["httpd".into(), "worker-7.job".into()]);
    let t = plan(&spec, &s).unwrap();
    assert!(t.reason.contains("its slot is gone"), "{}", t.reason);
    apply(&mut s, &t);
    assert_eq!(s[0].services, None);
}

/// Random slot states (failures, heals, repairs) with the rung settled
/// after each step: every service runs in exactly one place, a moved one
/// only on a healthy-or-recovering slot of an assembly its spec names
/// (never the stateful db), never on a failed slot, and back home as
/// soon as its slot is healthy. Seeds are fixed: a failure reproduces.
#[test]
fn its_invariants_hold_over_random_sequences() {
    let spec = spec();
    let states = [
        SlotState::Healthy,
        SlotState::Healthy,
        SlotState::Failed,
        SlotState::Down,
        SlotState::Booting,
        SlotState::Degraded,
    ];
    for seed in 1..=200u64 {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut next = |n: u64| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            x.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
        };
        let mut s = slots();
        for step in 0..100 {
            let i = usize::try_from(next(s.len() as u64)).unwrap();
            let st = states[usize::try_from(next(states.len() as u64)).unwrap()];
            s[i].state = st;
            s[i].action = (next(5) == 0).then_some(EngineAction::RestartAssembly);
            settle(&spec, &mut s);
            let ctx = format!("seed {seed} step {step}: {s:#?}");
            assert_once(&spec, &s);
            let free_web = s.iter().any(|w| {
                w.assembly == "web" && w.state == SlotState::Healthy && w.action.is_none()
            });
            for own in s.iter().filter(|o| o.state == SlotState::Failed) {
                let kept =
                    own.assembly == "worker" && list(&spec, own).contains(&"job".to_string());
                assert!(
                    !(kept && free_web),
                    "a movable job kept on its failed slot: {ctx}"
                );
            }
            for host in &s {
                let l = list(&spec, host);
                let mut u = l.clone();
                u.sort();
                u.dedup();
                assert_eq!(u.len(), l.len(), "a name twice: {ctx}");
                for entry in l.iter().filter(|n| split_moved(n).is_some()) {
                    let (own, _, _) = split_moved(entry).unwrap();
                    assert_eq!(
                        host.assembly, "web",
                        "{entry} where its spec forbids: {ctx}"
                    );
                    assert_ne!(
                        host.state,
                        SlotState::Failed,
                        "{entry} on a failed slot: {ctx}"
                    );
                    let own = s.iter().find(|o| o.name() == own).unwrap();
                    assert!(
                        !(own.state == SlotState::Healthy && own.action.is_none()),
                        "{entry} not taken back: {ctx}"
                    );
                }
            }
        }
    }
}
