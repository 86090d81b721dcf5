//! A simulated host's disks: its volume files (sim/volumes.rs), their
//! snapshots (sim/snapshots.rs) and backup chains (sim/backups.rs), brought
//! to the desired state on each step and read for the reports.

use super::super::snapshots::{Holder, Want};
use super::super::vm::SimVm;
use super::SimHost;
use cm_api::agent::{DesiredState, ObservedState};
use std::collections::HashMap;
use std::sync::MutexGuard;
use std::time::Instant;
use uuid::Uuid;

impl SimHost {
    pub fn has_volume_file(&self, id: Uuid) -> bool {
        self.files().files.contains_key(&id)
    }

    /// The virtual size of a volume's file here, if it has one.
    pub fn volume_size(&self, id: Uuid) -> Option<u64> {
        self.files().files.get(&id).map(|f| f.size_bytes)
    }

    /// An import ended: the volume's file, or the error it failed with.
    pub fn add_volume_file(&self, v: &cm_api::agent::DesiredVolume, error: Option<String>) {
        let f = super::super::transfers::imported_file(v, error);
        self.files().files.insert(v.id, f);
        self.changed.notify_one();
    }

    /// Do `f` to the VM named `vm` (its instance name or id) at `now`.
    pub(super) fn chains(&self) -> MutexGuard<'_, super::super::backups::Chains> {
        match self.chains.lock() {
            Ok(v) => v,
            Err(p) => p.into_inner(),
        }
    }

    /// The virtual size of a made backup of a disk's chain (an export).
    pub fn backup_size(&self, disk: Uuid, backup: Uuid) -> Option<u64> {
        self.chains().size_of(disk, backup)
    }

    /// Make and drop what the desired chains ask (sim/backups.rs).
    pub(super) fn apply_chains(
        &self,
        desired: &DesiredState,
        holders: &HashMap<Uuid, Holder>,
    ) -> bool {
        let files = self.files();
        let size_of = |ch: &cm_api::agent::DesiredChain| match ch.disk.of {
            cm_api::snapshot::SnapshotOf::Volume => {
                files.files.get(&ch.disk.disk).map(|f| f.size_bytes)
            }
            cm_api::snapshot::SnapshotOf::InstanceRoot => desired
                .instances
                .iter()
                .find(|i| i.id == ch.disk.disk && i.image.kind == cm_api::image::ImageKind::Disk)
                .map(|i| i.disk_gib.max(1) << 30),
        };
        let held = |id: Uuid| holders.get(&id).copied().unwrap_or(Holder::Free);
        self.chains().apply(&desired.chains, &size_of, &held)
    }

    pub(super) fn snaps(&self) -> MutexGuard<'_, super::super::snapshots::Snaps> {
        match self.snaps.lock() {
            Ok(v) => v,
            Err(p) => p.into_inner(),
        }
    }

    /// How each disk is held now: by id, a volume's or an instance's root.
    pub(super) fn holders(&self, vms: &HashMap<Uuid, SimVm>) -> HashMap<Uuid, Holder> {
        let now = Instant::now();
        let mut out = HashMap::new();
        for vm in vms.values() {
            let o = vm.observed(now, &self.timings);
            let running = matches!(
                o.state,
                ObservedState::Starting | ObservedState::Running | ObservedState::Stopping
            );
            let h = match (
                running,
                o.guest.is_some() && o.state == ObservedState::Running,
            ) {
                (false, _) => Holder::Free,
                (true, true) => Holder::GuestUp,
                (true, false) => Holder::GuestDown,
            };
            out.insert(vm.id(), h);
            for d in vm.disks() {
                out.insert(*d, h);
            }
        }
        out
    }

    /// Take, remove and revert what the desired state asks of snapshots.
    pub(super) fn apply_snapshots(
        &self,
        desired: &DesiredState,
        holders: &HashMap<Uuid, Holder>,
    ) -> bool {
        let files = self.files();
        let mut snaps = self.snaps();
        let held = |id: &Uuid| holders.get(id).copied().unwrap_or(Holder::Free);
        let mut changed = false;
        for d in &desired.volumes {
            changed |= snaps.apply(&Want {
                disk: d.id,
                size_bytes: files.files.get(&d.id).map(|f| f.size_bytes),
                snapshots: &d.snapshots,
                deleted: &d.deleted_snapshots,
                revert: d.revert,
                holder: held(&d.id),
            });
        }
        for d in &desired.instances {
            let root =
                (d.image.kind == cm_api::image::ImageKind::Disk).then_some(d.disk_gib.max(1) << 30);
            changed |= snaps.apply(&Want {
                disk: d.id,
                size_bytes: root,
                snapshots: &d.root_snapshots,
                deleted: &d.root_deleted_snapshots,
                revert: d.root_revert,
                holder: held(&d.id),
            });
        }
        for id in desired.deleted_volumes.iter().chain(&desired.deleted) {
            if !files.files.contains_key(id) {
                snaps.forget(*id);
            }
        }
        changed
    }

    pub(super) fn files(&self) -> MutexGuard<'_, super::super::volumes::Files> {
        match self.files.lock() {
            Ok(v) => v,
            Err(p) => p.into_inner(),
        }
    }

    /// `hang VOLUME` / `unhang VOLUME`: its guest never releases the disk
    /// (or does again). None: no such volume on this host.
    pub fn set_hung(&self, volume: &str, hung: bool) -> Option<bool> {
        let mut f = self.files();
        let id = f.find(volume)?;
        let changed = if hung {
            f.hung.insert(id)
        } else {
            f.hung.remove(&id)
        };
        drop(f);
        self.wake.notify_one();
        Some(changed)
    }

    /// Every volume file it has (`HostReport.volumes`).
    pub fn volume_files(&self) -> Vec<cm_api::agent::ObservedVolume> {
        let mut files = self.files().report();
        let snaps = self.snaps();
        for f in &mut files {
            (f.snapshots, f.reverted_gen, f.revert_error) = snaps.of(f.id);
        }
        files
    }
}
