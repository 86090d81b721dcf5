//! Volumes (issue 12, docs/storage.md) as stored: the intent the master
//! owns (exists, size, the instance it is to be attached to, deleted) and
//! the facts its host last reported (the file, the VM that holds it).

use super::{HostId, IdempotencyRecord, ImageId, InstanceId, Millis, Operation, Result};
use crate::scheduler::Unplaced;
use cm_api::agent::{AttachmentState, ObservedInstance, ObservedVolume};
use cm_api::ids::VolumeId;

#[derive(Debug, Clone, PartialEq)]
pub struct VolumeRow {
    pub id: VolumeId,
    pub name: String,
    pub host_id: HostId,
    pub host_name: String,
    /// The size asked for.
    pub size_bytes: u64,
    /// The instance it is to be attached to (and that instance's name).
    pub instance: Option<(InstanceId, String)>,
    /// Its place among that instance's volumes.
    pub attach_pos: u64,
    /// Raised by every attach and detach (an attach or detach operation
    /// waits for its own: `want`).
    pub attach_gen: u64,
    /// The detach under way may restart the VM.
    pub force_detach: bool,
    pub deleted: bool,
    /// The host generation its deletion was recorded at.
    pub deleted_gen: Option<u64>,
    /// The host generation at which what the host must do for it last
    /// changed: a failure reported before the host applied it is old news.
    pub intent_gen: u64,
    /// The image it was made from (and that image's name): a persistent
    /// root, or a clone of one; what makes it bootable.
    pub image: Option<(ImageId, String)>,
    /// The instance booting from it (and that instance's name).
    pub root_of: Option<(InstanceId, String)>,
    pub facts: VolumeFacts,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// What its host last reported.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct VolumeFacts {
    /// The file's virtual size (None: no file).
    pub size_bytes: Option<u64>,
    pub allocated_bytes: Option<u64>,
    /// The host's last failure to make, grow or remove the file.
    pub error: Option<String>,
    /// The instance whose VM holds it (and that instance's name).
    pub holder: Option<(InstanceId, String)>,
    pub attach_state: Option<AttachmentState>,
    /// The host's last failure to attach or detach it.
    pub attach_error: Option<String>,
}

impl VolumeRow {
    /// Held by this instance's VM, as its host reports.
    pub fn held_by(&self, id: InstanceId) -> bool {
        self.facts.holder.as_ref().is_some_and(|(h, _)| *h == id)
    }

    pub fn desired_instance(&self) -> Option<InstanceId> {
        self.instance.as_ref().map(|(i, _)| *i)
    }

    /// The instance it is attached to or is the root of, with its name.
    pub fn user(&self) -> Option<&(InstanceId, String)> {
        self.root_of.as_ref().or(self.instance.as_ref())
    }
}

/// A new volume, validated, before placement.
#[derive(Debug, Clone)]
pub struct NewVolume {
    pub id: VolumeId,
    pub name: String,
    pub size_bytes: u64,
}

/// What volume placement knows of a host.
#[derive(Debug, Clone, PartialEq)]
pub struct VolumeSpace {
    pub id: HostId,
    pub name: String,
    pub enabled: bool,
    pub last_seen: Option<Millis>,
    /// Free disk, from its facts.
    pub disk_free_mib: u64,
    /// What its volumes may still grow into (size − allocated, summed).
    pub unallocated_mib: u64,
    pub volume_count: u32,
}

impl VolumeSpace {
    /// MiB a new volume may take here.
    pub fn room_mib(&self) -> u64 {
        self.disk_free_mib.saturating_sub(self.unallocated_mib)
    }
}

/// The placement rule for a volume, run inside the store's transaction.
pub type VolumePlacer<'a> = dyn Fn(&[VolumeSpace]) -> std::result::Result<HostId, Unplaced> + 'a;

/// A change of a volume's intent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolumeChange {
    /// Grow it to this size (never smaller).
    Resize { size_bytes: u64 },
    /// Attach it to this instance (on its host).
    Attach { instance: InstanceId },
    /// Detach it from the instance it is attached to.
    Detach { force: bool },
    /// Remove it (refused while an instance holds it or is to).
    Delete,
    /// The reconciler undoes a failed attach (`to: None`) or a failed
    /// detach (`to`: the instance that kept it), if nothing changed since
    /// (`attach_gen` is still `expected`).
    Revert {
        expected: u64,
        to: Option<InstanceId>,
    },
}

/// Renders a keyed request's answer from the volume its change wrote.
pub type RenderVolume = dyn Fn(&VolumeRow) -> serde_json::Result<Vec<u8>> + Send + Sync;

/// The answer to a keyed volume request, written in the change's own
/// transaction (as `KeyedAnswer` is for instances).
pub struct VolumeKeyed {
    pub record: IdempotencyRecord,
    pub render: Box<RenderVolume>,
}

/// One volume whose facts changed with a report.
#[derive(Debug, Clone)]
pub struct VolumeChanged {
    pub before: VolumeRow,
    pub after: VolumeRow,
}

#[derive(Debug, Clone, Default)]
pub struct VolumeReport {
    pub changed: Vec<VolumeChanged>,
    /// Deleted volumes whose host removed the file: their records are gone.
    pub purged: Vec<VolumeRow>,
    /// The events the report made, committed with it.
    pub events: Vec<cm_api::event::Event>,
}

/// What a report's changes tell (the app's words), appended in the
/// report's own transaction: a crash cannot keep the fact and lose its event.
pub type VolumeEvents = dyn Fn(&VolumeReport) -> Vec<super::engine::NewEvent>;

pub trait VolumeStore {
    /// Place and insert a volume with its create operation, atomically.
    fn create_volume(
        &self,
        new: &NewVolume,
        place: &VolumePlacer<'_>,
        op: &Operation,
        keyed: Option<&VolumeKeyed>,
        now: Millis,
    ) -> Result<VolumeRow>;
    /// Every volume, deleting ones included, by name.
    fn list_volumes(&self) -> Result<Vec<VolumeRow>>;
    fn get_volume(&self, name_or_id: &str) -> Result<VolumeRow>;
    /// Every volume of a host, deleting ones included.
    fn host_volumes(&self, host: HostId) -> Result<Vec<VolumeRow>>;
    /// Apply a change (checked in the transaction); with `op`, insert it
    /// (its `want`: the size for a resize, the new `attach_gen` for an
    /// attach or detach).
    fn change_volume(
        &self,
        id: VolumeId,
        change: VolumeChange,
        op: Option<&Operation>,
        keyed: Option<&VolumeKeyed>,
        now: Millis,
    ) -> Result<VolumeRow>;
    /// Record the volume facts of a host's report (after `record_report`):
    /// its files and what its VMs hold; purge deleted volumes it removed.
    fn record_volume_report(
        &self,
        host: HostId,
        files: &[ObservedVolume],
        observed: &[ObservedInstance],
        tell: &VolumeEvents,
        now: Millis,
    ) -> Result<VolumeReport>;
}
