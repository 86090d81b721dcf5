//! The VMs of this host: one actor task per VM (`actor`), their QEMU
//! processes (`qemu`, `qmp`), disks (`disk`) and remembered state (`local`);
//! what a guest may reach and send: its network (`guestnet`) and boot proxy
//! (`bootproxy`), heartbeat port (`guest`) and capped console log (`console`).

pub mod actor;
pub mod attachments;
pub mod bootdata;
pub mod bootproxy;
pub mod console;
pub mod disk;
pub mod guest;
pub mod guestnet;
pub mod guestport;
pub mod hotplug;
pub mod local;
pub mod qemu;
pub mod qmp;
pub mod watch;

#[cfg(test)]
mod backup_chain_vm_test;
#[cfg(test)]
mod hotplug_vm_test;
#[cfg(test)]
mod rootsnap_vm_test;
#[cfg(test)]
mod rootvol_vm_test;
#[cfg(test)]
mod settled_tests;
#[cfg(test)]
mod snapshot_vm_test;

use crate::client::Master;
use crate::images::ImageCache;
use crate::volumes::Volumes;
use actor::{Desired, Vm};
use cm_api::agent::{DesiredState, ObservedInstance, OrphanVm};
use cm_api::instance::ConsoleLog;
use cm_api::words::{KnownStopReason, ResolvedAccel};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;
use uuid::Uuid;

/// What every VM actor shares.
pub struct VmContext {
    pub qemu: PathBuf,
    pub instances_dir: PathBuf,
    pub images: ImageCache,
    pub master: Arc<Master>,
    /// What `--accel auto` means here, after the probe.
    pub accel_auto: ResolvedAccel,
    pub forward_bind: String,
    /// `HOST:PORT` of the master as guests reach it.
    pub guest_master: String,
    observed: Mutex<HashMap<Uuid, ObservedInstance>>,
    /// VMs found at the agent's start whose actor has not said its state
    /// yet, and since when: no report before they have (one without them
    /// would tell the master they are gone), or `ADOPT_WAIT` has passed.
    adopting: Mutex<(HashSet<Uuid>, Option<std::time::Instant>)>,
    /// The last heartbeat of each guest agent, and when it came.
    beats: Mutex<HashMap<Uuid, (cm_api::boot::Heartbeat, tokio::time::Instant)>>,
    /// Judges the beats' age of VMs with a health policy (vm/watch.rs).
    pub watch: watch::Watchdog,
    /// VMs the master's desired state does not name (orphans), by name.
    orphans: Mutex<HashMap<Uuid, String>>,
    /// Wakes the reporter when an observed state changes.
    pub changed: Notify,
    pub guest: GuestPolicy,
    /// The host's volume files (volumes/).
    pub volumes: Arc<Volumes>,
    /// How long a guest may take to release a hot-unplugged disk
    /// (`cm_api::volume::DETACH_TIMEOUT_SECS`; shorter in tests).
    pub detach_timeout: std::time::Duration,
}

/// The longest the first report waits for the VMs found at start to say
/// their state (an actor reads its QEMU's attachments first).
const ADOPT_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// How often the volume files are looked at without a new desired state
/// (to retry a failure, to see a released file).
const VOLUME_PASS: std::time::Duration = std::time::Duration::from_secs(10);

/// What guests may reach and keep on this host (docs/host.md).
#[derive(Debug, Clone)]
pub struct GuestPolicy {
    /// QEMU's `restrict=on` (`--guest-network restricted`).
    pub restricted: bool,
    /// Bytes of serial log kept per VM (`--console-log-max`).
    pub console_log_max: u64,
    /// The binary QEMU runs as the boot proxy's relay (this agent's own).
    pub relay_exe: PathBuf,
}

