//! The escalation ladder (docs/deployables.md "The engine"): what to do
//! about one slot, from its row and its instance's [`Health`]. Pure: the
//! same rows and the same `now` give the same decision, so a DPE rebuilt
//! from the store decides what the dead one would have.
//!
//! Rungs: a service's failures are counted (cm-guest restarts an exited
//! one itself; one that fails its check, or is still failing once the
//! back-off ran out, the engine restarts by raising its `restart_gen`);
//! past the service's budget, or on a crash or silence, the assembly is
//! restarted in place; past the assembly's budget it is replaced; past
//! the deployable's replace budget the slot is `failed`. A budget of 0
//! skips its rung; `unlimited` never leaves it.

use super::observe::Health;
use crate::store::{HostId, Millis, SlotRow};
use cm_api::deploy::{Backoff, Budget, Limit};
use cm_api::words::{EngineAction, SlotState};
use std::collections::BTreeMap;

/// A slot's policy, resolved from its deployable's spec.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub stateful: bool,
    /// Restarts of the assembly per window (key `assembly`).
    pub assembly: Budget,
    /// Replacements per window (key `replace`).
    pub replace: Budget,
    /// Each service's budget (key `svc:NAME`).
    pub services: BTreeMap<String, Budget>,
    pub backoff: Backoff,
    pub heartbeat_timeout: Millis,
    /// How long a new or restarted instance may take to become healthy.
    pub healthy_deadline: Millis,
    /// The deployable is frozen: nothing destructive except for crashes.
    pub frozen: bool,
}

/// The slot as the ladder sees it.
#[derive(Debug, Clone)]
pub struct SlotView {
    pub slot: SlotRow,
    pub health: Health,
    /// The current instance's desired boot generation (restart CAS).
    pub boot_gen: u64,
    /// The current instance's host, and its name for messages.
    pub host: Option<HostId>,
    pub host_name: Option<String>,
}

/// The destructive step to take, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Act {
    None,
    /// The slot's first instance, or one in place of a vanished one.
    Create,
    /// Restart these services in the guest: the decision's slot has their
    /// `restart_gens` raised; its config is rendered again.
    RestartService {
        services: Vec<String>,
    },
    RestartAssembly {
        expected_boot_gen: u64,
    },
    /// A new incarnation (placed away from `avoid` when it can be); the old
    /// instance is marked deleted in the same transaction.
    Replace {
        avoid: Option<HostId>,
    },
}

/// What `decide` wants: the slot's new fields, the act, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub slot: SlotRow,
    pub act: Act,
    /// For the event: what was done or decided (None: a state change only).
    pub action: Option<EngineAction>,
    pub reason: Option<String>,
    /// Budgets at the time, for the event (`{"assembly": "2/3 in 10m"}`).
    pub counters: BTreeMap<String, String>,
}

impl Decision {
    /// Whether anything is to be written.
    pub fn changes(&self, before: &SlotRow) -> bool {
        self.act != Act::None || self.action.is_some() || self.slot != *before
    }
    /// The earliest time this slot wants another look.
    pub fn next_wake(&self) -> Option<Millis> {
        [self.slot.next_action_at, self.slot.action_deadline]
            .into_iter()
            .flatten()
            .min()
    }
}

/// Entries of a window still inside the budget's period.
fn in_window(entries: &[Millis], b: &Budget, now: Millis) -> usize {
    entries
        .iter()
        .filter(|t| now - **t < b.period.millis())
        .count()
}

/// Whether one more failure fits the budget (0: skip the rung).
fn allows(entries: &[Millis], b: &Budget, now: Millis) -> bool {
    match b.failures {
        Limit::Unlimited(_) => true,
        Limit::Count(n) => in_window(entries, b, now) < n as usize,
    }
}

fn counter(entries: &[Millis], b: &Budget, now: Millis) -> String {
    let limit = match b.failures {
        Limit::Unlimited(_) => "unlimited".to_string(),
        Limit::Count(n) => n.to_string(),
    };
    format!("{}/{limit} in {}", in_window(entries, b, now), b.period)
}

