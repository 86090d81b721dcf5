//! The ladder's table: each rung and each guard.

use crate::engine::freeze::{freeze_reason, Hosts};
use crate::engine::ladder::{decide, Act, Policy, SlotView};
use crate::engine::observe::Health;
use crate::store::{HostId, Millis, SlotRow};
use cm_api::deploy::{Backoff, Budget, Limit, Unlimited};
use cm_api::ids::DeployableId;
use cm_api::time::Dur;
use cm_api::words::{EngineAction, SlotState};

pub(crate) fn slot(state: SlotState) -> SlotRow {
    SlotRow {
        deployable_id: DeployableId::from(uuid::Uuid::nil()),
        assembly: "web".into(),
        idx: 0,
        instance_id: Some(crate::store::InstanceId::from(uuid::Uuid::nil())),
        incarnation: 1,
        spec_generation: 1,
        config_version: 0,
        state,
        state_since: 0,
        reason: None,
        action: None,
        action_started_at: None,
        action_deadline: None,
        next_action_at: None,
        backoff_step: 0,
        windows: Default::default(),
        services: None,
        restart_gens: Default::default(),
        retiring: vec![],
        updated_at: 0,
    }
}

pub(crate) fn budget(n: u32) -> Budget {
    Budget {
        failures: Limit::Count(n),
        period: Dur::from_secs(600),
    }
}

pub(crate) fn policy() -> Policy {
    Policy {
        stateful: false,
        assembly: budget(3),
        replace: budget(3),
        services: [("httpd".to_string(), budget(2))].into(),
        backoff: Backoff {
            initial: Dur::from_secs(1),
            max: Dur::from_secs(30),
        },
        heartbeat_timeout: 3_000,
        healthy_deadline: 120_000,
        frozen: false,
    }
}

pub(crate) fn host(n: u128) -> HostId {
    HostId::from(uuid::Uuid::from_u128(n))
}

pub(crate) fn view(s: SlotRow, health: Health) -> SlotView {
    SlotView {
        slot: s,
        health,
        boot_gen: 4,
        host: Some(host(1)),
        host_name: Some("a".into()),
    }
}

fn down() -> Health {
    Health::Down {
        why: "crashed".into(),
    }
}

const NOW: Millis = 1_000_000;

#[test]
fn a_new_slot_is_created() {
    let mut s = slot(SlotState::Creating);
    s.instance_id = None;
    s.incarnation = 0;
    let d = decide(&view(s, Health::Missing), &policy(), NOW);
    assert_eq!(d.act, Act::Create);
    assert_eq!(d.slot.action, Some(EngineAction::Create));
    assert_eq!(d.slot.action_deadline, Some(NOW + 120_000));
}

#[test]
fn a_crash_restarts_the_assembly_then_replaces_then_fails() {
    let p = policy();
    let mut s = slot(SlotState::Healthy);
    let d = decide(&view(s.clone(), down()), &p, NOW);
    assert_eq!(
        d.act,
        Act::RestartAssembly {
            expected_boot_gen: 4
        }
    );
    assert_eq!(d.slot.windows["assembly"], vec![NOW]);
    assert_eq!(d.slot.next_action_at, Some(NOW + 1_000));
    assert_eq!(d.counters["assembly"], "0/3 in 10m");
    // Three restarts in the window: the fourth crash replaces.
    s.windows
        .insert("assembly".into(), vec![NOW - 3, NOW - 2, NOW - 1]);
    let d = decide(&view(s.clone(), down()), &p, NOW);
    assert_eq!(
        d.act,
        Act::Replace {
            avoid: Some(host(1))
        }
    );
    assert!(d
        .reason
        .unwrap()
        .contains("restart budget 3/3 in 10m spent"));
    // And with the replace budget spent too: failed, nothing done.
    s.windows
        .insert("replace".into(), vec![NOW - 3, NOW - 2, NOW - 1]);
    let d = decide(&view(s.clone(), down()), &p, NOW);
    assert_eq!(d.act, Act::None);
    assert_eq!(d.slot.state, SlotState::Failed);
    assert_eq!(d.action, Some(EngineAction::Fail));
    // A failed slot stays failed.
    let d2 = decide(&view(d.slot.clone(), down()), &p, NOW + 1);
    assert_eq!(d2.act, Act::None);
    assert!(!d2.changes(&d.slot));
}

