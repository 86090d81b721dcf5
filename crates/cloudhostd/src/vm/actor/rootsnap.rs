//! An instance's root disk's snapshots (docs/storage.md, "Snapshots"):
//! brought to `root_snapshots` / `root_deleted_snapshots` / `root_revert`
//! by volumes/snapshots.rs, offline while no QEMU runs (a pending revert is
//! applied before a launch: `step` calls this first), through the QMP of
//! the running QEMU otherwise (its `-drive ...,if=virtio` is the block
//! backend `virtio0`).

use super::Vm;
use crate::volumes::snapshots::{self, Holder, Outcome};
use cm_api::agent::{DesiredInstance, ObservedSnapshot};
use cm_api::image::ImageKind;

/// The block backend QEMU names the first `-drive if=virtio` (the root disk).
pub const ROOT_DRIVE: &str = "virtio0";

/// What the last pass left of the root disk's snapshots, for the reports.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RootSnaps {
    pub outcome: Outcome,
    pub observed: Vec<ObservedSnapshot>,
    pub reverted_gen: u64,
}

impl Vm {
    /// One pass over the root disk's snapshots; true when a revert the
    /// master asked for is still not applied (then the VM is not launched).
    pub(super) async fn root_snapshots_step(&mut self, spec: &DesiredInstance) -> bool {
        let disk = self.paths.disk();
        let wanted = !spec.root_snapshots.is_empty()
            || !spec.root_deleted_snapshots.is_empty()
            || spec.root_revert.is_some();
        if spec.image.kind != ImageKind::Disk || !disk.exists() {
            return false;
        }
        if !wanted && self.root.observed.is_empty() && self.root.reverted_gen == 0 {
            // Nothing asked; what the disk holds is read once (a restart).
            if self.root_read {
                return false;
            }
        }
        self.root_read = true;
        let holder = self.pid.map(|_| Holder {
            vm: self.id,
            qmp: self.paths.qmp(),
            node: ROOT_DRIVE.to_string(),
            ports: Some(self.ctx.volumes.ports.clone()),
        });
        let (snaps, deleted, revert) = (
            spec.root_snapshots.clone(),
            spec.root_deleted_snapshots.clone(),
            spec.root_revert,
        );
        let r = tokio::task::spawn_blocking(move || {
            let want = snapshots::Want {
                snapshots: &snaps,
                deleted: &deleted,
                revert,
            };
            let outcome = snapshots::converge(&disk, want, holder.as_ref());
            let (observed, reverted_gen) = snapshots::observe(&disk, &outcome);
            RootSnaps {
                outcome,
                observed,
                reverted_gen,
            }
        })
        .await;
        let next = match r {
            Ok(n) => n,
            Err(e) => {
                tracing::error!("{}: root disk snapshots: {e}", self.name());
                return spec.root_revert.is_some();
            }
        };
        let pending = spec
            .root_revert
            .is_some_and(|rv| rv.gen > next.reverted_gen);
        if next != self.root {
            self.root = next;
            self.publish();
        }
        pending
    }
}