fn backoff_delay(b: &Backoff, step: u32) -> Millis {
    let initial = b.initial.millis();
    let d = initial.saturating_mul(1i64 << step.min(30));
    d.min(b.max.millis())
}

struct Ctx<'a> {
    v: &'a SlotView,
    p: &'a Policy,
    now: Millis,
    d: Decision,
}

impl Ctx<'_> {
    fn set_state(&mut self, state: SlotState, reason: Option<String>) {
        if self.d.slot.state != state {
            self.d.slot.state = state;
            self.d.slot.state_since = self.now;
        }
        self.d.slot.reason = reason;
    }

    fn window(&self, key: &str) -> &[Millis] {
        self.d
            .slot
            .windows
            .get(key)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// Start a destructive action: counted, back-off armed, deadline set.
    fn act(&mut self, act: Act, action: EngineAction, key: Option<&str>, reason: String) {
        let now = self.now;
        if let Some(k) = key {
            self.d
                .slot
                .windows
                .entry(k.to_string())
                .or_default()
                .push(now);
        }
        self.arm_backoff();
        self.d.slot.action = Some(action);
        self.d.slot.action_started_at = Some(now);
        self.d.slot.action_deadline = Some(now + self.p.healthy_deadline);
        self.set_state(SlotState::Acting, Some(reason.clone()));
        self.d.act = act;
        self.d.action = Some(action);
        self.d.reason = Some(reason);
    }

    /// Nothing more before the back-off's next step.
    fn arm_backoff(&mut self) {
        let now = self.now;
        self.d.slot.next_action_at =
            Some(now + backoff_delay(&self.p.backoff, self.d.slot.backoff_step));
        self.d.slot.backoff_step = self.d.slot.backoff_step.saturating_add(1);
    }

    fn note(&mut self, action: EngineAction, reason: String) {
        self.d.action = Some(action);
        self.d.reason = Some(reason);
    }

    /// Rungs 2, 3 and 5 for a crash (`first_hand`) or a silence.
    fn escalate(&mut self, state: SlotState, why: String, first_hand: bool) {
        let now = self.now;
        self.set_state(state, Some(why.clone()));
        if self.p.frozen && !first_hand {
            return;
        }
        if let Some(at) = self.d.slot.next_action_at.filter(|t| *t > now) {
            let until = cm_api::human_time(&cm_api::time::to_timestamp(at));
            self.d.slot.reason = Some(format!("{why}; back-off until {until}"));
            return;
        }
        let (a, r) = (self.p.assembly, self.p.replace);
        self.d
            .counters
            .insert("assembly".into(), counter(self.window("assembly"), &a, now));
        self.d
            .counters
            .insert("replace".into(), counter(self.window("replace"), &r, now));
        let live_here = !matches!(self.v.health, Health::Missing | Health::Unreachable { .. });
        if live_here && allows(self.window("assembly"), &a, now) {
            let act = Act::RestartAssembly {
                expected_boot_gen: self.v.boot_gen,
            };
            self.act(act, EngineAction::RestartAssembly, Some("assembly"), why);
        } else if allows(self.window("replace"), &r, now) {
            let reason = format!(
                "{why}; restart budget {} spent",
                counter(self.window("assembly"), &a, now)
            );
            let act = Act::Replace { avoid: self.v.host };
            self.act(act, EngineAction::Replace, Some("replace"), reason);
        } else {
            let reason = format!(
                "{why}; replace budget {} exhausted",
                counter(self.window("replace"), &r, now)
            );
            self.d.slot.action = None;
            self.d.slot.action_deadline = None;
            self.set_state(SlotState::Failed, Some(reason.clone()));
            self.note(EngineAction::Fail, reason);
        }
    }
}

