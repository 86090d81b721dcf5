//! The host's volumes (docs/storage.md): qcow2 files in one directory
//! (`--volumes-dir`, by default `DATA/volumes`), made, grown and removed as
//! the master's desired state says, and reported with their sizes and the
//! host's last failure for each. Which VM holds which disk is the VM
//! actors' business (vm/hotplug.rs); this module only asks, before it
//! removes or grows a file, whether a running QEMU has it open.

pub mod backups;
pub mod exports;
pub mod files;
pub mod making;
mod report;
pub mod snapfiles;
pub mod snapshots;
pub mod transfers;

use crate::vm::guestport::Ports;
use cm_api::agent::{DesiredExport, DesiredVolume, ObservedSnapshot};
use cm_api::snapshot::SnapshotOf;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::Notify;
use uuid::Uuid;

/// What the master last asked of this host's volumes.
#[derive(Debug, Clone, Default)]
struct Wanted {
    volumes: Vec<DesiredVolume>,
    deleted: Vec<Uuid>,
    /// Disks to send to the master.
    exports: Vec<DesiredExport>,
    /// The root volume of each instance that boots from one (instance id
    /// to volume id).
    roots: HashMap<Uuid, Uuid>,
}

#[derive(Debug, Default)]
struct State {
    /// None until the first desired state: until then nothing is made or removed.
    wanted: Option<Wanted>,
    /// Virtual sizes measured with qemu-img, by volume, with the inode
    /// measured (a replaced file is measured again). Only this agent
    /// changes a size, and it forgets the entry when it does, so a report
    /// never runs qemu-img.
    sizes: HashMap<Uuid, (u64, u64)>,
    /// The last failure to make, grow or remove each volume.
    errors: HashMap<Uuid, String>,
    /// The last failure to attach each volume to its VM (vm/attachments.rs).
    attach_errors: HashMap<Uuid, String>,
    /// Each volume's snapshots as the last pass left them: its failures,
    /// and what it holds for the report (volumes/snapshots.rs).
    snaps: HashMap<Uuid, Snaps>,
    /// Volumes whose file a background task is making (from an image or a
    /// transfer: volumes/making.rs).
    making: HashSet<Uuid>,
    /// The exports of the desired state, as far as they went
    /// (volumes/exports.rs).
    exports: HashMap<Uuid, exports::Export>,
    /// Deleted volumes a QEMU still had open, since when: a disk just
    /// detached is closed a moment after the guest released it.
    held_since: HashMap<Uuid, std::time::Instant>,
}

/// How long a deleted volume's file may stay open in a QEMU before the
/// deletion is reported failed (it is tried again on every pass).
const RELEASE_GRACE: std::time::Duration = std::time::Duration::from_secs(30);

#[derive(Debug, Default, Clone)]
struct Snaps {
    outcome: snapshots::Outcome,
    observed: Vec<ObservedSnapshot>,
    reverted_gen: u64,
}

pub struct Volumes {
    dir: PathBuf,
    /// Where each VM's QMP socket is (`INSTANCES/UUID/qmp.sock`).
    instances_dir: PathBuf,
    state: Mutex<State>,
    /// One pass at a time.
    pass: Mutex<()>,
    /// Wakes the pass loop (a new desired state).
    pub wake: Notify,
    /// The guests' agent ports, to freeze a guest around a snapshot of a
    /// disk it holds (vm/guestport.rs; the VM relays connect them).
    pub ports: Arc<Ports>,
    /// The backup chains (`--backups-dir`, default `DATA/backups`;
    /// backup/chains.rs).
    pub chains: crate::backup::chains::Chains,
}

impl Volumes {
    /// The volumes in `dir` (made if missing); what a crash left half made
    /// there is removed. Backup chains in `DATA/backups`.
    #[cfg(test)]
    pub fn open(dir: &Path, instances_dir: &Path) -> std::io::Result<Volumes> {
        Volumes::open_with(dir, instances_dir, None)
    }

