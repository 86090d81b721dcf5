//! The ladder over random observation sequences: whatever the guests and
//! hosts do, no slot takes two actions at once, a stateful slot never has
//! two live instances, and restarts in any window stay within the budget.

use super::ladder::{budget, host, policy, slot, view};
use crate::engine::ladder::{decide, Act};
use crate::engine::observe::Health;
use crate::store::Millis;
use cm_api::time::Dur;
use cm_api::words::SlotState;

/// xorshift64*: a fixed sequence per seed, so a failure reproduces.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u32) -> u32 {
        u32::try_from(self.next() % u64::from(n)).unwrap_or(0)
    }
}

fn random_health(r: &mut Rng, now: Millis, host_down_since: &mut Option<Millis>) -> Health {
    // Hosts go down and come back now and then.
    if r.below(10) == 0 {
        *host_down_since = match host_down_since {
            Some(_) => None,
            None => Some(now),
        };
    }
    if let Some(since) = *host_down_since {
        return Health::Unreachable {
            host: host(1),
            since,
        };
    }
    match r.below(7) {
        0 => Health::Booting,
        1 | 2 => Health::Healthy,
        3 => Health::Suspect,
        4 => Health::Silent,
        5 => Health::Down {
            why: "crashed".into(),
        },
        // A service that exited (cm-guest restarts it) or fails its
        // check (the engine restarts it).
        _ => Health::Degraded {
            services: vec!["httpd".into()],
            restart: if r.below(2) == 0 {
                vec!["httpd".into()]
            } else {
                vec![]
            },
        },
    }
}

#[test]
fn invariants_hold_over_random_sequences() {
    for seed in 1..=300u64 {
        let mut r = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let mut p = policy();
        p.stateful = r.below(2) == 0;
        p.assembly = budget(1 + r.below(3));
        p.assembly.period = Dur::from_secs(60);
        p.replace = budget(r.below(3));
        p.healthy_deadline = 20_000;
        let mut s = slot(SlotState::Creating);
        s.instance_id = None;
        s.incarnation = 0;
        let mut now: Millis = 1_000_000;
        let mut restarts: Vec<Millis> = vec![];
        let mut service_restarts: Vec<Millis> = vec![];
        p.services.insert("httpd".into(), budget(r.below(4)));
        let mut host_down_since = None;
        // Instances that may still run: (live in the store, on the down host).
        let mut running: Vec<bool> = vec![];
        for step in 0..300 {
            now += Millis::from(r.below(5_000));
            p.frozen = r.below(8) == 0;
            let health = if s.instance_id.is_none() {
                Health::Missing
            } else {
                random_health(&mut r, now, &mut host_down_since)
            };
            let in_progress = s.action.is_some()
                && s.action_deadline.is_some_and(|d| now < d)
                && matches!(
                    health,
                    Health::Booting | Health::Suspect | Health::Degraded { .. }
                );
            let d = decide(&view(s.clone(), health.clone()), &p, now);
            let ctx = format!("seed {seed} step {step}: {health:?} {s:?} -> {d:?}");
            if in_progress {
                assert_eq!(d.act, Act::None, "a second action while one runs: {ctx}");
            }
            match &d.act {
                Act::None => {}
                Act::RestartService { services } => {
                    assert_eq!(services, &["httpd".to_string()], "{ctx}");
                    assert!(matches!(health, Health::Degraded { .. }), "{ctx}");
                    service_restarts.push(now);
                    let b = p.services["httpd"];
                    let recent = service_restarts
                        .iter()
                        .filter(|t| now - **t < b.period.millis())
                        .count();
                    let cm_api::deploy::Limit::Count(n) = b.failures else {
                        unreachable!()
                    };
                    assert!(
                        recent <= n as usize,
                        "service restarts {recent} > budget {n}: {ctx}"
                    );
                }
                Act::Create => running.push(false),
                Act::RestartAssembly { .. } => {
                    assert!(!matches!(health, Health::Unreachable { .. }), "{ctx}");
                    restarts.push(now);
                    let period = p.assembly.period.millis();
                    let recent = restarts.iter().filter(|t| now - **t < period).count();
                    let cm_api::deploy::Limit::Count(n) = p.assembly.failures else {
                        unreachable!()
                    };
                    assert!(
                        recent <= n as usize,
                        "restarts {recent} > budget {n}: {ctx}"
                    );
                }
                Act::Replace { .. } => {
                    // The old one is deleted; its VM still runs if its host is down.
                    let on_down_host = matches!(health, Health::Unreachable { .. });
                    if let Some(last) = running.last_mut() {
                        *last = on_down_host;
                    }
                    running.retain(|still| *still);
                    running.push(false);
                }
            }
            if matches!(d.act, Act::RestartService { .. }) {
                // Light: it holds no action, only the back-off.
                assert!(d.slot.next_action_at > Some(now), "{ctx}");
                s = d.slot.clone();
            } else if d.act != Act::None {
                assert!(d.slot.action.is_some(), "an act without its action: {ctx}");
                s = d.slot.clone();
                if matches!(d.act, Act::Create | Act::Replace { .. }) {
                    s.instance_id = Some(crate::store::InstanceId::new_v4());
                    s.incarnation += 1;
                }
            } else {
                s = d.slot.clone();
            }
            if host_down_since.is_none() {
                // A host that is back removes the deleted VMs it kept.
                running.retain(|_| false);
                running.push(false);
            }
            if p.stateful {
                assert!(
                    running.len() <= 1,
                    "two live instances of a stateful slot: {ctx}"
                );
            }
        }
    }
}
