//! One simulated VM: the states and reasons a real VM actor (vm/actor.rs)
//! goes through, on a clock instead of a QEMU process. Pure: every step is
//! given the time, so the tests below drive it without sleeping.

use crate::vm::actor::Desired;
use cm_api::agent::{DesiredInstance, GuestBeat, ObservedInstance, ObservedState, Power};
use cm_api::boot::Heartbeat;
use cm_api::instance::Accel;
use cm_api::words::{KnownStopReason as Why, ResolvedAccel, StopReason};
use std::time::{Duration, Instant};
use time::OffsetDateTime;

/// How long each simulated step takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timings {
    /// Preparing (image fetch, disk) until QEMU would be launched.
    pub prepare: Duration,
    /// Starting until running: the guest's boot.
    pub boot: Duration,
    /// An ACPI shutdown honoured by the guest (forced off past the
    /// instance's stop timeout, as a real host does).
    pub stop: Duration,
    /// Between two heartbeats of the guest agent, once the guest runs.
    pub beat: Duration,
}

pub struct SimVm {
    pub desired: Desired,
    spec: DesiredInstance,
    state: ObservedState,
    since: OffsetDateTime,
    boot_gen: u64,
    reboot_gen: u64,
    reason: Option<StopReason>,
    accel: Option<ResolvedAccel>,
    /// When the step under way (preparing, starting, stopping) completes.
    due: Option<Instant>,
    /// The reason recorded when the shutdown under way completes.
    stop_why: Why,
    /// When the guest agent's first heartbeat comes (None while down).
    guest_from: Option<Instant>,
}

/// What one step did.
#[derive(Debug, PartialEq, Eq)]
pub enum Stepped {
    /// Still here; whether its observed state changed, and when to look again.
    Kept { changed: bool, due: Option<Instant> },
    /// The master recorded its deletion: it and its files are gone.
    Removed,
}

impl SimVm {
    /// A VM the host has never had: stopped, never started.
    pub fn new(spec: DesiredInstance) -> SimVm {
        SimVm {
            desired: Desired::Present(Box::new(spec.clone())),
            spec,
            state: ObservedState::Stopped,
            since: OffsetDateTime::now_utc(),
            boot_gen: 0,
            reboot_gen: 0,
            reason: Some(Why::New.into()),
            accel: None,
            due: None,
            stop_why: Why::Stopped,
            guest_from: None,
        }
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }

    #[cfg(test)]
    pub fn state(&self) -> ObservedState {
        self.state
    }

    /// Memory it holds on the host while QEMU would run.
    pub fn memory_mib(&self) -> u64 {
        if self.up() || self.state == ObservedState::Preparing {
            self.spec.memory_mib
        } else {
            0
        }
    }

    fn up(&self) -> bool {
        matches!(
            self.state,
            ObservedState::Starting | ObservedState::Running | ObservedState::Stopping
        )
    }

    fn set(&mut self, s: ObservedState) -> bool {
        if self.state == s {
            return false;
        }
        self.state = s;
        self.since = OffsetDateTime::now_utc();
        true
    }

    fn stopped(&mut self, why: Why) {
        self.due = None;
        self.guest_from = None;
        self.reason = Some(why.into());
        self.set(ObservedState::Stopped);
    }

    /// One step towards the desired state at `now`, with `accel_auto` what
    /// `--accel auto` means on this host.
    pub fn step(&mut self, now: Instant, t: &Timings, accel_auto: ResolvedAccel) -> Stepped {
        let mut changed = self.finish_due(now, t, accel_auto);
        match self.desired.clone() {
            Desired::Unknown => {}
            Desired::Removed => return Stepped::Removed,
            Desired::Orphaned(why) => {
                if self.up() {
                    changed |= self.begin_stop(now, t, self.spec.stop_timeout_secs, why, why);
                }
            }
            Desired::Present(spec) => {
                self.spec = *spec;
                changed |= self.towards_spec(now, t);
            }
        }
        Stepped::Kept {
            changed,
            due: self.due,
        }
    }