impl VmContext {
    pub fn new(
        qemu: PathBuf,
        instances_dir: PathBuf,
        images: ImageCache,
        master: Arc<Master>,
        accel_auto: ResolvedAccel,
        forward_bind: String,
        guest_master: String,
    ) -> VmContext {
        // `volumes/` beside the instances directory until `with_volumes`.
        let volumes = Arc::new(Volumes::at(
            instances_dir
                .parent()
                .unwrap_or(&instances_dir)
                .join("volumes"),
            instances_dir.clone(),
        ));
        VmContext {
            qemu,
            instances_dir,
            images,
            master,
            accel_auto,
            forward_bind,
            guest_master,
            observed: Mutex::new(HashMap::new()),
            adopting: Mutex::new((HashSet::new(), None)),
            beats: Mutex::new(HashMap::new()),
            watch: watch::Watchdog::default(),
            orphans: Mutex::new(HashMap::new()),
            changed: Notify::new(),
            guest: GuestPolicy {
                restricted: true,
                console_log_max: crate::config::DEFAULT_CONSOLE_LOG_MAX,
                relay_exe: PathBuf::from("cloudhostd"),
            },
            volumes,
            detach_timeout: std::time::Duration::from_secs(
                cm_api::volume::DETACH_TIMEOUT_SECS.into(),
            ),
        }
    }

    /// The running QEMUs of this host: (VM id, pid).
    pub fn qemus(&self) -> Vec<(Uuid, u32)> {
        self.observed_map()
            .values()
            .filter_map(|o| o.pid.map(|p| (o.id, p)))
            .collect()
    }

    pub fn with_guest_policy(mut self, guest: GuestPolicy) -> VmContext {
        self.guest = guest;
        self
    }

    /// The host's volumes (`Volumes::open`ed).
    pub fn with_volumes(mut self, volumes: Arc<Volumes>) -> VmContext {
        self.volumes = volumes;
        self
    }

    fn observed_map(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, ObservedInstance>> {
        match self.observed.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        }
    }

    pub fn publish(&self, o: ObservedInstance) {
        self.adopting_set().0.remove(&o.id);
        let mut m = self.observed_map();
        let changed = m.get(&o.id).map(|old| *old != o).unwrap_or(true);
        m.insert(o.id, o);
        drop(m);
        if changed {
            self.changed.notify_one();
        }
    }

    fn adopting_set(
        &self,
    ) -> std::sync::MutexGuard<'_, (HashSet<Uuid>, Option<std::time::Instant>)> {
        match self.adopting.lock() {
            Ok(a) => a,
            Err(p) => p.into_inner(),
        }
    }

    /// A VM found at start, not yet published by its actor.
    fn adopting(&self, id: Uuid) {
        let mut a = self.adopting_set();
        a.0.insert(id);
        a.1.get_or_insert_with(std::time::Instant::now);
    }

    /// Whether every VM found at start has said its state (or waited
    /// long enough): a report is complete.
    pub fn settled(&self) -> bool {
        let a = self.adopting_set();
        a.0.is_empty() || a.1.is_none_or(|t| t.elapsed() >= ADOPT_WAIT)
    }

    pub fn unpublish(&self, id: Uuid) {
        self.adopting_set().0.remove(&id);
        self.observed_map().remove(&id);
        self.beats_map().remove(&id);
        self.watch.track(id, None);
        self.watch.set_policy(id, None);
        self.orphans_map().remove(&id);
        self.changed.notify_one();
    }

    fn orphans_map(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, String>> {
        match self.orphans.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        }
    }

    /// Whether a VM is an orphan (with its name) or one of the desired state.
    pub fn set_orphan(&self, id: Uuid, name: Option<&str>) {
        let mut m = self.orphans_map();
        let changed = match name {
            Some(n) => m.insert(id, n.to_string()).is_none(),
            None => m.remove(&id).is_some(),
        };
        drop(m);
        if changed {
            self.changed.notify_one();
        }
    }

    /// What a report carries: the desired state's VMs, and the orphans.
    pub fn report(&self) -> (Vec<ObservedInstance>, Vec<OrphanVm>) {
        let orphans = self.orphans_map().clone();
        let (lost, mine): (Vec<_>, Vec<_>) = self
            .observed()
            .into_iter()
            .partition(|o| orphans.contains_key(&o.id));
        let lost = lost
            .into_iter()
            .map(|o| OrphanVm {
                id: o.id,
                name: orphans.get(&o.id).cloned().unwrap_or_default(),
                state: o.state,
                disk_bytes: dir_bytes(&self.instances_dir.join(o.id.to_string())),
            })
            .collect();
        (mine, lost)
    }

    fn beats_map(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<Uuid, (cm_api::boot::Heartbeat, tokio::time::Instant)>>
    {
        match self.beats.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        }
    }

    /// A heartbeat from a guest agent: reported at once when it is news
    /// to the watchdog (the first after a silence, services changed).
    pub fn beat(&self, id: Uuid, hb: cm_api::boot::Heartbeat) {
        let now = tokio::time::Instant::now();
        let news = self.watch.beat(id, now, &hb.services);
        self.beats_map().insert(id, (hb, now));
        if news {
            self.changed.notify_one();
        }
    }

    /// Watch a VM's heartbeats under its policy while it runs (since
    /// `running_since`), or no longer (`None`); reports at once when that
    /// clears a class.
    pub fn watch_health(
        &self,
        id: Uuid,
        running: Option<(cm_api::agent::HealthPolicy, tokio::time::Instant)>,
    ) {
        if self.watch.track(id, running) {
            self.changed.notify_one();
        }
    }

    /// Every VM's observed state, with its guest's last heartbeat.
    pub fn observed(&self) -> Vec<ObservedInstance> {
        let beats = self.beats_map().clone();
        let mut v: Vec<_> = self
            .observed_map()
            .values()
            .cloned()
            .map(|mut o| {
                o.guest = beats.get(&o.id).map(|(b, at)| cm_api::agent::GuestBeat {
                    beat: b.clone(),
                    age_ms: cm_api::time::duration_ms(at.elapsed()),
                });
                o.liveness = self.watch.liveness(o.id);
                o
            })
            .collect();
        v.sort_by_key(|o| o.id);
        v
    }
}

