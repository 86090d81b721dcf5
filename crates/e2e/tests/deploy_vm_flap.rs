//! Issue 11 point 9 with a real VM: a service that keeps crashing (a
//! command that exits 1 a second after it starts) climbs the ladder with
//! back-off and within its budgets, and ends `failed` with the reason, never
//! in a storm: the assembly is restarted at most its budget (1), replaced at
//! most the policy's (1), at most one instance of it lives at any moment,
//! and once failed nothing more is done to it. The exact sequence of events
//! is not asserted (rungs may be added below restart-the-assembly), only
//! the bounds and the outcome (docs/deployables.md, "The ladder").

use cm_api::words::{EngineAction, SlotState};
use std::time::{Duration, Instant};
use test_infra::deploy::{self, slot, DeployUser};
use test_infra::Cloud;

/// Three boots (first, restart, replacement) and the back-offs between.
const LIMIT: Duration = Duration::from_secs(900);

const FLAP: &str = "\
name: flap
policy:
  heartbeat_interval: 1s
  heartbeat_timeout: 3s
  restart_backoff: {initial: 1s, max: 10s}
  escalation: {failures: 1, period: 10m}
assemblies:
  - name: app
    image: cm-test
    flavor: m1.tiny
    escalation: {failures: 1, period: 10m}
    services:
      - name: crash
        run: sleep 1; exit 1
        escalation: {failures: 2, period: 10m}
";

#[test]
fn a_service_that_keeps_crashing_escalates_with_back_off_to_failed_without_a_storm() {
    let mut cloud = Cloud::start().unwrap();
    let opts = deploy::own_forwards(&cloud, 0);
    cloud.add_host("h1", opts).unwrap();
    cloud.add_test_image().unwrap();
    let user = DeployUser::new(&cloud, "flap");
    let started = Instant::now();
    user.apply(FLAP);

    // Sample while it climbs: never two instances of the slot at once.
    let mut most = 0;
    let d = loop {
        let d = user.show();
        most = most.max(user.live_instances().len());
        if slot(&d, "app-0").state == SlotState::Failed {
            break d;
        }
        assert!(
            started.elapsed() < LIMIT,
            "app-0 did not end failed within {LIMIT:?}: {d:#?}\n{:#?}",
            user.events()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let failed_after = started.elapsed();
    let s = slot(&d, "app-0");
    eprintln!(
        "apply → app-0 failed: {:.1}s ({:?})",
        failed_after.as_secs_f64(),
        s.reason
    );
    assert!(
        most <= 1,
        "at most one instance of the slot at once, saw {most}"
    );

    let count = |events: &[cm_api::event::Event], a: EngineAction| {
        events
            .iter()
            .filter(|e| e.detail.object.as_deref() == Some("app-0") && e.detail.action == Some(a))
            .count()
    };
    let events = user.events();
    let restarts = count(&events, EngineAction::RestartAssembly);
    let replaces = count(&events, EngineAction::Replace);
    let fails = count(&events, EngineAction::Fail);
    eprintln!(
        "events: {} in all; restart-assembly {restarts}, replace {replaces}, fail {fails}, \
         restart-service {}",
        events.len(),
        count(&events, EngineAction::RestartService)
    );
    for e in &events {
        eprintln!(
            "  {} {:?} {:?}→{:?} {:?}",
            e.detail.object.as_deref().unwrap_or("-"),
            e.detail.action,
            e.detail.from,
            e.detail.to,
            e.detail.reason
        );
    }
    assert!(
        restarts <= 1,
        "the assembly's budget is 1 restart: {restarts}"
    );
    assert!(
        replaces <= 1,
        "the policy's budget is 1 replacement: {replaces}"
    );
    assert_eq!(fails, 1, "one fail event says why");
    let fail = events
        .iter()
        .find(|e| e.detail.action == Some(EngineAction::Fail))
        .unwrap();
    assert!(
        fail.detail
            .reason
            .as_deref()
            .unwrap_or("")
            .contains("budget"),
        "the reason names the spent budget: {fail:?}"
    );
    // No storm: bounded events for the whole climb (each failure is counted
    // once, each act said once).
    assert!(
        events.len() <= 60,
        "{} events for one flapping service",
        events.len()
    );

    // Failed is final: nothing more is done to it while it stays so.
    let mark = user.last_seq();
    std::thread::sleep(Duration::from_secs(20));
    let later: Vec<_> = user
        .events()
        .into_iter()
        .filter(|e| {
            e.seq > mark
                && matches!(
                    e.detail.action,
                    Some(EngineAction::RestartAssembly | EngineAction::Replace)
                )
        })
        .collect();
    assert!(later.is_empty(), "acted after failed: {later:#?}");
    assert_eq!(slot(&user.show(), "app-0").state, SlotState::Failed);
    assert!(user.live_instances().len() <= 1);
}