    /// Complete the step under way if its time has come.
    fn finish_due(&mut self, now: Instant, t: &Timings, accel_auto: ResolvedAccel) -> bool {
        match self.due {
            Some(due) if now >= due => {}
            _ => return false,
        }
        self.due = None;
        match self.state {
            ObservedState::Preparing => {
                // QEMU "launched": this boot answers the start asked for.
                self.boot_gen = self.spec.boot_gen;
                self.reboot_gen = self.spec.reboot_gen;
                self.reason = None;
                self.accel = Some(match self.spec.accel {
                    Accel::Kvm => ResolvedAccel::Kvm,
                    Accel::Tcg => ResolvedAccel::Tcg,
                    Accel::Auto => accel_auto,
                });
                self.due = Some(now + t.boot);
                self.set(ObservedState::Starting)
            }
            ObservedState::Starting => {
                self.guest_from = Some(now);
                self.set(ObservedState::Running)
            }
            ObservedState::Stopping => {
                let why = self.stop_why;
                self.stopped(why);
                true
            }
            _ => false,
        }
    }

    fn towards_spec(&mut self, now: Instant, t: &Timings) -> bool {
        let spec = self.spec.clone();
        match spec.power {
            Power::Running if self.up() => {
                let mut changed = false;
                if self.state == ObservedState::Stopping {
                    // Started again while shutting down: it keeps running.
                    self.due = None;
                    changed |= self.set(ObservedState::Running);
                    self.guest_from.get_or_insert(now);
                }
                if spec.boot_gen > self.boot_gen {
                    self.boot_gen = spec.boot_gen;
                    changed = true;
                }
                if spec.reboot_gen > self.reboot_gen {
                    // A reset: the guest boots again, its agent beats again after.
                    self.reboot_gen = spec.reboot_gen;
                    self.guest_from = Some(now + t.boot);
                    changed = true;
                }
                changed
            }
            // Preparing runs to its end, as a real host's does.
            _ if self.state == ObservedState::Preparing => false,
            Power::Running if spec.boot_gen > self.boot_gen => {
                self.due = Some(now + t.prepare);
                self.set(ObservedState::Preparing)
            }
            // The current boot ended; the master decides (restart policy).
            Power::Running => false,
            Power::Stopped if self.up() => {
                let timeout = spec.stop_timeout_secs;
                self.begin_stop(now, t, timeout, Why::Stopped, Why::Forced)
            }
            Power::Stopped => false,
        }
    }

    /// Begin (or keep going) an ACPI shutdown: done after `t.stop`, or
    /// forced off at the timeout if that comes first (at once for 0).
    fn begin_stop(
        &mut self,
        now: Instant,
        t: &Timings,
        timeout_secs: u32,
        why: Why,
        forced: Why,
    ) -> bool {
        if self.state == ObservedState::Stopping {
            return false;
        }
        let timeout = Duration::from_secs(timeout_secs.into());
        if timeout.is_zero() {
            self.stopped(forced);
            return true;
        }
        let (after, why) = if t.stop <= timeout {
            (t.stop, why)
        } else {
            (timeout, forced)
        };
        self.stop_why = why;
        self.due = Some(now + after);
        self.set(ObservedState::Stopping)
    }

    /// What a report says of it at `now`.
    pub fn observed(&self, now: Instant, t: &Timings) -> ObservedInstance {
        ObservedInstance {
            liveness: None,
            id: self.spec.id,
            state: self.state,
            reason: if self.up() { None } else { self.reason.clone() },
            boot_gen: self.boot_gen,
            reboot_gen: self.reboot_gen,
            // No process: nothing anyone could signal.
            pid: None,
            accel: self.accel,
            since: self.since,
            guest: self.beat(now, t.beat),
        }
    }

    /// The guest agent's last heartbeat, as a host relays it.
    fn beat(&self, now: Instant, every: Duration) -> Option<GuestBeat> {
        let from = self.guest_from.filter(|f| *f <= now && self.up())?;
        let alive = now.duration_since(from);
        let beats = alive.as_millis() / every.as_millis().max(1);
        let age = alive.saturating_sub(every.saturating_mul(u32::try_from(beats).ok()?));
        let sent = OffsetDateTime::now_utc() - age;
        Some(GuestBeat {
            beat: Heartbeat {
                seq: u64::try_from(beats).ok()?.saturating_add(1),
                time: sent.unix_timestamp_nanos() as f64 / 1e9,
                services: vec![],
                config_status: None,
                config_version: 0,
            },
            age_ms: cm_api::time::duration_ms(age),
        })
    }
}