struct Actor {
    desired: tokio::sync::watch::Sender<Desired>,
    task: tokio::task::JoinHandle<()>,
}

fn send(actor: &Actor, d: Desired) {
    actor.desired.send_if_modified(|cur| {
        if *cur != d {
            *cur = d;
            true
        } else {
            false
        }
    });
}

/// Bytes a VM's directory takes on disk (its overlay, logs, state).
fn dir_bytes(dir: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.blocks() * 512)
        .sum()
}

/// Make, grow and remove volume files: after each desired state, and every
/// `VOLUME_PASS`; the reporter is woken when the report changes.
async fn volume_passes(ctx: Arc<VmContext>) {
    loop {
        tokio::select! {
            _ = ctx.volumes.wake.notified() => {}
            _ = tokio::time::sleep(VOLUME_PASS) => {}
        }
        let before = ctx.volumes.report();
        // Slow work in tasks of its own: files made from an image or a
        // transfer, disks sent to the master.
        crate::volumes::making::start(&ctx);
        crate::volumes::exports::start(&ctx);
        crate::volumes::backups::start(&ctx);
        let (c, qemus) = (ctx.clone(), ctx.qemus());
        if let Err(e) = tokio::task::spawn_blocking(move || c.volumes.converge(&qemus)).await {
            tracing::error!("volume pass: {e}");
        }
        if ctx.volumes.report() != before {
            ctx.changed.notify_one();
        }
    }
}

/// Owns the actors: starts one per VM, tells each what the master wants.
pub struct Vms {
    pub ctx: Arc<VmContext>,
    actors: Mutex<HashMap<Uuid, Actor>>,
    /// The watchdog and the volume passes.
    background: Vec<tokio::task::JoinHandle<()>>,
}

/// An agent that lets go of its VMs (it is stopping) stops driving them;
/// the VMs themselves keep running, to be re-adopted.
impl Drop for Vms {
    fn drop(&mut self) {
        for t in &self.background {
            t.abort();
        }
        for a in self.actors().values() {
            a.task.abort();
        }
    }
}

