//! The protocol between `cloudhostd` and the master, under `/v1/agent/`.
//!
//! Hosts connect out; the master never connects to a host. A host
//! 1. registers once with a join token and gets a host token,
//! 2. long-polls `GET /v1/agent/desired?after=GEN` for the desired state of
//!    its instances (answered at once when it changes),
//! 3. converges its VMs to it and posts what it observes
//!    (`POST /v1/agent/report`) on every change and every report interval,
//! 4. answers requests the master queues for it (a console tail) with
//!    `POST /v1/agent/replies/{id}`.
//!
//! Desired state is level-triggered: each answer is the whole list for that
//! host, so a lost message or a restarted process is repaired by the next one.

use crate::host::HostFacts;
use crate::image::{FileRole, ImageFile, ImageKind};
use crate::instance::{Accel, ConsoleLog, PortForward};
use crate::words::{ResolvedAccel, StopReason};
use crate::Timestamp;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterHost {
    pub name: String,
    pub join_token: String,
    pub facts: HostFacts,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Registered {
    pub host_id: Uuid,
    /// The host's own bearer token; only its hash is kept on the master.
    pub host_token: String,
    /// Identifies the master's store; a host never obeys another cloud.
    pub cloud_id: Uuid,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Power {
    Running,
    Stopped,
}

/// Everything a host needs to run one instance.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DesiredInstance {
    pub id: Uuid,
    pub name: String,
    pub power: Power,
    /// Raised by every start the master asks for (user start, restart policy).
    /// A host starts a stopped VM only when this exceeds the generation of the
    /// VM's last boot, so a crashed VM stays down until the master decides.
    pub boot_gen: u64,
    /// Raised by every reboot the master asks for.
    pub reboot_gen: u64,
    /// Seconds an ACPI shutdown may take before QEMU is forced off (0 = at once).
    pub stop_timeout_secs: u32,
    pub memory_mib: u64,
    pub vcpus: u32,
    pub accel: Accel,
    pub image: ImageRef,
    pub ports: Vec<PortForward>,
    /// Minimum root disk size for disk images (0 = the image's own size).
    pub disk_gib: u64,
    /// What the guest gets at boot to find its config, if anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot: Option<BootInfo>,
    /// How the host judges this guest's heartbeats (an instance of a
    /// deployable); without it the host only relays them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthPolicy>,
    /// Volumes of this host to attach to the VM, in this order (docs/storage.md):
    /// at launch when it starts, hot-plugged when it runs. A volume attached
    /// to the VM but absent here is detached (hot-unplugged).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<DesiredAttachment>,
    /// Volumes being detached with `force`: when the guest does not release
    /// one within `volume::DETACH_TIMEOUT_SECS`, the host restarts the VM
    /// without it (a running VM only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub force_detach: Vec<Uuid>,
    /// Snapshots its root disk should hold (ids; the qcow2 tag is
    /// `snapshot::snapshot_tag(id)`); taken when missing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub root_snapshots: Vec<Uuid>,
    /// Snapshots to remove from its root disk.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub root_deleted_snapshots: Vec<Uuid>,
    /// Revert its root disk to a snapshot (the VM is stopped first by the
    /// master's own desired power; a host never reverts a disk a running
    /// QEMU holds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_revert: Option<DesiredRevert>,
    /// Boot from this volume of this host (its file `VOLUMES_DIR/ID.qcow2`)
    /// instead of an overlay on `image`: a persistent root. The host waits
    /// for the file to be made and never removes it with the VM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_volume: Option<Uuid>,
}

/// Which disk of a host: a volume's file, or an instance's root disk.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskRef {
    pub of: crate::snapshot::SnapshotOf,
    /// The volume's id, or the instance's.
    pub disk: Uuid,
    /// Not the disk but this backup of its chain (`DATA/backups/` +
    /// `backup::chain_name(of, disk)`), flattened: a restore. The chain
    /// outlives the disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<Uuid>,
}