#[test]
fn budgets_forget_failures_older_than_their_period() {
    let mut s = slot(SlotState::Healthy);
    s.windows.insert(
        "assembly".into(),
        vec![NOW - 700_000, NOW - 650_000, NOW - 1],
    );
    let d = decide(&view(s, down()), &policy(), NOW);
    assert!(matches!(d.act, Act::RestartAssembly { .. }));
    assert_eq!(d.slot.windows["assembly"], vec![NOW - 1, NOW]);
}

#[test]
fn a_budget_of_zero_skips_its_rung_and_unlimited_never_leaves_it() {
    let mut p = policy();
    p.assembly = budget(0);
    let d = decide(&view(slot(SlotState::Healthy), down()), &p, NOW);
    assert_eq!(
        d.act,
        Act::Replace {
            avoid: Some(host(1))
        }
    );
    p.assembly.failures = Limit::Unlimited(Unlimited::Unlimited);
    let mut s = slot(SlotState::Healthy);
    s.windows.insert("assembly".into(), vec![NOW - 1; 50]);
    let d = decide(&view(s, down()), &p, NOW);
    assert!(matches!(d.act, Act::RestartAssembly { .. }));
}

#[test]
fn back_off_holds_the_next_action_and_grows() {
    let p = policy();
    let mut s = slot(SlotState::Down);
    s.backoff_step = 3;
    s.next_action_at = Some(NOW + 500);
    let d = decide(&view(s.clone(), down()), &p, NOW);
    assert_eq!(d.act, Act::None);
    assert_eq!(d.next_wake(), Some(NOW + 500));
    let d = decide(&view(s, down()), &p, NOW + 500);
    assert!(matches!(d.act, Act::RestartAssembly { .. }));
    assert_eq!(d.slot.next_action_at, Some(NOW + 500 + 8_000));
    assert_eq!(d.slot.backoff_step, 4);
    // Capped at max.
    let mut s = slot(SlotState::Down);
    s.backoff_step = 20;
    let d = decide(&view(s, down()), &p, NOW);
    assert_eq!(d.slot.next_action_at, Some(NOW + 30_000));
}

#[test]
fn back_off_resets_after_healthy_time() {
    let mut s = slot(SlotState::Healthy);
    s.backoff_step = 5;
    s.next_action_at = Some(NOW - 10);
    s.state_since = NOW - 30_000;
    let d = decide(&view(s.clone(), Health::Healthy), &policy(), NOW);
    assert_eq!(d.slot.backoff_step, 5);
    s.state_since = NOW - 60_000;
    let d = decide(&view(s, Health::Healthy), &policy(), NOW);
    assert_eq!(d.slot.backoff_step, 0);
    assert_eq!(d.slot.next_action_at, None);
}

#[test]
fn one_action_at_a_time_until_healthy_or_its_deadline() {
    let p = policy();
    let d = decide(&view(slot(SlotState::Healthy), down()), &p, NOW);
    let acting = d.slot;
    // Booting after the restart: wait.
    let d = decide(&view(acting.clone(), Health::Booting), &p, NOW + 5_000);
    assert_eq!(d.act, Act::None);
    assert_eq!(d.slot.action, Some(EngineAction::RestartAssembly));
    // Healthy: the action is done.
    let d = decide(&view(acting.clone(), Health::Healthy), &p, NOW + 6_000);
    assert_eq!(d.slot.action, None);
    assert_eq!(d.slot.state, SlotState::Healthy);
    // Still booting at the deadline: counted as a failure, next rung.
    let d = decide(&view(acting.clone(), Health::Booting), &p, NOW + 120_000);
    assert!(matches!(d.act, Act::RestartAssembly { .. }));
    assert!(d.reason.unwrap().contains("did not make it healthy"));
    assert_eq!(d.slot.windows["assembly"].len(), 2);
    // Crashed again before the deadline: acted on (after back-off).
    let d = decide(&view(acting, down()), &p, NOW + 2_000);
    assert!(matches!(d.act, Act::RestartAssembly { .. }));
}

