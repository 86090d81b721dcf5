//! One simulated VM: the states and reasons a real VM actor (vm/actor.rs)
//! goes through, on a clock instead of a QEMU process. Pure: every step is
//! given the time, so the tests below drive it without sleeping.

use crate::vm::actor::Desired;
use cm_api::agent::{DesiredInstance, GuestBeat, ObservedInstance, ObservedState, Power};
use cm_api::boot::{Heartbeat, ServiceState};
use cm_api::instance::Accel;
use cm_api::words::{
    GuestLiveness, KnownServiceStatus, KnownStopReason as Why, ResolvedAccel, ServiceStatus,
    StopReason,
};
use std::collections::BTreeMap;
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
    /// When the current boot began running (the watchdog's boot grace).
    running_at: Option<Instant>,
    /// Frozen (`freeze VM`): no beats since then.
    frozen_at: Option<Instant>,
    /// Beats sent before the last thaw (the sequence goes on).
    seq_base: u64,
    /// Service states set by `service VM NAME STATE`, over the policy's.
    services: BTreeMap<String, ServiceStatus>,
    /// The liveness last reported (a change is reported at once).
    class: Option<GuestLiveness>,
    /// The volumes' disks it holds (sim/volumes.rs).
    disks: super::volumes::Disks,
    /// Its root volume's file exists (or it has none): it may launch.
    root_ready: bool,
}

