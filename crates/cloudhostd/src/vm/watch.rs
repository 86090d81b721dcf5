//! The host's heartbeat watchdog: for each running VM whose desired state
//! carries a `HealthPolicy` (an instance of a deployable), judge the age of
//! its guest's last heartbeat (`GuestLiveness`), and say when the judgement
//! or the guest's services change, so that the agent reports at once
//! (docs/host.md, "Heartbeat watchdog").
//!
//! The rule: `up` while the last beat is at most 1.5 intervals old (half
//! an interval of slack for a late beat), `suspect` after that (a beat was
//! missed), `silent` past the timeout. Before the first beat of a boot the
//! guest is not judged (no class: it is booting) until the boot grace has
//! passed since QEMU started running; then it is `silent`.

use cm_api::agent::HealthPolicy;
use cm_api::boot::ServiceState;
use cm_api::words::{GuestLiveness, ServiceStatus};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;
use uuid::Uuid;

/// The watchdog's tick when no VM has a policy, and its longest.
const TICK_MAX: Duration = Duration::from_millis(100);
/// Its shortest tick, whatever the interval.
const TICK_MIN: Duration = Duration::from_millis(20);

/// The class of a beat's age under a policy. `running_since` is when the
/// current boot began running; a beat older than that belongs to an
/// earlier boot and does not count.
pub fn classify(
    p: &HealthPolicy,
    now: Instant,
    running_since: Instant,
    last_beat: Option<Instant>,
) -> Option<GuestLiveness> {
    let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    match last_beat.filter(|b| *b >= running_since) {
        Some(b) => {
            let age = ms(now.saturating_duration_since(b));
            Some(if age > p.heartbeat_timeout_ms {
                GuestLiveness::Silent
            } else if age.saturating_mul(2) > p.heartbeat_interval_ms.saturating_mul(3) {
                GuestLiveness::Suspect
            } else {
                GuestLiveness::Up
            })
        }
        None if ms(now.saturating_duration_since(running_since)) > p.boot_grace_ms => {
            Some(GuestLiveness::Silent)
        }
        None => None,
    }
}

/// One watched VM.
#[derive(Debug, Clone)]
struct Watched {
    policy: HealthPolicy,
    running_since: Instant,
    last_beat: Option<Instant>,
    /// The services of the last beat (name and state).
    services: Option<Vec<(String, ServiceStatus)>>,
    class: Option<GuestLiveness>,
}

/// The watched VMs of a host. Every method says whether a report is due
/// now (`true`): the caller then wakes the reporter.
#[derive(Debug, Default)]
pub struct Watchdog {
    vms: Mutex<HashMap<Uuid, Watched>>,
    /// Every VM's policy, running or not (the relay's rate follows it).
    policies: Mutex<HashMap<Uuid, HealthPolicy>>,
}

impl Watchdog {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Watched>> {
        match self.vms.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        }
    }

    /// Watch a VM that runs (since `running_since`) under `policy`, or,
    /// with `None`, stop watching it (not running, or no policy). A new
    /// boot (a later `running_since`) starts over: no beat seen, no class.
    pub fn track(&self, id: Uuid, running: Option<(HealthPolicy, Instant)>) -> bool {
        let mut m = self.map();
        match running {
            None => m.remove(&id).and_then(|w| w.class).is_some(),
            Some((policy, since)) => match m.get_mut(&id) {
                Some(w) if w.running_since == since => {
                    w.policy = policy;
                    false
                }
                _ => {
                    let had = m.insert(
                        id,
                        Watched {
                            policy,
                            running_since: since,
                            last_beat: None,
                            services: None,
                            class: None,
                        },
                    );
                    had.and_then(|w| w.class).is_some()
                }
            },
        }
    }

    /// A beat from a watched VM's guest at `now`: due when its class
    /// changes (the first beat, or one after a silence) or its services'
    /// states differ from the previous beat's.
    pub fn beat(&self, id: Uuid, now: Instant, services: &[ServiceState]) -> bool {
        let mut m = self.map();
        let Some(w) = m.get_mut(&id) else {
            return false;
        };
        w.last_beat = Some(now);
        let states: Vec<_> = services
            .iter()
            .map(|s| (s.name.clone(), s.state.clone()))
            .collect();
        let services_changed = w.services.as_ref() != Some(&states);
        w.services = Some(states);
        let class = classify(&w.policy, now, w.running_since, w.last_beat);
        let class_changed = class != w.class;
        w.class = class;
        class_changed || services_changed
    }

    /// Judge every watched VM at `now`: due when a class changed.
    pub fn tick(&self, now: Instant) -> bool {
        let mut changed = false;
        for w in self.map().values_mut() {
            let class = classify(&w.policy, now, w.running_since, w.last_beat);
            if class != w.class {
                w.class = class;
                changed = true;
            }
        }
        changed
    }

    /// Record a VM's policy (from its desired state), or forget it.
    pub fn set_policy(&self, id: Uuid, policy: Option<&HealthPolicy>) {
        let mut m = match self.policies.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        match policy {
            Some(p) => {
                m.insert(id, p.clone());
            }
            None => {
                m.remove(&id);
            }
        }
    }

    /// A VM's policy, if it has one.
    pub fn policy(&self, id: Uuid) -> Option<HealthPolicy> {
        match self.policies.lock() {
            Ok(m) => m.get(&id).cloned(),
            Err(p) => p.into_inner().get(&id).cloned(),
        }
    }

    /// A VM's class, for the report.
    pub fn liveness(&self, id: Uuid) -> Option<GuestLiveness> {
        self.map().get(&id).and_then(|w| w.class)
    }

    /// How often to tick: a quarter of the smallest interval, within
    /// `TICK_MIN..=TICK_MAX`.
    pub fn period(&self) -> Duration {
        self.map()
            .values()
            .map(|w| Duration::from_millis(w.policy.heartbeat_interval_ms / 4))
            .min()
            .unwrap_or(TICK_MAX)
            .clamp(TICK_MIN, TICK_MAX)
    }
}