impl Vms {
    /// Re-adopt every VM found on disk; they only observe until the first
    /// desired state arrives.
    pub fn adopt(ctx: Arc<VmContext>) -> std::io::Result<Vms> {
        std::fs::create_dir_all(&ctx.instances_dir)?;
        let dog = ctx.clone();
        let background = vec![
            tokio::spawn(async move { watch::run(&dog.watch, &dog.changed).await }),
            tokio::spawn(volume_passes(ctx.clone())),
        ];
        let vms = Vms {
            ctx: ctx.clone(),
            actors: Mutex::new(HashMap::new()),
            background,
        };
        for e in std::fs::read_dir(&ctx.instances_dir)?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(".trash-") {
                // A delete interrupted by a crash: finish it.
                let _ = std::fs::remove_dir_all(e.path());
                continue;
            }
            let Ok(id) = Uuid::parse_str(&name) else {
                continue;
            };
            match Vm::adopt(ctx.clone(), qemu::VmPaths::new(e.path())) {
                Ok(vm) => {
                    ctx.adopting(id);
                    vms.spawn(id, vm, Desired::Unknown)
                }
                Err(err) => tracing::error!("cannot adopt {}: {err}", e.path().display()),
            }
        }
        Ok(vms)
    }

    fn actors(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Actor>> {
        match self.actors.lock() {
            Ok(a) => a,
            Err(p) => p.into_inner(),
        }
    }

    fn spawn(&self, id: Uuid, vm: Vm, desired: Desired) {
        let (tx, rx) = tokio::sync::watch::channel(desired);
        let task = tokio::spawn(actor::run(vm, rx));
        self.actors().insert(id, Actor { desired: tx, task });
    }

    /// Hand each VM its part of the master's desired state. A VM is removed
    /// only when the master recorded its deletion; one the desired state
    /// merely lacks is an orphan: stopped, its files kept (docs/host.md).
    pub fn apply(&self, desired: &DesiredState) {
        let roots = desired
            .instances
            .iter()
            .filter_map(|i| i.root_volume.map(|v| (i.id, v)))
            .collect();
        self.ctx.volumes.want_roles(&desired.exports, roots);
        self.ctx.volumes.chains.want(&desired.chains);
        self.ctx
            .volumes
            .want(&desired.volumes, &desired.deleted_volumes);
        let mut wanted: HashMap<Uuid, &cm_api::agent::DesiredInstance> =
            desired.instances.iter().map(|d| (d.id, d)).collect();
        let mut actors = self.actors();
        actors.retain(|_, a| !a.task.is_finished());
        for (id, actor) in actors.iter() {
            let d = match wanted.remove(id) {
                Some(spec) => Desired::Present(Box::new(spec.clone())),
                None if desired.deleted.contains(id) => Desired::Removed,
                None => Desired::Orphaned(KnownStopReason::Orphaned),
            };
            send(actor, d);
        }
        drop(actors);
        for (id, spec) in wanted {
            match Vm::create(self.ctx.clone(), spec.clone()) {
                Ok(vm) => self.spawn(id, vm, Desired::Present(Box::new(spec.clone()))),
                Err(e) => tracing::error!("cannot create the directory of {}: {e}", spec.name),
            }
        }
    }

    /// Stop every VM and keep its files (the master refused this host).
    pub fn orphan_all(&self, why: KnownStopReason) {
        for actor in self.actors().values() {
            send(actor, Desired::Orphaned(why));
        }
    }

    /// The end of a VM's serial log (vm/console.rs: both of its files).
    pub fn console_tail(&self, id: Uuid, max_bytes: u64) -> Result<ConsoleLog, String> {
        let path = qemu::VmPaths::new(self.ctx.instances_dir.join(id.to_string())).console_log();
        match console::ConsoleFiles::new(path).tail(max_bytes) {
            Ok(Some(t)) => Ok(ConsoleLog {
                text: String::from_utf8_lossy(&t.bytes).into_owned(),
                size: t.size,
                truncated: t.truncated,
            }),
            Ok(None) if self.actors().contains_key(&id) => Ok(ConsoleLog {
                text: String::new(),
                size: 0,
                truncated: false,
            }),
            Ok(None) => Err("this host has no such instance".into()),
            Err(e) => Err(format!("console log: {e}")),
        }
    }
}