    /// As `open`, with the backup chains in `backups_dir` when given
    /// (`--backups-dir`).
    pub fn open_with(
        dir: &Path,
        instances_dir: &Path,
        backups_dir: Option<&Path>,
    ) -> std::io::Result<Volumes> {
        std::fs::create_dir_all(dir)?;
        // Guests' data: private to the agent (and its QEMUs), as each VM's
        // own directory is.
        std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
        // Open files are found by their canonical path (/proc/PID/fd).
        let dir = std::fs::canonicalize(dir)?;
        let stray = files::remove_stray_parts(&dir);
        if stray > 0 {
            tracing::info!(
                "removed {stray} half-made volume file(s) in {}",
                dir.display()
            );
        }
        let mut vols = Volumes::at(dir, instances_dir.to_path_buf());
        if let Some(b) = backups_dir {
            vols.chains = crate::backup::chains::Chains::new(b.to_path_buf());
        }
        // An export is made again when the master lists it again: what an
        // earlier run flattened (`ID.qcow2`, `ID.qcow2.part`) is removed.
        if let Ok(entries) = std::fs::read_dir(vols.exports_dir()) {
            for e in entries.flatten() {
                let name = e.file_name();
                let name = name.to_string_lossy();
                let stem = name.strip_suffix(".part").unwrap_or(&name);
                let ours = stem
                    .strip_suffix(".qcow2")
                    .is_some_and(|id| Uuid::parse_str(id).is_ok());
                if ours {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        // What every chain holds, for the first report (a backup cut
        // short by a crash leaves no `.part`: opening its chain removes it).
        vols.chains.scan()?;
        Ok(vols)
    }

    /// The volumes in `dir` as it is (no directory made, nothing removed).
    pub fn at(dir: PathBuf, instances_dir: PathBuf) -> Volumes {
        let backups = instances_dir
            .parent()
            .unwrap_or(&instances_dir)
            .join("backups");
        Volumes {
            dir,
            instances_dir,
            state: Mutex::new(State::default()),
            pass: Mutex::new(()),
            wake: Notify::new(),
            ports: Arc::new(Ports::default()),
            chains: crate::backup::chains::Chains::new(backups),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where disks are flattened before they are sent (`DATA/exports`,
    /// beside the instances directory).
    pub fn exports_dir(&self) -> PathBuf {
        self.instances_dir
            .parent()
            .unwrap_or(&self.instances_dir)
            .join("exports")
    }

    /// The file of volume `id` (it may not exist).
    pub fn path(&self, id: Uuid) -> PathBuf {
        files::path(&self.dir, id)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        }
    }

    /// The master's desired volumes; the next pass acts on them.
    pub fn want(&self, volumes: &[DesiredVolume], deleted: &[Uuid]) {
        let mut s = self.state();
        let (exports, roots) = match s.wanted.take() {
            Some(w) => (w.exports, w.roots),
            None => Default::default(),
        };
        s.wanted = Some(Wanted {
            volumes: volumes.to_vec(),
            deleted: deleted.to_vec(),
            exports,
            roots,
        });
        drop(s);
        self.wake.notify_one();
    }

    /// The disks to send to the master, and which instance boots from which
    /// volume (instance id to volume id); call before `want`.
    pub fn want_roles(&self, exports: &[DesiredExport], roots: HashMap<Uuid, Uuid>) {
        let mut s = self.state();
        let w = s.wanted.get_or_insert_with(Wanted::default);
        w.exports = exports.to_vec();
        w.roots = roots;
    }

    /// Record (or clear) why volume `id` could not be attached to its VM;
    /// reported as the volume's error (docs/storage.md).
    pub fn set_attach_error(&self, id: Uuid, error: Option<String>) {
        let mut s = self.state();
        match error {
            Some(e) => s.attach_errors.insert(id, e),
            None => s.attach_errors.remove(&id),
        };
    }

    /// One pass: remove the deleted volumes' files, make the missing ones,
    /// grow the small ones, measure what is new. `qemus` are the running
    /// QEMUs of this host (VM id, pid). Blocking.
    pub fn converge(&self, qemus: &[(Uuid, u32)]) {
        let _pass = match self.pass.lock() {
            Ok(p) => p,
            Err(p) => p.into_inner(),
        };
        let wanted = self.state().wanted.clone();
        let held = self.holders(qemus);
        if let Some(w) = wanted {
            for id in &w.deleted {
                let r = self.delete(*id, held.get(id));
                self.record(*id, r);
            }
            let roots: HashSet<Uuid> = w.roots.values().copied().collect();
            for v in w.volumes.iter().filter(|v| !w.deleted.contains(&v.id)) {
                if (v.image.is_some() || v.import.is_some()) && !self.path(v.id).exists() {
                    continue; // made in the background (volumes/making.rs)
                }
                let held = held.get(&v.id);
                if roots.contains(&v.id) && held.is_some() {
                    // A root volume is grown while its instance is stopped
                    // (its QEMU's root drive has no node of ours to grow).
                    if self.path(v.id).exists() {
                        self.snapshots(v, held, true);
                    }
                    continue;
                }
                let r = self.make_or_grow(v, held);
                self.record(v.id, r);
                if self.path(v.id).exists() {
                    self.snapshots(v, held, roots.contains(&v.id));
                }
            }
        }
        self.measure();
    }

    fn record(&self, id: Uuid, r: Result<(), String>) {
        let mut s = self.state();
        match r {
            Ok(()) => s.errors.remove(&id),
            Err(e) => {
                if s.errors.get(&id) != Some(&e) {
                    tracing::warn!("volume {id}: {e}");
                }
                s.errors.insert(id, e)
            }
        };
    }

    /// Bring a volume's snapshots to what the master wants, and keep what
    /// it then holds for the reports.
    /// A root volume (`root`) is its VM's root drive, not a node of ours.
    fn snapshots(&self, v: &DesiredVolume, holder: Option<&Uuid>, root: bool) {
        let file = self.path(v.id);
        let holder = holder.map(|vm| snapshots::Holder {
            vm: *vm,
            qmp: self.instances_dir.join(vm.to_string()).join("qmp.sock"),
            node: if root {
                crate::vm::actor::ROOT_DRIVE.to_string()
            } else {
                cm_api::volume::qemu_node(v.id)
            },
            ports: Some(self.ports.clone()),
        });
        let want = snapshots::Want {
            snapshots: &v.snapshots,
            deleted: &v.deleted_snapshots,
            revert: v.revert,
        };
        let outcome = snapshots::converge(&file, want, holder.as_ref());
        if outcome.revert_error.is_none() && v.revert.is_some() {
            // A reverted disk's size may be the snapshot's.
            self.state().sizes.remove(&v.id);
        }
        let (observed, reverted_gen) = snapshots::observe(&file, &outcome);
        self.state().snaps.insert(
            v.id,
            Snaps {
                outcome,
                observed,
                reverted_gen,
            },
        );
    }

    /// Where a clone's source disk is: a volume's file, or an instance's
    /// root disk.
    fn clone_source(&self, of: SnapshotOf, disk: Uuid) -> PathBuf {
        match of {
            SnapshotOf::Volume => self.path(disk),
            SnapshotOf::InstanceRoot => {
                self.instances_dir.join(disk.to_string()).join("disk.qcow2")
            }
        }
    }

    fn delete(&self, id: Uuid, holder: Option<&Uuid>) -> Result<(), String> {
        if let Some(vm) = holder {
            let since = *self
                .state()
                .held_since
                .entry(id)
                .or_insert_with(std::time::Instant::now);
            if since.elapsed() < RELEASE_GRACE {
                // Just detached: its QEMU closes it in a moment; next pass.
                return Ok(());
            }
            return Err(format!(
                "not deleted: instance {vm} holds it (detach it first)"
            ));
        }
        self.state().held_since.remove(&id);
        if self.path(id).exists() {
            files::remove(&self.dir, id).map_err(|e| e.to_string())?;
            tracing::info!("volume {id}: removed");
        }
        snapfiles::remove_beside(&self.path(id)).map_err(|e| e.to_string())?;
        let mut s = self.state();
        s.sizes.remove(&id);
        s.snaps.remove(&id);
        s.attach_errors.remove(&id);
        Ok(())
    }

    fn make_or_grow(&self, v: &DesiredVolume, holder: Option<&Uuid>) -> Result<(), String> {
        let file = self.path(v.id);
        if let (false, Some(c)) = (file.exists(), v.clone_from) {
            let src = self.clone_source(c.of, c.disk);
            snapfiles::clone(&src, c.snapshot, &file)
                .map_err(|e| format!("cloning snapshot {}: {e}", c.snapshot))?;
            tracing::info!(
                "volume {} ({}): cloned from snapshot {}",
                v.name,
                v.id,
                c.snapshot
            );
            // Grown below if asked bigger than the snapshot.
        }
        if !file.exists() {
            files::create(&self.dir, v.id, v.size_bytes).map_err(|e| e.to_string())?;
            tracing::info!("volume {} ({}): made, {} bytes", v.name, v.id, v.size_bytes);
            return Ok(());
        }
        let size = self.size(v.id, &file).map_err(|e| e.to_string())?;
        if size >= v.size_bytes {
            return Ok(()); // never shrunk
        }
        match holder {
            Some(vm) => {
                let qmp = self.instances_dir.join(vm.to_string()).join("qmp.sock");
                crate::vm::hotplug::grow(&qmp, v.id, v.size_bytes)
                    .map_err(|e| format!("growing it in instance {vm}: {e}"))?;
            }
            None => files::grow(&file, v.size_bytes).map_err(|e| e.to_string())?,
        }
        self.state().sizes.remove(&v.id);
        tracing::info!(
            "volume {} ({}): grown to {} bytes",
            v.name,
            v.id,
            v.size_bytes
        );
        Ok(())
    }

    /// A file's virtual size, measured once per inode and change.
    fn size(&self, id: Uuid, file: &Path) -> Result<u64, files::FileError> {
        let ino = files::stat(file).map(|(ino, _)| ino).unwrap_or(0);
        if let Some((i, size)) = self.state().sizes.get(&id) {
            if *i == ino {
                return Ok(*size);
            }
        }
        let size = files::virtual_size(file)?;
        self.state().sizes.insert(id, (ino, size));
        Ok(size)
    }

    /// Measure every file not measured yet.
    fn measure(&self) {
        for id in files::list(&self.dir) {
            if let Err(e) = self.size(id, &self.path(id)) {
                self.record(id, Err(e.to_string()));
            }
            // A volume the master did not list (yet): what it holds.
            if !self.state().snaps.contains_key(&id) {
                let outcome = snapshots::Outcome::default();
                let (observed, reverted_gen) = snapshots::observe(&self.path(id), &outcome);
                self.state().snaps.insert(
                    id,
                    Snaps {
                        outcome,
                        observed,
                        reverted_gen,
                    },
                );
            }
        }
    }
}

#[cfg(test)]
mod background_tests;
#[cfg(test)]
pub(crate) mod test_master;
#[cfg(test)]
mod tests;