#[test]
fn silence_restarts_but_not_while_frozen_and_crashes_act_even_frozen() {
    let mut p = policy();
    let d = decide(&view(slot(SlotState::Suspect), Health::Silent), &p, NOW);
    assert!(matches!(d.act, Act::RestartAssembly { .. }));
    p.frozen = true;
    let d = decide(&view(slot(SlotState::Suspect), Health::Silent), &p, NOW);
    assert_eq!(d.act, Act::None);
    assert_eq!(d.slot.state, SlotState::Down);
    let d = decide(&view(slot(SlotState::Healthy), down()), &p, NOW);
    assert!(matches!(d.act, Act::RestartAssembly { .. }));
}

#[test]
fn suspect_is_watched_not_acted_on() {
    let d = decide(
        &view(slot(SlotState::Healthy), Health::Suspect),
        &policy(),
        NOW,
    );
    assert_eq!(d.act, Act::None);
    assert_eq!(d.slot.state, SlotState::Suspect);
    assert_eq!(d.slot.state_since, NOW);
}

#[test]
fn service_failures_are_counted_then_escalate_to_the_assembly() {
    let p = policy();
    let bad = || Health::Degraded {
        services: vec!["httpd".into()],
        restart: vec![],
    };
    let mut s = slot(SlotState::Healthy);
    for n in 1..=2 {
        let d = decide(&view(s.clone(), bad()), &p, NOW + n);
        assert_eq!(d.act, Act::None, "failure {n}");
        assert_eq!(d.action, Some(EngineAction::RestartService));
        // The same observation again counts nothing.
        let again = decide(&view(d.slot.clone(), bad()), &p, NOW + n);
        assert_eq!(
            again.slot.windows["svc:httpd"].len(),
            usize::try_from(n).unwrap()
        );
        s = d.slot;
        s.state = SlotState::Healthy;
    }
    // Over the budget inside the back-off the first count armed: held.
    let held = decide(&view(s.clone(), bad()), &p, NOW + 3);
    assert_eq!(held.act, Act::None);
    assert!(held.slot.reason.unwrap().contains("back-off until"));
    let d = decide(&view(s, bad()), &p, NOW + 5_000);
    assert!(matches!(d.act, Act::RestartAssembly { .. }));
    assert!(d
        .reason
        .unwrap()
        .contains("service httpd failing: httpd failed 3/2"));
}

#[test]
fn an_unreachable_stateless_slot_is_replaced_after_the_timeout() {
    let p = policy();
    let h = Health::Unreachable {
        host: host(1),
        since: NOW,
    };
    let d = decide(&view(slot(SlotState::Healthy), h.clone()), &p, NOW + 1_000);
    assert_eq!(d.act, Act::None);
    assert_eq!(d.slot.state, SlotState::Unreachable);
    assert_eq!(d.next_wake(), Some(NOW + 3_000));
    let d = decide(&view(d.slot, h), &p, NOW + 3_000);
    assert_eq!(
        d.act,
        Act::Replace {
            avoid: Some(host(1))
        }
    );
}

#[test]
fn an_unreachable_stateful_slot_waits() {
    let mut p = policy();
    p.stateful = true;
    let h = Health::Unreachable {
        host: host(1),
        since: NOW,
    };
    let d = decide(
        &view(slot(SlotState::Healthy), h.clone()),
        &p,
        NOW + 600_000,
    );
    assert_eq!(d.act, Act::None);
    assert_eq!(d.action, Some(EngineAction::Wait));
    assert!(d.reason.unwrap().contains("cm host evacuate a"));
    // Said once, not on every pass.
    let d2 = decide(&view(d.slot, h), &p, NOW + 700_000);
    assert_eq!(d2.action, None);
}

