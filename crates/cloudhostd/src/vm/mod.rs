//! The VMs of this host: one actor task per VM (`actor`), their QEMU
//! processes (`qemu`, `qmp`), disks (`disk`) and remembered state (`local`).

pub mod actor;
pub mod bootdata;
pub mod disk;
pub mod guest;
pub mod local;
pub mod qemu;
pub mod qmp;

use crate::client::Master;
use crate::images::ImageCache;
use actor::{Desired, Vm};
use cm_api::agent::{DesiredState, ObservedInstance};
use cm_api::instance::ConsoleLog;
use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::sync::{watch, Notify};
use uuid::Uuid;

/// What every VM actor shares.
pub struct VmContext {
    pub qemu: PathBuf,
    pub instances_dir: PathBuf,
    pub images: ImageCache,
    pub master: Arc<Master>,
    /// What `--accel auto` means here, after the probe.
    pub accel_auto: String,
    pub forward_bind: String,
    /// `HOST:PORT` of the master as guests reach it.
    pub guest_master: String,
    observed: Mutex<HashMap<Uuid, ObservedInstance>>,
    /// The last heartbeat of each guest agent, and when it came.
    beats: Mutex<HashMap<Uuid, (cm_api::boot::Heartbeat, std::time::Instant)>>,
    /// Wakes the reporter when an observed state changes.
    pub changed: Notify,
}

impl VmContext {
    pub fn new(
        qemu: PathBuf,
        instances_dir: PathBuf,
        images: ImageCache,
        master: Arc<Master>,
        accel_auto: String,
        forward_bind: String,
        guest_master: String,
    ) -> VmContext {
        VmContext {
            qemu,
            instances_dir,
            images,
            master,
            accel_auto,
            forward_bind,
            guest_master,
            observed: Mutex::new(HashMap::new()),
            beats: Mutex::new(HashMap::new()),
            changed: Notify::new(),
        }
    }

    fn observed_map(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, ObservedInstance>> {
        match self.observed.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        }
    }

    pub fn publish(&self, o: ObservedInstance) {
        let mut m = self.observed_map();
        let changed = m.get(&o.id).map(|old| *old != o).unwrap_or(true);
        m.insert(o.id, o);
        drop(m);
        if changed {
            self.changed.notify_one();
        }
    }

    pub fn unpublish(&self, id: Uuid) {
        self.observed_map().remove(&id);
        self.beats_map().remove(&id);
        self.changed.notify_one();
    }

    fn beats_map(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<Uuid, (cm_api::boot::Heartbeat, std::time::Instant)>>
    {
        match self.beats.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        }
    }

    /// A heartbeat from a guest agent.
    pub fn beat(&self, id: Uuid, hb: cm_api::boot::Heartbeat) {
        self.beats_map().insert(id, (hb, std::time::Instant::now()));
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
                    age_ms: at.elapsed().as_millis() as u64,
                });
                o
            })
            .collect();
        v.sort_by_key(|o| o.id);
        v
    }
}

struct Actor {
    desired: watch::Sender<Desired>,
    task: tokio::task::JoinHandle<()>,
}

/// Owns the actors: starts one per VM, tells each what the master wants.
pub struct Vms {
    pub ctx: Arc<VmContext>,
    actors: Mutex<HashMap<Uuid, Actor>>,
}

impl Vms {
    /// Re-adopt every VM found on disk; they only observe until the first
    /// desired state arrives.
    pub fn adopt(ctx: Arc<VmContext>) -> std::io::Result<Vms> {
        std::fs::create_dir_all(&ctx.instances_dir)?;
        let vms = Vms {
            ctx: ctx.clone(),
            actors: Mutex::new(HashMap::new()),
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
                Ok(vm) => vms.spawn(id, vm, Desired::Unknown),
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
        let (tx, rx) = watch::channel(desired);
        let task = tokio::spawn(actor::run(vm, rx));
        self.actors().insert(id, Actor { desired: tx, task });
    }

    /// Hand each VM its part of the master's desired state.
    pub fn apply(&self, desired: &DesiredState) {
        let mut wanted: HashMap<Uuid, &cm_api::agent::DesiredInstance> =
            desired.instances.iter().map(|d| (d.id, d)).collect();
        let mut actors = self.actors();
        actors.retain(|_, a| !a.task.is_finished());
        for (id, actor) in actors.iter() {
            let d = match wanted.remove(id) {
                Some(spec) => Desired::Present(Box::new(spec.clone())),
                None => Desired::Removed,
            };
            actor.desired.send_if_modified(|cur| {
                if *cur != d {
                    *cur = d;
                    true
                } else {
                    false
                }
            });
        }
        drop(actors);
        for (id, spec) in wanted {
            match Vm::create(self.ctx.clone(), spec.clone()) {
                Ok(vm) => self.spawn(id, vm, Desired::Present(Box::new(spec.clone()))),
                Err(e) => tracing::error!("cannot create the directory of {}: {e}", spec.name),
            }
        }
    }

    /// The end of a VM's serial log.
    pub fn console_tail(&self, id: Uuid, max_bytes: u64) -> Result<ConsoleLog, String> {
        let path = qemu::VmPaths::new(self.ctx.instances_dir.join(id.to_string())).console_log();
        let mut f = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if self.actors().contains_key(&id) {
                    return Ok(ConsoleLog {
                        text: String::new(),
                        size: 0,
                        truncated: false,
                    });
                }
                return Err("this host has no such instance".into());
            }
            Err(e) => return Err(format!("console log: {e}")),
        };
        let size = f.metadata().map(|m| m.len()).map_err(|e| e.to_string())?;
        let start = size.saturating_sub(max_bytes);
        f.seek(SeekFrom::Start(start)).map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        f.take(max_bytes)
            .read_to_end(&mut buf)
            .map_err(|e| e.to_string())?;
        Ok(ConsoleLog {
            text: String::from_utf8_lossy(&buf).into_owned(),
            size,
            truncated: start > 0,
        })
    }
}