/// Send a disk to the master (docs/storage.md, "Transfers"): the host
/// flattens it (`qemu-img convert -O qcow2`: no backing file, no internal
/// snapshots) into a file of its own, then `PUT /v1/agent/transfers/{id}`
/// with the file's sha256 in `x-cm-sha256`. The master asks only for disks
/// no running VM holds; a host refuses (reports an error) otherwise. Done
/// when the PUT is answered 200; the master then drops it from the list.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredExport {
    /// The transfer's id.
    pub id: Uuid,
    pub disk: DiskRef,
}

/// A transfer the host could not make or send (the master fails its
/// operation with `error`). Success is the answered PUT, not a report.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedExport {
    pub id: Uuid,
    pub error: String,
}

/// The backups a disk's chain should hold on this host (docs/storage.md,
/// "Backups"). The host makes, oldest first, each listed backup its chain
/// lacks and that it has not reported failed (one at a time per chain; a
/// disk a running VM holds is backed up online through its QEMU, frozen
/// by cm-guest when it runs there), and removes the files of `deleted`
/// (oldest first: the next file is rebased so the chain stays whole).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredChain {
    /// The disk (`backup` is None): its chain is
    /// `backup::chain_name(of, disk)`. The disk may be gone (a chain
    /// outlives it); then nothing new is made.
    pub disk: DiskRef,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backups: Vec<Uuid>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deleted: Vec<Uuid>,
    /// The listed `backups` the master has seen made: one the chain lacks
    /// is never made again (it would hold the disk as it is now, not as it
    /// was); it is fetched back from the `mirror` when there is one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub made: Vec<Uuid>,
    /// An `ssh://` target (backup_target.rs) the chain is mirrored to
    /// after each change, and fetched back from when the host lacks a
    /// listed backup. `None`: the chain is kept on this host only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<String>,
}

/// A backup a host's chain holds, or could not make.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedBackup {
    pub id: Uuid,
    /// The chain's disk (`backup` None).
    pub disk: DiskRef,
    /// Absent with `error`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<crate::backup::BackupKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistency: Option<crate::snapshot::Consistency>,
    #[serde(default)]
    pub size_bytes: u64,
    #[serde(default)]
    pub file_bytes: u64,
    #[serde(default)]
    pub took_ms: u64,
    /// Why it could not be made (not tried again while the master lists it;
    /// the master fails its operation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// With a `mirror`: whether the copy there holds this backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirrored: Option<bool>,
    /// Why the chain's last mirroring failed (tried again later).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror_error: Option<String>,
}

/// Make a volume's file from a transfer the master holds: `GET
/// /v1/agent/transfers/{id}`, checked against `size` and `sha256`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskImport {
    pub transfer: Uuid,
    pub size: u64,
    pub sha256: String,
}

/// Revert a disk to one of its snapshots, once: a host applies it when
/// `gen` is above the last generation it applied for that disk (kept on
/// its disk, so a restarted agent never reverts twice).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredRevert {
    pub snapshot: Uuid,
    pub gen: u64,
}

/// Where a clone's file comes from: a snapshot of a disk of the same host.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloneSource {
    pub of: crate::snapshot::SnapshotOf,
    /// The volume's id, or the instance's (its root disk).
    pub disk: Uuid,
    pub snapshot: Uuid,
}

/// A snapshot a disk holds, as its host took it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedSnapshot {
    pub id: Uuid,
    /// Absent with `error`: it could not be taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistency: Option<crate::snapshot::Consistency>,
    /// The disk's virtual size when it was taken (0 with `error`).
    #[serde(default)]
    pub size_bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A volume to attach to a VM.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredAttachment {
    pub volume: Uuid,
    pub name: String,
}

/// A volume that lives on a host: its file should exist with this size.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DesiredVolume {
    pub id: Uuid,
    pub name: String,
    /// Made with this size; grown to it (`qemu-img resize`, or QMP
    /// `block_resize` while a running VM has it attached). Never shrunk.
    pub size_bytes: u64,
    /// Snapshots it should hold; taken when missing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub snapshots: Vec<Uuid>,
    /// Snapshots to remove from it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deleted_snapshots: Vec<Uuid>,
    /// Revert it to a snapshot (never while a running QEMU holds it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revert: Option<DesiredRevert>,
    /// Make its file from this snapshot instead of empty (a clone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clone_from: Option<CloneSource>,
    /// Make its file as a qcow2 overlay on this image (fetched into the
    /// host's image cache), grown to `size_bytes`: a persistent root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageRef>,
    /// Make its file from a transfer (a volume moved here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub import: Option<DiskImport>,
}