fn silent_on(idx: u32, h: u128, since: Millis) -> SlotView {
    let mut s = slot(SlotState::Down);
    s.idx = idx;
    s.state_since = since;
    let mut v = view(s, Health::Silent);
    v.host = Some(host(h));
    v.host_name = Some(format!("h{h}"));
    v
}

fn healthy_on(idx: u32, h: u128) -> SlotView {
    let mut v = silent_on(idx, h, 0);
    v.health = Health::Healthy;
    v
}

const HOSTS: Hosts = Hosts {
    enabled: 3,
    enabled_down: 0,
};

#[test]
fn the_freeze_rule_needs_half_the_slots_on_two_hosts_together() {
    // 2 of 4 on one host: host death, not a partition.
    let one_host = [
        silent_on(0, 1, NOW),
        silent_on(1, 1, NOW),
        healthy_on(2, 2),
        healthy_on(3, 2),
    ];
    assert_eq!(freeze_reason(&one_host, HOSTS, 3_000, NOW), None);
    // 2 of 4 on two hosts: freeze.
    let two_hosts = [
        silent_on(0, 1, NOW),
        silent_on(1, 2, NOW),
        healthy_on(2, 3),
        healthy_on(3, 3),
    ];
    let why = freeze_reason(&two_hosts, HOSTS, 3_000, NOW).unwrap();
    assert!(why.starts_with("2 of 4 slots"), "{why}");
    // Not together (10 s apart with a 3 s timeout): no freeze.
    let apart = [
        silent_on(0, 1, NOW - 10_000),
        silent_on(1, 2, NOW),
        healthy_on(2, 3),
        healthy_on(3, 3),
    ];
    assert_eq!(freeze_reason(&apart, HOSTS, 3_000, NOW), None);
    // 1 of 2 hosts down does not freeze; 2 of 3 does (with a bad slot).
    let one = [silent_on(0, 1, NOW), healthy_on(1, 2)];
    let hosts = |down| Hosts {
        enabled: 2,
        enabled_down: down,
    };
    assert_eq!(freeze_reason(&one, hosts(1), 3_000, NOW), None);
    let majority = Hosts {
        enabled: 3,
        enabled_down: 2,
    };
    assert!(freeze_reason(&one, majority, 3_000, NOW).is_some());
    // A single slot never freezes by the first rule.
    assert_eq!(
        freeze_reason(&[silent_on(0, 1, NOW)], HOSTS, 3_000, NOW),
        None
    );
}

#[test]
fn an_action_on_a_host_that_went_down_gives_way_to_the_unreachable_rule() {
    let p = policy();
    let mut s = slot(SlotState::Acting);
    s.action = Some(EngineAction::Create);
    s.action_deadline = Some(NOW + 100_000);
    let h = Health::Unreachable {
        host: host(1),
        since: NOW - 5_000,
    };
    let d = decide(&view(s, h), &p, NOW);
    assert_eq!(
        d.act,
        Act::Replace {
            avoid: Some(host(1))
        }
    );
}

fn unhealthy() -> Health {
    Health::Degraded {
        services: vec!["httpd".into()],
        restart: vec!["httpd".into()],
    }
}