/// The watchdog's longest tick (vm/watch.rs).
const TICK: Duration = Duration::from_millis(100);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
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
            running_at: None,
            frozen_at: None,
            seq_base: 0,
            services: BTreeMap::new(),
            class: None,
            disks: super::volumes::Disks::default(),
            root_ready: true,
        }
    }

    /// Whether the root volume of its desired spec is among `files` (a
    /// persistent root boots only once its file is made).
    pub fn see_root(&mut self, files: &std::collections::HashSet<uuid::Uuid>) {
        self.root_ready = match &self.desired {
            Desired::Present(spec) => spec.root_volume.is_none_or(|v| files.contains(&v)),
            _ => true,
        };
    }

    pub fn id(&self) -> uuid::Uuid {
        self.spec.id
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

    /// The host ports its guest serves on now: running, not frozen.
    pub fn serving_ports(&self) -> Vec<u16> {
        if self.state != ObservedState::Running || self.frozen_at.is_some() {
            return vec![];
        }
        self.spec.ports.iter().map(|p| p.host).collect()
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
        self.running_at = None;
        // The next boot is a new guest: not frozen, its services as started.
        self.frozen_at = None;
        self.services.clear();
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
        // The watchdog's judgement, as a real host's (vm/watch.rs): a
        // change is news, and a guest under a policy is looked at each tick.
        let class = self.liveness(now, t);
        if class != self.class {
            self.class = class;
            changed = true;
        }
        let tick = self
            .spec
            .health
            .as_ref()
            .filter(|_| self.state == ObservedState::Running)
            .map(|h| now + Duration::from_millis(h.heartbeat_interval_ms / 4).clamp(ms(20), TICK));
        let due = match (self.due, tick) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Stepped::Kept { changed, due }
    }

    /// Bring its disks towards its desired volumes whose files exist
    /// (`files`); a guest that hangs (`hung`) releases nothing, and a forced
    /// detach then restarts the VM without the disk.
    pub fn sync_disks(
        &mut self,
        now: Instant,
        t: &Timings,
        files: &std::collections::HashSet<uuid::Uuid>,
        hung: &std::collections::HashSet<uuid::Uuid>,
    ) -> super::volumes::Synced {
        let wanted: Vec<uuid::Uuid> = match &self.desired {
            Desired::Present(_) => self
                .spec
                .volumes
                .iter()
                .map(|a| a.volume)
                .filter(|v| files.contains(v))
                .collect(),
            _ => Vec::new(),
        };
        let force = self.spec.force_detach.clone();
        let s = self
            .disks
            .sync(&wanted, self.up(), hung, &force, now, t.stop);
        if s.restart && self.up() {
            // QEMU stopped hard and launched again with the desired list.
            self.guest_from = None;
            self.running_at = None;
            self.frozen_at = None;
            self.due = Some(now + t.boot);
            self.set(ObservedState::Starting);
        }
        s
    }

    /// The volumes whose disks it holds.
    pub fn disks(&self) -> impl Iterator<Item = &uuid::Uuid> {
        self.disks.holds()
    }

    /// `crash VM`: QEMU is gone, as a host's pidfd would see it.
    pub fn crash(&mut self) -> bool {
        if !self.up() {
            return false;
        }
        self.stopped(Why::Crashed);
        true
    }

    /// `freeze VM` / `thaw VM`: its guest stops beating, or beats again
    /// from `now`.
    pub fn freeze(&mut self, now: Instant, t: &Timings, frozen: bool) -> bool {
        match (frozen, self.frozen_at) {
            (true, None) => self.frozen_at = Some(now),
            (false, Some(_)) => {
                self.seq_base = self.last_beat(now, t).map_or(self.seq_base, |(seq, _)| seq);
                self.frozen_at = None;
                if self.up() {
                    self.guest_from = Some(now);
                }
            }
            _ => return false,
        }
        true
    }

    /// `service VM NAME STATE`: what the guest says of one service.
    pub fn set_service(&mut self, name: &str, state: ServiceStatus) {
        self.services.insert(name.to_string(), state);
    }

    /// The interval of its beats: its policy's, else the host's.
    fn every(&self, t: &Timings) -> Duration {
        self.spec.health.as_ref().map_or(t.beat, |h| {
            Duration::from_millis(h.heartbeat_interval_ms.max(1))
        })
    }

    /// The last beat at `now`: its sequence number and when it was sent.
    fn last_beat(&self, now: Instant, t: &Timings) -> Option<(u64, Instant)> {
        let from = self.guest_from.filter(|f| *f <= now && self.up())?;
        let end = match self.frozen_at {
            Some(f) if f < from => return None,
            Some(f) => f.min(now),
            None => now,
        };
        let every = self.every(t);
        let beats =
            u32::try_from(end.duration_since(from).as_millis() / every.as_millis().max(1)).ok()?;
        let at = from + every.saturating_mul(beats);
        Some((self.seq_base + u64::from(beats) + 1, at))
    }

    /// The watchdog's class at `now` (vm/watch.rs), for a guest with a
    /// health policy that runs.
    fn liveness(&self, now: Instant, t: &Timings) -> Option<GuestLiveness> {
        let p = self.spec.health.as_ref()?;
        let since = self
            .running_at
            .filter(|_| self.state == ObservedState::Running)?;
        let last = self.last_beat(now, t).map(|(_, at)| at.into());
        crate::vm::watch::classify(p, now.into(), since.into(), last)
    }

    /// The services its beats carry: the policy's, running, unless a
    /// `service` command said otherwise.
    fn service_states(&self) -> Vec<ServiceState> {
        let mut m: BTreeMap<String, ServiceStatus> = self
            .spec
            .health
            .iter()
            .flat_map(|h| h.services.iter())
            .map(|n| (n.clone(), KnownServiceStatus::Running.into()))
            .collect();
        m.extend(self.services.clone());
        m.into_iter()
            .map(|(name, state)| ServiceState {
                name,
                state,
                detail: None,
            })
            .collect()
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
                self.running_at = Some(now);
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
                    self.running_at = Some(now);
                    self.frozen_at = None;
                    self.services.clear();
                    changed = true;
                }
                changed
            }
            // Preparing runs to its end, as a real host's does.
            _ if self.state == ObservedState::Preparing => false,
            // A persistent root waits for its volume's file.
            Power::Running if spec.boot_gen > self.boot_gen && !self.root_ready => false,
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
            liveness: self.liveness(now, t),
            id: self.spec.id,
            state: self.state,
            reason: if self.up() { None } else { self.reason.clone() },
            boot_gen: self.boot_gen,
            reboot_gen: self.reboot_gen,
            // No process: nothing anyone could signal.
            pid: None,
            accel: self.accel,
            since: self.since,
            guest: self.beat(now, t),
            volumes: self.disks.report(),
            root_snapshots: Vec::new(),
            root_reverted_gen: 0,
            root_revert_error: None,
        }
    }

    /// The guest agent's last heartbeat, as a host relays it.
    fn beat(&self, now: Instant, t: &Timings) -> Option<GuestBeat> {
        let (seq, at) = self.last_beat(now, t)?;
        let age = now.duration_since(at);
        let sent = OffsetDateTime::now_utc() - age;
        Some(GuestBeat {
            beat: Heartbeat {
                seq,
                time: sent.unix_timestamp_nanos() as f64 / 1e9,
                services: self.service_states(),
                config_status: None,
                config_version: 0,
            },
            age_ms: cm_api::time::duration_ms(age),
        })
    }
}
