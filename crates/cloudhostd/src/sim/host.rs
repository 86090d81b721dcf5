//! One simulated host: its VMs (sim/vm.rs) in memory, one task stepping
//! them all, and the facts a report carries. The agent's loops (agent.rs)
//! drive it through the same `Runtime` as a real host's `vm::Vms`.

use super::stats::Stats;
use super::vm::{SimVm, Stepped, Timings};
use crate::runtime::{Facts, Runtime};
use crate::vm::actor::Desired;
use cm_api::agent::{DesiredState, ObservedInstance, OrphanVm};
use cm_api::host::HostFacts;
use cm_api::instance::ConsoleLog;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use uuid::Uuid;

#[path = "host_storage.rs"]
mod storage;

/// What a simulated host offers.
#[derive(Debug, Clone)]
pub struct Capacity {
    pub memory_mib: u64,
    pub vcpus: u32,
    pub disk_mib: u64,
    /// What `--accel auto` means on it: `kvm` unless `--accel tcg`.
    pub accel: cm_api::words::ResolvedAccel,
    /// Where its (simulated) port forwards are reached (`--advertise-addr`).
    pub forward_addr: String,
}

/// Memory a host's own processes take, never offered to VMs.
const HOST_OWN_MIB: u64 = 1024;
/// Bytes an orphan's directory holds (state and console log of a kernel image).
const ORPHAN_BYTES: u64 = 64 << 10;

pub struct SimHost {
    vms: Mutex<HashMap<Uuid, SimVm>>,
    /// Its volumes' files (locked after `vms` when both are).
    files: Mutex<super::volumes::Files>,
    /// Its disks' snapshots (locked after `files`).
    snaps: Mutex<super::snapshots::Snaps>,
    /// Its backup chains (locked after `snaps`).
    chains: Mutex<super::backups::Chains>,
    timings: Timings,
    capacity: Capacity,
    /// Wakes the reporter when an observed state changes.
    changed: Notify,
    /// Wakes the stepper when the desired state changes.
    wake: Notify,
    stats: Arc<Stats>,
    /// `mute HOST`: no reports, no long-polls (its agent "SIGSTOPped").
    muted: AtomicBool,
    /// What its running guests serve on their forwarded ports (http.rs).
    ports: super::http::Ports,
    /// Its exports and imports (sim/transfers.rs).
    transfers: super::transfers::Transfers,
    /// Itself, for the tasks a transfer starts.
    me: std::sync::Weak<SimHost>,
}

impl SimHost {
    pub fn new(timings: Timings, capacity: Capacity, stats: Arc<Stats>) -> Arc<SimHost> {
        Arc::new_cyclic(|me| SimHost {
            transfers: Default::default(),
            me: me.clone(),
            vms: Mutex::new(HashMap::new()),
            files: Mutex::new(Default::default()),
            snaps: Mutex::new(Default::default()),
            chains: Mutex::new(Default::default()),
            timings,
            changed: Notify::new(),
            wake: Notify::new(),
            stats,
            muted: AtomicBool::new(false),
            ports: super::http::Ports::new(&capacity.forward_addr),
            capacity,
        })
    }

    pub fn transfers(&self) -> &super::transfers::Transfers {
        &self.transfers
    }

    pub fn with_vm<R>(&self, vm: &str, f: impl FnOnce(&mut SimVm, Instant) -> R) -> Option<R> {
        let now = Instant::now();
        let r = self
            .vms()
            .values_mut()
            .find(|v| v.name() == vm || v.id().to_string() == vm)
            .map(|v| f(v, now));
        if r.is_some() {
            self.wake.notify_one();
            self.changed.notify_one();
        }
        r
    }

    pub fn timings(&self) -> &Timings {
        &self.timings
    }

    /// `vanish VM`: the host loses it (as a host whose disk was wiped).
    pub fn vanish(&self, vm: &str) -> bool {
        let mut vms = self.vms();
        let before = vms.len();
        vms.retain(|_, v| v.name() != vm && v.id().to_string() != vm);
        let gone = vms.len() < before;
        drop(vms);
        if gone {
            self.changed.notify_one();
        }
        gone
    }

    /// `mute HOST` / `unmute HOST`.
    pub fn set_muted(&self, muted: bool) {
        self.muted.store(muted, Ordering::SeqCst);
        self.changed.notify_one();
    }

    fn vms(&self) -> MutexGuard<'_, HashMap<Uuid, SimVm>> {
        match self.vms.lock() {
            Ok(v) => v,
            Err(p) => p.into_inner(),
        }
    }

    /// Step every VM; when the next step is due.
    pub fn step_all(&self, now: Instant) -> Option<Instant> {
        let mut vms = self.vms();
        let (files, hung) = {
            let f = self.files();
            (f.files.keys().copied().collect(), f.hung.clone())
        };
        let (mut changed, mut next) = (false, None::<Instant>);
        vms.retain(|_, vm| {
            vm.see_root(&files);
            match vm.step(now, &self.timings, self.capacity.accel) {
                Stepped::Removed => {
                    changed = true;
                    false
                }
                Stepped::Kept { changed: c, due } => {
                    let disks = vm.sync_disks(now, &self.timings, &files, &hung);
                    changed |= c || disks.changed;
                    let due = match (due, disks.due) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                    next = match (next, due) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                    true
                }
            }
        });
        drop(vms);
        if changed {
            self.changed.notify_one();
        }
        next
    }

    /// The host's stepper: runs until the process ends.
    pub async fn run(self: Arc<Self>) {
        loop {
            let now = Instant::now();
            let next = self
                .step_all(now)
                .unwrap_or(now + Duration::from_secs(1))
                .max(now + Duration::from_millis(1));
            let serving: Vec<(Uuid, u16)> = self
                .vms()
                .values()
                .flat_map(|v| v.serving_ports().into_iter().map(|p| (v.id(), p)))
                .collect();
            self.ports.sync(&serving);
            tokio::select! {
                _ = tokio::time::sleep_until(next.into()) => {}
                _ = self.wake.notified() => {}
            }
        }
    }

    fn set_desired(&self, f: impl Fn(&Uuid) -> Desired) {
        for (id, vm) in self.vms().iter_mut() {
            vm.desired = f(id);
        }
        self.wake.notify_one();
    }
}