/// Tick for ever, waking `changed` (the reporter) when a class changes.
pub async fn run(dog: &Watchdog, changed: &Notify) {
    loop {
        tokio::time::sleep(dog.period()).await;
        if dog.tick(Instant::now()) {
            changed.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cm_api::words::KnownServiceStatus;
    use std::sync::Arc;

    fn policy() -> HealthPolicy {
        HealthPolicy {
            heartbeat_interval_ms: 1000,
            heartbeat_timeout_ms: 3000,
            boot_grace_ms: 10_000,
            services: vec![],
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_age_of_the_last_beat_is_classified() {
        let p = policy();
        let t0 = Instant::now();
        let beat = t0 + ms(500);
        let class = |at: u64| classify(&p, t0 + ms(at), t0, Some(beat));
        use GuestLiveness::*;
        assert_eq!(class(500), Some(Up));
        assert_eq!(class(2000), Some(Up), "1.5 intervals old");
        assert_eq!(class(2001), Some(Suspect), "a beat missed");
        assert_eq!(class(3500), Some(Suspect), "at the timeout");
        assert_eq!(class(3501), Some(Silent), "past the timeout");
    }

    #[test]
    fn before_the_first_beat_of_a_boot_only_the_grace_counts() {
        let p = policy();
        let t0 = Instant::now();
        assert_eq!(classify(&p, t0 + ms(9_000), t0, None), None, "booting");
        assert_eq!(
            classify(&p, t0 + ms(10_001), t0, None),
            Some(GuestLiveness::Silent)
        );
        // A beat of the boot before does not count for this one.
        let restarted = t0 + ms(20_000);
        assert_eq!(
            classify(&p, restarted + ms(5_000), restarted, Some(t0 + ms(19_000))),
            None
        );
    }

    fn svc(state: KnownServiceStatus) -> Vec<ServiceState> {
        vec![ServiceState {
            name: "httpd".into(),
            state: state.into(),
            detail: None,
        }]
    }

    #[tokio::test(start_paused = true)]
    async fn a_class_change_wakes_the_reporter_at_once() {
        let dog = Arc::new(Watchdog::default());
        let changed = Arc::new(Notify::new());
        let id = Uuid::from_u128(1);
        let t0 = Instant::now();
        assert!(!dog.track(id, Some((policy(), t0))));
        assert_eq!(dog.period(), ms(100));
        tokio::spawn({
            let (dog, changed) = (dog.clone(), changed.clone());
            async move { run(&dog, &changed).await }
        });
        // The first beat is news; the same services again are not.
        assert!(dog.beat(id, Instant::now(), &svc(KnownServiceStatus::Running)));
        assert_eq!(dog.liveness(id), Some(GuestLiveness::Up));
        assert!(!dog.beat(id, Instant::now(), &svc(KnownServiceStatus::Running)));
        let froze = Instant::now();
        // No more beats: suspect just past 1.5 s, silent just past 3 s,
        // each seen within a tick.
        changed.notified().await;
        let suspect = froze.elapsed();
        assert_eq!(dog.liveness(id), Some(GuestLiveness::Suspect));
        assert!(suspect > ms(1500) && suspect <= ms(1600), "{suspect:?}");
        changed.notified().await;
        let silent = froze.elapsed();
        assert_eq!(dog.liveness(id), Some(GuestLiveness::Silent));
        assert!(silent > ms(3000) && silent <= ms(3100), "{silent:?}");
        // The first beat after the silence is news.
        assert!(dog.beat(id, Instant::now(), &svc(KnownServiceStatus::Running)));
        assert_eq!(dog.liveness(id), Some(GuestLiveness::Up));
        // A service that changes state is news at once.
        assert!(dog.beat(id, Instant::now(), &svc(KnownServiceStatus::Failed)));
        // Not running any more: no class, and that too is news.
        assert!(dog.track(id, None));
        assert_eq!(dog.liveness(id), None);
        assert!(!dog.tick(Instant::now() + ms(60_000)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_guest_that_never_beats_is_silent_after_the_grace() {
        let dog = Arc::new(Watchdog::default());
        let changed = Arc::new(Notify::new());
        let id = Uuid::from_u128(2);
        let t0 = Instant::now();
        dog.track(id, Some((policy(), t0)));
        tokio::spawn({
            let (dog, changed) = (dog.clone(), changed.clone());
            async move { run(&dog, &changed).await }
        });
        changed.notified().await;
        let took = t0.elapsed();
        assert!(took > ms(10_000) && took <= ms(10_100), "{took:?}");
        assert_eq!(dog.liveness(id), Some(GuestLiveness::Silent));
        // A new boot starts over: not judged until its own grace passes.
        let boot2 = Instant::now();
        assert!(dog.track(id, Some((policy(), boot2))));
        assert_eq!(dog.liveness(id), None);
    }

    #[test]
    fn the_tick_follows_the_smallest_interval() {
        let dog = Watchdog::default();
        let t0 = Instant::now();
        let fast = HealthPolicy {
            heartbeat_interval_ms: 200,
            ..policy()
        };
        dog.track(Uuid::from_u128(1), Some((policy(), t0)));
        dog.track(Uuid::from_u128(2), Some((fast, t0)));
        assert_eq!(dog.period(), ms(50));
    }
}
