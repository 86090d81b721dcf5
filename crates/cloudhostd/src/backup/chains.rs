//! The chains the master wants (`DesiredState.chains`, docs/storage.md
//! "Backups"): each listed backup a chain lacks is made, oldest first, one
//! at a time per chain, in a blocking task of its own (never in the
//! agent's loops); the `deleted` ones are removed (the next one rebased);
//! what every chain holds is kept in memory for the reports, read from the
//! records beside the files (backup/record.rs), so a report runs nothing.
//! A backup that failed is remembered (in memory) and not tried again
//! while the master lists it; it is reported with its error. A backup the
//! master has seen made (`made`) is never made again: a chain that lost it
//! fetches it back from its copy over ssh (`mirror`, backup/mirror.rs),
//! and a chain with a mirror is copied there after each change.

use super::job::{self, Freeze};
use super::mirror::SshSettings;
use super::record::{self, Record};
use super::Chain;
use super::{backup_as, Source};
use crate::vm::guestport::Ports;
use cm_api::agent::{DesiredChain, DiskRef, ObservedBackup};
use cm_api::backup::chain_name;
use cm_api::snapshot::{Consistency, SnapshotOf};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use uuid::Uuid;

/// The longest one backup job may run before it is cancelled.
const JOB_TIMEOUT: Duration = Duration::from_secs(3600);
/// Where a chain's disk is, and the running QEMU that holds it, if any.
#[derive(Clone)]
pub struct Disk {
    /// The disk's file (it may be gone: then nothing new is made).
    pub file: PathBuf,
    pub holder: Option<Holder>,
}

#[derive(Clone)]
pub struct Holder {
    pub vm: Uuid,
    pub qmp: PathBuf,
    /// The disk's format node; `None` for a root drive, found by its file.
    pub node: Option<String>,
    /// The guests' agent ports, to freeze the guest around the job's start.
    pub ports: Option<Arc<Ports>>,
}

#[derive(Debug, Default)]
struct State {
    wanted: Vec<DesiredChain>,
    /// Chains a task is working on.
    running: HashSet<String>,
    /// Chains of disks a QEMU is being launched on: no offline backup
    /// starts on them (the two would fight over the disk's lock).
    launching: HashSet<String>,
    /// Backups that could not be made, and why.
    failed: HashMap<Uuid, String>,
    /// What each chain on disk holds (listed or not), by chain name.
    held: HashMap<String, Vec<ObservedBackup>>,
    /// Each mirrored chain's copy over ssh, by chain name.
    mirrors: HashMap<String, Mirror>,
    ssh: SshSettings,
}

pub struct Chains {
    root: PathBuf,
    state: Mutex<State>,
}

/// The disk a chain's name tells (`volume-ID`, `root-ID`).
fn disk_of(name: &str) -> Option<DiskRef> {
    let (of, id) = if let Some(id) = name.strip_prefix("volume-") {
        (SnapshotOf::Volume, id)
    } else {
        (SnapshotOf::InstanceRoot, name.strip_prefix("root-")?)
    };
    Some(DiskRef {
        of,
        disk: Uuid::parse_str(id).ok()?,
        backup: None,
    })
}

impl Chains {
    /// The chains under `root` (`DATA/backups`), not read yet (`scan`).
    pub fn new(root: PathBuf) -> Chains {
        Chains {
            root,
            state: Mutex::new(State::default()),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn state(&self) -> MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        }
    }