#[test]
fn a_service_failing_its_check_is_restarted_in_the_guest_then_escalates() {
    let p = policy(); // httpd: 2 in 10m, back-off 1 s doubling
    let s = slot(SlotState::Healthy);
    let d = decide(&view(s, unhealthy()), &p, NOW);
    assert_eq!(
        d.act,
        Act::RestartService {
            services: vec!["httpd".into()]
        }
    );
    assert_eq!(d.slot.restart_gens["httpd"], 1);
    assert_eq!(d.slot.action, None, "rung 1 holds no action");
    assert_eq!(d.slot.next_action_at, Some(NOW + 1_000));
    assert_eq!(d.counters["svc:httpd"], "1/2 in 10m");
    assert!(d.reason.unwrap().contains("restart_gen 1"));
    // Still failing inside the back-off: nothing counted, nothing done.
    let held = decide(&view(d.slot.clone(), unhealthy()), &p, NOW + 500);
    assert_eq!(held.act, Act::None);
    assert!(!held.changes(&d.slot), "{held:?}");
    // Still failing once it ran out: counted, restarted again (gen 2).
    let d = decide(&view(d.slot, unhealthy()), &p, NOW + 1_000);
    assert_eq!(d.slot.restart_gens["httpd"], 2);
    assert_eq!(d.slot.windows["svc:httpd"].len(), 2);
    assert_eq!(d.slot.next_action_at, Some(NOW + 3_000));
    // The third failure is over the budget: the assembly is restarted.
    let d = decide(&view(d.slot, unhealthy()), &p, NOW + 3_000);
    assert!(matches!(d.act, Act::RestartAssembly { .. }), "{:?}", d.act);
    assert_eq!(d.slot.restart_gens["httpd"], 2, "no third service restart");
    assert!(d.reason.unwrap().contains("httpd failed 3/2 in 10m"));
    assert_eq!(d.slot.action, Some(EngineAction::RestartAssembly));
}

#[test]
fn an_exited_service_is_left_to_cm_guest_until_it_is_still_failing() {
    let p = policy();
    let exited = || Health::Degraded {
        services: vec!["httpd".into()],
        restart: vec![],
    };
    let d = decide(&view(slot(SlotState::Healthy), exited()), &p, NOW);
    assert_eq!(d.act, Act::None, "cm-guest restarts an exited service");
    assert_eq!(d.action, Some(EngineAction::RestartService));
    assert_eq!(d.slot.windows["svc:httpd"], vec![NOW]);
    // Still failed a back-off step later: the engine restarts it.
    let d = decide(&view(d.slot, exited()), &p, NOW + 1_000);
    assert_eq!(
        d.act,
        Act::RestartService {
            services: vec!["httpd".into()]
        }
    );
}

#[test]
fn flapping_does_not_reset_the_service_window() {
    let p = policy();
    let mut s = slot(SlotState::Healthy);
    let mut acts = vec![];
    // Unhealthy and healthy in turn, 5 s apart (past each back-off).
    for n in 0..6i64 {
        let t = NOW + n * 10_000;
        let d = decide(&view(s.clone(), unhealthy()), &p, t);
        acts.push(d.act.clone());
        if matches!(d.act, Act::RestartAssembly { .. }) {
            break;
        }
        let h = decide(&view(d.slot, Health::Healthy), &p, t + 5_000);
        s = h.slot;
        assert!(
            s.windows.contains_key("svc:httpd"),
            "a healthy spell resets nothing"
        );
    }
    let service = acts
        .iter()
        .filter(|a| matches!(a, Act::RestartService { .. }))
        .count();
    assert_eq!(service, 2, "{acts:?}");
    assert!(matches!(acts[2], Act::RestartAssembly { .. }), "{acts:?}");
}

#[test]
fn an_unreachable_replace_counts_against_the_replace_budget() {
    let p = policy();
    let mut s = slot(SlotState::Unreachable);
    s.windows
        .insert("replace".into(), vec![NOW - 3, NOW - 2, NOW - 1]);
    let h = Health::Unreachable {
        host: host(1),
        since: NOW - 10_000,
    };
    let d = decide(&view(s, h), &p, NOW);
    assert_eq!(d.act, Act::None);
    assert_eq!(d.slot.state, SlotState::Failed);
    assert_eq!(d.action, Some(EngineAction::Fail));
    assert!(d
        .reason
        .unwrap()
        .contains("replace budget 3/3 in 10m exhausted"));
}

#[test]
fn a_slot_that_cannot_be_created_keeps_its_reason_through_the_back_off() {
    let mut s = slot(SlotState::Creating);
    s.instance_id = None;
    s.incarnation = 0;
    s.reason = Some("cannot create its instance: no host has 4096 MiB free".into());
    s.next_action_at = Some(NOW + 5_000);
    let d = decide(&view(s.clone(), Health::Missing), &policy(), NOW);
    assert_eq!(d.act, Act::None);
    assert!(!d.changes(&s), "nothing to write while it waits: {d:?}");
}