/// Decide one slot's next step.
pub fn decide(v: &SlotView, p: &Policy, now: Millis) -> Decision {
    let mut c = Ctx {
        v,
        p,
        now,
        d: Decision {
            slot: v.slot.clone(),
            act: Act::None,
            action: None,
            reason: None,
            counters: BTreeMap::new(),
        },
    };
    if matches!(v.slot.state, SlotState::Failed | SlotState::Retiring) {
        return c.d;
    }
    prune(&mut c.d.slot, p, now);
    // An action in progress: done when healthy, failed at its deadline or
    // when its boot ended again; until then nothing new.
    if let Some(action) = c.d.slot.action {
        let deadline_passed = c.d.slot.action_deadline.is_some_and(|d| now >= d);
        // A boot that ended, or a host that stopped reporting: the action
        // cannot finish; the rules below decide again.
        let ended = matches!(
            v.health,
            Health::Down { .. } | Health::Silent | Health::Missing | Health::Unreachable { .. }
        );
        if v.health == Health::Healthy {
            clear_action(&mut c.d.slot);
            c.set_state(SlotState::Healthy, None);
            return c.d;
        }
        if !deadline_passed && !ended {
            return c.d;
        }
        clear_action(&mut c.d.slot);
        if deadline_passed && !ended {
            let why = format!(
                "{action} did not make it healthy within {}",
                cm_api::time::Dur::from_millis(u64::try_from(p.healthy_deadline).unwrap_or(0))
            );
            c.escalate(SlotState::Down, why, false);
            return c.d;
        }
    }
    match v.health.clone() {
        Health::Missing => {
            if p.frozen && v.slot.incarnation > 0 {
                c.set_state(SlotState::Down, Some("its instance is gone; frozen".into()));
            } else if c.d.slot.next_action_at.is_some_and(|t| t > now) {
                // Keep why the last create failed (said once, in its event).
                let why =
                    c.d.slot
                        .reason
                        .clone()
                        .filter(|r| r.starts_with("cannot create"));
                c.set_state(
                    SlotState::Creating,
                    Some(why.unwrap_or_else(|| "back-off".into())),
                );
            } else {
                let why = if v.slot.incarnation == 0 {
                    "new slot".to_string()
                } else {
                    "its instance is gone".to_string()
                };
                c.act(Act::Create, EngineAction::Create, None, why);
            }
        }
        Health::Booting => c.set_state(SlotState::Booting, None),
        Health::Healthy => {
            c.set_state(SlotState::Healthy, None);
            let calm = (p.replace.period.millis() / 10).max(60_000);
            if now - c.d.slot.state_since >= calm {
                c.d.slot.backoff_step = 0;
                c.d.slot.next_action_at = None;
            }
        }
        Health::Suspect => c.set_state(SlotState::Suspect, Some("a heartbeat is late".into())),
        Health::Silent => {
            let why = format!(
                "silent: no heartbeat for {}",
                cm_api::time::Dur::from_millis(u64::try_from(p.heartbeat_timeout).unwrap_or(0))
            );
            c.escalate(SlotState::Down, why, false);
        }
        Health::Down { why } => c.escalate(SlotState::Down, format!("VM {why}"), true),
        Health::Degraded { services, restart } => degraded(&mut c, &services, &restart),
        Health::Unreachable { host, since } => {
            let name = v.host_name.clone().unwrap_or_else(|| host.to_string());
            unreachable(&mut c, host, &name, since)
        }
    }
    c.d
}

fn clear_action(s: &mut SlotRow) {
    s.action = None;
    s.action_started_at = None;
    s.action_deadline = None;
}

/// Forget failures older than their budget's period.
fn prune(s: &mut SlotRow, p: &Policy, now: Millis) {
    for (k, entries) in s.windows.iter_mut() {
        let b = match k.as_str() {
            "assembly" => &p.assembly,
            "replace" => &p.replace,
            k => match k.strip_prefix("svc:").and_then(|n| p.services.get(n)) {
                Some(b) => b,
                None => &p.assembly,
            },
        };
        entries.retain(|t| now - *t < b.period.millis());
    }
    s.windows.retain(|_, e| !e.is_empty());
}