    /// Make the chains' directory (mode 0700) and read every chain in it
    /// (at the agent's start: what a crash left half made is removed by
    /// opening it). Blocking.
    pub fn scan(&self) -> std::io::Result<()> {
        // Guests' data: private to the agent, as the volumes are.
        std::fs::create_dir_all(&self.root)?;
        std::fs::set_permissions(
            &self.root,
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )?;
        let entries = std::fs::read_dir(&self.root)?;
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(disk) = disk_of(&name) else { continue };
            match Chain::open(&self.root, &name) {
                Ok(chain) => self.refresh(&chain, &name, disk),
                Err(err) => tracing::warn!("backup chain {name}: {err}"),
            }
        }
        Ok(())
    }

    /// Mark the chains of the disks a VM is about to launch on, so that no
    /// backup starts on them until `end_launch`; false (nothing marked)
    /// while a backup of one of them runs: the launch waits for it.
    pub fn begin_launch(&self, names: &[String]) -> bool {
        let mut s = self.state();
        if names.iter().any(|n| s.running.contains(n)) {
            return false;
        }
        s.launching.extend(names.iter().cloned());
        true
    }

    pub fn end_launch(&self, names: &[String]) {
        let mut s = self.state();
        for n in names {
            s.launching.remove(n);
        }
    }

    /// How this agent reaches mirrors over ssh (its settings).
    pub fn set_ssh(&self, ssh: SshSettings) {
        self.state().ssh = ssh;
    }

    /// The master's chains; failures of backups it no longer lists are
    /// forgotten.
    pub fn want(&self, chains: &[DesiredChain]) {
        let mut s = self.state();
        let listed: HashSet<Uuid> = chains.iter().flat_map(|c| c.backups.clone()).collect();
        s.failed.retain(|id, _| listed.contains(id));
        s.wanted = chains.to_vec();
    }

    /// The chains with work to do and no task on them, now marked running.
    pub fn take_work(&self) -> Vec<DesiredChain> {
        let mut s = self.state();
        let mut todo = Vec::new();
        for c in s.wanted.clone() {
            let name = chain_name(c.disk.of, c.disk.disk);
            if s.running.contains(&name) || s.launching.contains(&name) {
                continue;
            }
            let held: HashSet<Uuid> = s
                .held
                .get(&name)
                .into_iter()
                .flatten()
                .map(|b| b.id)
                .collect();
            let make = c
                .backups
                .iter()
                .any(|id| !held.contains(id) && !s.failed.contains_key(id) && !c.made.contains(id));
            let drop = c.deleted.iter().any(|id| held.contains(id));
            let copy = c.mirror.as_ref().is_some_and(|t| {
                let lost = c.made.iter().any(|id| !held.contains(id));
                match s.mirrors.get(&name) {
                    None => true,
                    Some(m) => m.due() && (m.target != *t || m.dirty || lost),
                }
            });
            if make || drop || copy {
                s.running.insert(name);
                todo.push(c);
            }
        }
        todo
    }

    /// One chain brought to what the master wants. Blocking; the chain is
    /// marked idle again at the end.
    pub fn pass(&self, want: &DesiredChain, disk: &Disk) {
        let name = chain_name(want.disk.of, want.disk.disk);
        // Idle again however the pass ends (a panic included).
        let _idle = Idle(self, &name);
        match Chain::open(&self.root, &name) {
            Ok(chain) => {
                // A chain that lacks a backup the master saw made (and
                // could not fetch it back) is left as it is: nothing made,
                // removed or copied (a copy would delete it there too).
                let whole = self.fetch_lost(&chain, &name, want);
                if whole {
                    self.work(&chain, want, disk);
                }
                self.refresh(&chain, &name, want.disk);
                if whole {
                    self.copy(&chain, &name, want);
                }
            }
            Err(e) => tracing::warn!("backup chain {name}: {e} (tried again later)"),
        }
    }

    fn work(&self, chain: &Chain, want: &DesiredChain, disk: &Disk) {
        let name = chain_name(want.disk.of, want.disk.disk);
        let changed = || {
            if let Some(m) = self.state().mirrors.get_mut(&name) {
                m.dirty = true;
            }
        };
        for id in &want.deleted {
            let had = chain.find(*id).is_ok();
            match chain.remove(*id) {
                Ok(()) => tracing::info!("backup {id}: removed"),
                Err(e) => tracing::warn!("backup {id}: not removed: {e}"),
            }
            if had {
                changed();
            }
        }
        for id in &want.backups {
            if want.deleted.contains(id)
                || want.made.contains(id)
                || self.state().failed.contains_key(id)
            {
                continue;
            }
            let files = match chain.list() {
                Ok(f) => f,
                Err(e) => {
                    tracing::warn!("backup chain {}: {e}", chain.dir().display());
                    return;
                }
            };
            if files.iter().any(|f| f.id == *id) {
                continue;
            }
            if !disk.file.exists() {
                return; // the disk is gone: its chain only keeps what it has
            }
            match make(chain, *id, disk) {
                Ok(()) => changed(),
                Err(e) => {
                    tracing::warn!("backup {id}: {e}");
                    self.state().failed.insert(*id, e);
                }
            }
        }
    }

    /// What the chain holds now, for the reports (records made for files
    /// that lack one).
    fn refresh(&self, chain: &Chain, name: &str, disk: DiskRef) {
        let files = match chain.list() {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!("backup chain {name}: {e}");
                return;
            }
        };
        let mut held = Vec::new();
        for f in files {
            match record::load_or_make(chain.dir(), &f) {
                Ok(r) => held.push(observed(f.id, disk, &r)),
                Err(e) => tracing::warn!("backup {}: {e}", f.id),
            }
        }
        self.state().held.insert(name.to_string(), held);
    }

    /// Every backup file of every chain, and each listed backup that
    /// failed. Cheap: memory only.
    pub fn report(&self) -> Vec<ObservedBackup> {
        let s = self.state();
        let mut out: Vec<ObservedBackup> = Vec::new();
        for (name, held) in &s.held {
            let mirror = s
                .wanted
                .iter()
                .find(|c| chain_name(c.disk.of, c.disk.disk) == *name)
                .and_then(|c| c.mirror.as_ref());
            let m = s.mirrors.get(name);
            for b in held {
                let mut b = b.clone();
                if let Some(t) = mirror {
                    b.mirrored =
                        Some(m.is_some_and(|m| m.target == *t && m.copied.contains(&b.id)));
                    b.mirror_error = m.and_then(|m| m.error.clone());
                }
                out.push(b);
            }
        }
        for c in &s.wanted {
            for id in &c.backups {
                if let Some(error) = s.failed.get(id) {
                    out.push(ObservedBackup {
                        id: *id,
                        disk: c.disk,
                        kind: None,
                        full_reason: None,
                        consistency: None,
                        size_bytes: 0,
                        file_bytes: 0,
                        took_ms: 0,
                        error: Some(error.clone()),
                        mirrored: None,
                        mirror_error: None,
                    });
                }
            }
        }
        out.sort_by_key(|b| b.id);
        out
    }
}

