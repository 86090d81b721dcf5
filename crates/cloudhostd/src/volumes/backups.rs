//! The volumes' side of backups (backup/chains.rs does the work): where a
//! chain's disk is on this host and which running QEMU holds it, and one
//! blocking task per chain with work to do, started from the volume pass.

use super::Volumes;
use crate::backup::chains::{Disk, Holder};
use crate::vm::VmContext;
use cm_api::agent::{DesiredInstance, DiskRef};
use cm_api::snapshot::SnapshotOf;
use std::collections::HashMap;
use std::sync::Arc;
use uuid::Uuid;

impl Volumes {
    /// The instance-to-root-volume map the master last sent.
    fn roots(&self) -> HashMap<Uuid, Uuid> {
        self.state()
            .wanted
            .as_ref()
            .map(|w| w.roots.clone())
            .unwrap_or_default()
    }

    /// Where `disk` is and who holds it: a volume's file (held by the VM
    /// that has it open: as a volume node, or as its root drive when the
    /// VM boots from it), or an instance's root disk (its root volume, or
    /// `INSTANCES/ID/disk.qcow2`, held while its QEMU runs).
    pub fn backup_disk(&self, disk: DiskRef, qemus: &[(Uuid, u32)]) -> Disk {
        let roots = self.roots();
        let held = self.holders(qemus);
        let holder = |vm: Uuid, node: Option<String>| Holder {
            vm,
            qmp: self.instances_dir.join(vm.to_string()).join("qmp.sock"),
            node,
            ports: Some(self.ports.clone()),
        };
        let volume = |v: Uuid| {
            let is_root = roots.values().any(|r| *r == v);
            Disk {
                file: self.path(v),
                holder: held
                    .get(&v)
                    .map(|vm| holder(*vm, (!is_root).then(|| cm_api::volume::qemu_node(v)))),
            }
        };
        match (disk.of, roots.get(&disk.disk)) {
            (SnapshotOf::Volume, _) => volume(disk.disk),
            (SnapshotOf::InstanceRoot, Some(v)) => volume(*v),
            (SnapshotOf::InstanceRoot, None) => Disk {
                file: self
                    .instances_dir
                    .join(disk.disk.to_string())
                    .join("disk.qcow2"),
                holder: qemus
                    .iter()
                    .any(|(vm, _)| *vm == disk.disk)
                    .then(|| holder(disk.disk, None)),
            },
        }
    }
}

/// The chains of the disks a VM launches on (its root disk, its root
/// volume, its volumes) held back from backups while it launches: an
/// offline backup holds the disk's lock, and QEMU would fail to open it.
pub struct LaunchHold {
    vols: Arc<super::Volumes>,
    names: Vec<String>,
}

impl LaunchHold {
    /// None while a backup of one of the VM's disks runs (it is offline:
    /// the VM is not running): the launch waits for its next step.
    pub fn take(vols: &Arc<super::Volumes>, spec: &DesiredInstance) -> Option<LaunchHold> {
        use cm_api::backup::chain_name;
        let mut names = vec![chain_name(SnapshotOf::InstanceRoot, spec.id)];
        names.extend(
            spec.root_volume
                .iter()
                .chain(spec.volumes.iter().map(|a| &a.volume))
                .map(|v| chain_name(SnapshotOf::Volume, *v)),
        );
        vols.chains.begin_launch(&names).then(|| LaunchHold {
            vols: vols.clone(),
            names,
        })
    }
}

impl Drop for LaunchHold {
    fn drop(&mut self) {
        self.vols.chains.end_launch(&self.names);
    }
}

/// A task for each chain with backups to make or remove and none under
/// way; the reporter is woken when it ends.
pub fn start(ctx: &Arc<VmContext>) {
    let work = ctx.volumes.chains.take_work();
    if work.is_empty() {
        return;
    }
    let qemus = ctx.qemus();
    for want in work {
        let disk = ctx.volumes.backup_disk(want.disk, &qemus);
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let c = ctx.clone();
            let r = tokio::task::spawn_blocking(move || c.volumes.chains.pass(&want, &disk)).await;
            if let Err(e) = r {
                tracing::error!("backup task: {e}");
            }
            ctx.changed.notify_one();
        });
    }
}