/// What a host's file of a volume is.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedVolume {
    pub id: Uuid,
    /// Its virtual size (what a guest sees), from `qemu-img info`.
    pub size_bytes: u64,
    /// Bytes its file takes on the host's disk.
    pub allocated_bytes: u64,
    /// The host's last failure to make or grow it, cleared when it succeeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The snapshots it holds (and those that could not be taken).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub snapshots: Vec<ObservedSnapshot>,
    /// The last `DesiredRevert::gen` applied to it (0: none).
    #[serde(default)]
    pub reverted_gen: u64,
    /// Why the last revert asked for failed (its gen is then not applied).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revert_error: Option<String>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttachmentState {
    /// The VM has the disk (in its command line, or hot-plugged and seen by QEMU).
    Attached,
    /// `device_del` sent; waiting for the guest to release it.
    Detaching,
}

/// A volume a VM has, as its host sees it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedAttachment {
    pub volume: Uuid,
    pub state: AttachmentState,
    /// The host's last failure to attach or detach it (a guest that did not
    /// release the disk in time), cleared when it succeeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A deployable's heartbeat policy for one of its instances. The host
/// classifies the age of the last beat (`GuestLiveness`) and reports at
/// once when the class changes.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthPolicy {
    /// Beats are expected this often: `suspect` after one missed interval.
    pub heartbeat_interval_ms: u64,
    /// `silent` after this long without a beat.
    pub heartbeat_timeout_ms: u64,
    /// Before the first beat of a boot, `silent` only after this long.
    pub boot_grace_ms: u64,
    /// The services the deployable runs in this guest (a simulated host
    /// reports these as running; a real guest reports its own).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<String>,
}

/// The parts of a boot string the master knows; the host adds the address
/// its guests reach the master at (docs/boot-protocol.md). The host hands
/// all of it to QEMU in 0600 files, never on a command line.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootInfo {
    /// A record's uuid, or `@DOMAIN/INSTANCE` for a dynamic guest.
    pub who: String,
    pub secret: String,
    /// The NoCloud credential of this boot, when the record is also served
    /// as cloud-init NoCloud data (SMBIOS type 1 serial): read-only, and
    /// spent once cloud-init has fetched (docs/security.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nocloud: Option<String>,
    /// The re-key credential of this boot (fw_cfg `cm.rekey=`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rekey: Option<String>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageRef {
    pub id: Uuid,
    pub name: String,
    pub kind: ImageKind,
    pub files: Vec<ImageFile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmdline: Option<String>,
}

impl ImageRef {
    pub fn file(&self, role: FileRole) -> Option<&ImageFile> {
        self.files.iter().find(|f| f.role == role)
    }
}

/// A request the master queued for a host; answered with `AgentReply`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AgentRequest {
    ConsoleTail {
        id: Uuid,
        instance: Uuid,
        max_bytes: u64,
    },
}