/// Rung 1. Every failure of a service counts against its budget
/// (`svc:NAME`): each new observation of it failing (cm-guest's own
/// restarts of a service that exits show as failed, starting, failed
/// again), and each back-off step it is still failing, so cm-guest's
/// restarts and the engine's are counted together. A service running
/// with a failing check (or stopped), or still failing once the back-off
/// ran out, is restarted by the engine: its `restart_gen` is raised. Past
/// its budget: rung 2 and up. A healthy spell between failures (flapping)
/// resets nothing: failures leave the window only by age.
fn degraded(c: &mut Ctx<'_>, services: &[String], restart: &[String]) {
    let now = c.now;
    let reason = format!("service {} failing", services.join(", "));
    let new = c.d.slot.state != SlotState::Degraded
        || !c
            .d
            .slot
            .reason
            .as_deref()
            .is_some_and(|r| r.starts_with(&reason));
    let due = c.d.slot.next_action_at.is_none_or(|t| t <= now);
    if new {
        c.set_state(SlotState::Degraded, Some(reason.clone()));
    }
    if !new && !due {
        return;
    }
    let mut over = None;
    for s in services {
        let key = format!("svc:{s}");
        let b = c.p.services.get(s).copied().unwrap_or(c.p.assembly);
        c.d.slot.windows.entry(key.clone()).or_default().push(now);
        let entries = c.window(&key).to_vec();
        c.d.counters.insert(key, counter(&entries, &b, now));
        let spent = match b.failures {
            Limit::Unlimited(_) => false,
            Limit::Count(n) => in_window(&entries, &b, now) > n as usize,
        };
        if spent && over.is_none() {
            over = Some(format!(
                "{reason}: {s} failed {}",
                counter(&entries, &b, now)
            ));
        }
    }
    if let Some(why) = over {
        c.escalate(SlotState::Degraded, why, false);
        return;
    }
    if !due {
        c.note(
            EngineAction::RestartService,
            format!("{reason}: counted; back-off holds the next restart"),
        );
        return;
    }
    // Exited services cm-guest restarts itself, unless they are still
    // failing a back-off step later.
    let targets: Vec<String> = services
        .iter()
        .filter(|s| restart.contains(s) || !new)
        .cloned()
        .collect();
    c.arm_backoff();
    if targets.is_empty() {
        c.note(
            EngineAction::RestartService,
            format!("{reason}: cm-guest restarts it"),
        );
        return;
    }
    let mut gens = Vec::new();
    for t in &targets {
        let g = c.d.slot.restart_gens.entry(t.clone()).or_insert(0);
        *g = g.saturating_add(1);
        gens.push(format!("{t} restart_gen {g}"));
    }
    c.d.act = Act::RestartService { services: targets };
    c.note(
        EngineAction::RestartService,
        format!("{reason}: restarted in the guest ({})", gens.join(", ")),
    );
}

/// A host that stopped reporting: stateless slots are replaced after the
/// heartbeat timeout (the old instance marked deleted in the same
/// transaction, so its host removes it if it returns); stateful ones wait
/// for an evacuation.
fn unreachable(c: &mut Ctx<'_>, host: HostId, name: &str, since: Millis) {
    let was = c.d.slot.state;
    if c.p.stateful {
        let reason = format!(
            "stateful: replaced only once host {name} is known dead (cm host evacuate {name})"
        );
        c.set_state(SlotState::Unreachable, Some(reason.clone()));
        if was != SlotState::Unreachable {
            c.note(EngineAction::Wait, reason);
        }
        return;
    }
    let due = since + c.p.heartbeat_timeout;
    if c.p.frozen || c.now < due {
        c.set_state(SlotState::Unreachable, Some(format!("host {name} is down")));
        if !c.p.frozen {
            c.d.slot.next_action_at = Some(c.d.slot.next_action_at.map_or(due, |t| t.max(due)));
        }
        return;
    }
    if c.d.slot.next_action_at.is_some_and(|t| t > c.now) {
        c.set_state(SlotState::Unreachable, Some(format!("host {name} is down")));
        return;
    }
    let why = format!("host {name} down past the heartbeat timeout");
    let r = c.p.replace;
    let n = counter(c.window("replace"), &r, c.now);
    c.d.counters.insert("replace".into(), n.clone());
    if !allows(c.window("replace"), &r, c.now) {
        let reason = format!("{why}; replace budget {n} exhausted");
        c.d.slot.action = None;
        c.d.slot.action_deadline = None;
        c.set_state(SlotState::Failed, Some(reason.clone()));
        c.note(EngineAction::Fail, reason);
        return;
    }
    c.act(
        Act::Replace { avoid: Some(host) },
        EngineAction::Replace,
        Some("replace"),
        why,
    );
}