impl Runtime for SimHost {
    fn apply(&self, desired: &DesiredState) {
        let wanted: HashMap<Uuid, &cm_api::agent::DesiredInstance> =
            desired.instances.iter().map(|d| (d.id, d)).collect();
        let mut vms = self.vms();
        for (id, vm) in vms.iter_mut() {
            vm.desired = match wanted.get(id) {
                Some(spec) => Desired::Present(Box::new((*spec).clone())),
                None if desired.deleted.contains(id) => Desired::Removed,
                None => Desired::Orphaned(cm_api::words::KnownStopReason::Orphaned),
            };
        }
        for (id, spec) in wanted {
            vms.entry(id).or_insert_with(|| SimVm::new(spec.clone()));
        }
        let held: std::collections::HashSet<Uuid> =
            vms.values().flat_map(|v| v.disks().copied()).collect();
        let holders = self.holders(&vms);
        let made = {
            let snaps = self.snaps();
            self.files()
                .apply_cloning(desired, &held, &|c| snaps.size_of(c.disk, c.snapshot))
        };
        let taken = self.apply_snapshots(desired, &holders);
        let backed_up = self.apply_chains(desired, &holders);
        drop(vms);
        if let Some(me) = self.me.upgrade() {
            super::transfers::apply(&me, desired);
        }
        if made || taken || backed_up {
            self.changed.notify_one();
        }
        self.wake.notify_one();
    }

    fn orphan_all(&self, why: cm_api::words::KnownStopReason) {
        self.set_desired(|_| Desired::Orphaned(why));
    }

    fn console_tail(&self, id: Uuid, max_bytes: u64) -> Result<ConsoleLog, String> {
        let vms = self.vms();
        let vm = vms.get(&id).ok_or("this host has no such instance")?;
        let text = format!(
            "[    0.000000] Linux version 6.1.0 (simulated by cloudhostd --simulate)\n\
             {} login: \n",
            vm.name()
        );
        let size = text.len() as u64;
        let keep = usize::try_from(max_bytes.min(size)).unwrap_or(text.len());
        let start = text.len() - keep;
        let start = (start..=text.len())
            .find(|i| text.is_char_boundary(*i))
            .unwrap_or(text.len());
        Ok(ConsoleLog {
            text: text[start..].to_string(),
            size,
            truncated: start > 0,
        })
    }

    fn report(&self) -> (Vec<ObservedInstance>, Vec<OrphanVm>) {
        let now = Instant::now();
        let vms = self.vms();
        let (mut mine, mut lost) = (Vec::new(), Vec::new());
        for vm in vms.values() {
            let o = vm.observed(now, &self.timings);
            match vm.desired {
                Desired::Orphaned(_) => lost.push(OrphanVm {
                    id: o.id,
                    name: vm.name().to_string(),
                    state: o.state,
                    disk_bytes: ORPHAN_BYTES,
                }),
                _ => {
                    let mut o = o;
                    (o.root_snapshots, o.root_reverted_gen, o.root_revert_error) =
                        self.snaps().of(o.id);
                    mine.push(o)
                }
            }
        }
        mine.sort_by_key(|o| o.id);
        (mine, lost)
    }

    fn changed(&self) -> &Notify {
        &self.changed
    }

    fn reported(&self, ok: bool, took: Duration) {
        self.stats.reported(ok, took);
    }

    fn muted(&self) -> bool {
        self.muted.load(Ordering::SeqCst)
    }

    fn volumes(&self) -> Vec<cm_api::agent::ObservedVolume> {
        self.volume_files()
    }

    fn backups(&self) -> Vec<cm_api::agent::ObservedBackup> {
        self.chains().report()
    }
}

impl Facts for SimHost {
    fn gather(&self) -> HostFacts {
        let used: u64 = self.vms().values().map(|v| v.memory_mib()).sum();
        let c = &self.capacity;
        HostFacts {
            forward_addr: Some(c.forward_addr.clone()),
            memory_total_mib: c.memory_mib,
            memory_available_mib: c.memory_mib.saturating_sub(HOST_OWN_MIB + used),
            vcpus: c.vcpus,
            disk_free_mib: c
                .disk_mib
                .saturating_sub(self.files().allocated().div_ceil(1 << 20)),
            accel: c.accel,
            accel_note: "simulated host (cloudhostd --simulate): no QEMU runs".into(),
            qemu_version: "simulated".into(),
            agent_version: env!("CARGO_PKG_VERSION").into(),
        }
    }
}