impl AgentRequest {
    pub fn id(&self) -> Uuid {
        match self {
            AgentRequest::ConsoleTail { id, .. } => *id,
        }
    }
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AgentReply {
    Console(ConsoleLog),
    Error { message: String },
}

/// The answer to `GET /v1/agent/desired`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DesiredState {
    pub cloud_id: Uuid,
    /// Raised whenever anything in this host's list changes.
    pub generation: u64,
    pub instances: Vec<DesiredInstance>,
    #[serde(default)]
    pub requests: Vec<AgentRequest>,
    /// How often the master expects a report, in seconds.
    pub report_interval_secs: u32,
    /// VMs whose removal the master recorded: deleted instances of this
    /// host and orphans an operator purged. A host removes a VM's files only
    /// when its id is here; a VM merely absent from `instances` is an orphan:
    /// stopped and kept (docs/host.md).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deleted: Vec<Uuid>,
    /// The volumes whose files live on this host (docs/storage.md).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<DesiredVolume>,
    /// Volumes whose deletion the master recorded: the host removes their
    /// files (a volume merely absent from `volumes` is kept).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deleted_volumes: Vec<Uuid>,
    /// Disks to send to the master (a volume move, an image from an
    /// instance, a backup to restore).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exports: Vec<DesiredExport>,
    /// The backup chains this host keeps. A chain absent here is kept as
    /// it is (never removed but by `deleted`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chains: Vec<DesiredChain>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObservedState {
    /// Fetching the image or making disks.
    Preparing,
    /// QEMU launched, not yet confirmed running.
    Starting,
    Running,
    /// ACPI shutdown sent, waiting for the guest.
    Stopping,
    Stopped,
    /// Could not be prepared or launched; `reason` says why.
    Error,
}

impl ObservedState {
    pub fn as_str(self) -> &'static str {
        match self {
            ObservedState::Preparing => "preparing",
            ObservedState::Starting => "starting",
            ObservedState::Running => "running",
            ObservedState::Stopping => "stopping",
            ObservedState::Stopped => "stopped",
            ObservedState::Error => "error",
        }
    }

    pub fn parse(s: &str) -> Option<ObservedState> {
        Some(match s {
            "preparing" => ObservedState::Preparing,
            "starting" => ObservedState::Starting,
            "running" => ObservedState::Running,
            "stopping" => ObservedState::Stopping,
            "stopped" => ObservedState::Stopped,
            "error" => ObservedState::Error,
            _ => return None,
        })
    }
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObservedInstance {
    pub id: Uuid,
    pub state: ObservedState,
    /// Why it is not running (`crashed`, `stopped`, ...), or the error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<StopReason>,
    /// The `boot_gen` of the VM's current or last boot.
    pub boot_gen: u64,
    /// The last `reboot_gen` applied.
    pub reboot_gen: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// `kvm` or `tcg`, what QEMU runs with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accel: Option<ResolvedAccel>,
    /// When `state` last changed.
    #[serde(with = "crate::ts")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub since: Timestamp,
    /// The guest agent's last heartbeat, relayed from the virtio-serial port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest: Option<GuestBeat>,
    /// The host's judgement of the heartbeats' age, for an instance with a
    /// `health` policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness: Option<crate::words::GuestLiveness>,
    /// The volumes the VM has, or is releasing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<ObservedAttachment>,
    /// The snapshots its root disk holds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub root_snapshots: Vec<ObservedSnapshot>,
    /// The last `root_revert` gen applied (0: none).
    #[serde(default)]
    pub root_reverted_gen: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_revert_error: Option<String>,
}

/// A guest's last heartbeat as its host saw it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GuestBeat {
    pub beat: crate::boot::Heartbeat,
    /// Milliseconds since the host received it (the host's clock).
    pub age_ms: u64,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostReport {
    pub facts: HostFacts,
    /// The desired-state generation the host has applied; the master purges a
    /// deleted instance only once its host has applied the deletion.
    pub generation: u64,
    /// Every VM the host has for an instance of its desired state, running or not.
    pub instances: Vec<ObservedInstance>,
    /// VMs the host has that are not in its desired state: stopped, kept.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub orphans: Vec<OrphanVm>,
    /// Every volume file the host has (desired or not yet deleted).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<ObservedVolume>,
    /// Exports of the desired state that failed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exports: Vec<ObservedExport>,
    /// Every backup of the chains of `DesiredState.chains` (made, or
    /// failed), and the files of chains no longer listed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backups: Vec<ObservedBackup>,
}

/// A VM a host keeps although the master's desired state does not name it
/// (a master restored from an old backup, an evacuated or re-joined host).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrphanVm {
    pub id: Uuid,
    /// The instance name it last had.
    pub name: String,
    pub state: ObservedState,
    /// Bytes its directory holds on the host's disk (disk overlay, logs).
    pub disk_bytes: u64,
}