/// Marks a chain idle when dropped.
struct Idle<'a>(&'a Chains, &'a str);

impl Drop for Idle<'_> {
    fn drop(&mut self) {
        self.0.state().running.remove(self.1);
    }
}

fn observed(id: Uuid, disk: DiskRef, r: &Record) -> ObservedBackup {
    ObservedBackup {
        id,
        disk,
        kind: Some(r.kind),
        full_reason: r.full_reason.clone(),
        consistency: r.consistency,
        size_bytes: r.size_bytes,
        file_bytes: r.file_bytes,
        took_ms: r.took_ms,
        error: None,
        mirrored: None,
        mirror_error: None,
    }
}

/// The snapshot code's freeze through cm-guest (volumes/snapshots.rs).
struct GuestFreeze<'a> {
    ports: &'a Ports,
    vm: Uuid,
    request: Uuid,
}

impl Freeze for GuestFreeze<'_> {
    fn freeze(&self) -> bool {
        crate::volumes::snapshots::freeze_guest(self.ports, self.vm, self.request)
    }
    fn thaw(&self) {
        crate::volumes::snapshots::thaw_guest(self.ports, self.vm, self.request)
    }
}

/// Make backup `id` of `disk` in `chain`, and its record.
fn make(chain: &Chain, id: Uuid, disk: &Disk) -> Result<(), String> {
    let (b, consistency) = match &disk.holder {
        None => {
            let b = backup_as(chain, id, Source::Offline(&disk.file), JOB_TIMEOUT, None)
                .map_err(|e| e.to_string())?;
            (b, Consistency::Offline)
        }
        Some(h) => {
            let node = match &h.node {
                Some(n) => n.clone(),
                None => job::node_of_file(&h.qmp, &disk.file).map_err(|e| e.to_string())?,
            };
            let source = Source::Online {
                qmp: &h.qmp,
                node: &node,
            };
            let freeze = h.ports.as_deref().map(|ports| GuestFreeze {
                ports,
                vm: h.vm,
                request: Uuid::new_v4(),
            });
            let freeze = freeze.as_ref().map(|f| f as &dyn Freeze);
            let b = backup_as(chain, id, source, JOB_TIMEOUT, freeze).map_err(|e| e.to_string())?;
            let c = if b.frozen {
                Consistency::Filesystem
            } else {
                Consistency::Crash
            };
            (b, c)
        }
    };
    let r = Record::of(&b, consistency);
    record::save(chain.dir(), id, &r).map_err(|e| e.to_string())?;
    tracing::info!(
        "backup {id} of {} into {}: {:?} ({}), {} bytes in {} ms",
        disk.file.display(),
        b.file.path.display(),
        r.kind,
        r.full_reason.as_deref().unwrap_or("changes only"),
        r.file_bytes,
        r.took_ms
    );
    Ok(())
}

#[path = "chain_mirrors.rs"]
mod mirrors;
use mirrors::Mirror;
#[cfg(test)]
use mirrors::MIRROR_RETRY;

#[cfg(test)]
#[path = "chains_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "mirror_tests.rs"]
mod mirror_tests;
