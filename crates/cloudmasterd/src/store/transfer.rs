//! Transfers (docs/storage.md, "Transfers"): disks a host flattens and
//! sends to the master, and their uses: a volume moved to another host, an
//! image made from an instance's root disk.

use super::{HostId, InstanceId, Millis, Operation, Result};
use cm_api::agent::{DiskRef, ObservedExport, ObservedVolume};
use cm_api::ids::VolumeId;
use cm_api::image::Image;
use uuid::Uuid;

/// What a transfer is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    VolumeMove,
    ImageCreate,
    /// A new volume from a backup: the chain's host sends the backup.
    BackupRestore,
}

impl Purpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::VolumeMove => "volume_move",
            Purpose::ImageCreate => "image_create",
            Purpose::BackupRestore => "backup_restore",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct TransferRow {
    pub id: Uuid,
    pub purpose: Purpose,
    /// The host asked to send it.
    pub host_id: HostId,
    pub disk: DiskRef,
    /// The most bytes its file may take.
    pub max_bytes: u64,
    /// Once received: the file's size and sha256.
    pub received: Option<(u64, String)>,
    pub error: Option<String>,
    pub created_at: Millis,
}

/// A volume being copied to another host.
#[derive(Debug, Clone, PartialEq)]
pub struct MoveRow {
    pub volume_id: VolumeId,
    pub volume_name: String,
    pub size_bytes: u64,
    pub from: (HostId, String),
    pub to: (HostId, String),
    pub transfer: TransferRow,
    pub operation_id: Uuid,
    pub started_at: Millis,
}

/// An image being made from an instance's root disk.
#[derive(Debug, Clone, PartialEq)]
pub struct BuildRow {
    pub image_id: Uuid,
    pub name: String,
    pub instance_id: InstanceId,
    pub transfer: TransferRow,
    pub operation_id: Uuid,
    pub created_at: Millis,
}

/// How a move ended (its operation is finished in the same transaction).
#[derive(Debug, Clone, PartialEq)]
pub struct MoveEnded {
    pub row: MoveRow,
    /// Ok: the bytes the new host's file takes; Err: why it failed.
    pub outcome: std::result::Result<u64, String>,
    pub ended_at: Millis,
    /// `volume.moved` (or `volume.error`), committed with the end.
    pub event: cm_api::event::Event,
}

/// What a report changed about transfers.
#[derive(Debug, Clone, Default)]
pub struct TransferReport {
    pub moves: Vec<MoveEnded>,
    /// Image builds whose host could not send the disk (op failed).
    pub failed_builds: Vec<(BuildRow, String)>,
}

pub trait TransferStore {
    /// Record a move of `volume` to host `to` with its transfer and
    /// operation: refused unless the volume is available, holds no
    /// snapshots, `to` is another host with room.
    fn start_move(
        &self,
        volume: VolumeId,
        to: HostId,
        transfer: Uuid,
        op: &Operation,
        now: Millis,
    ) -> Result<MoveRow>;
    fn list_moves(&self) -> Result<Vec<MoveRow>>;
    /// Fail a move still under way (a host down too long): the volume
    /// stays where it was; None when it had ended already.
    fn fail_move(&self, volume: VolumeId, why: &str, now: Millis) -> Result<Option<MoveEnded>>;
    fn get_transfer(&self, id: Uuid) -> Result<TransferRow>;
    /// Every transfer (the master's start removes the files of no
    /// received one).
    fn list_transfers(&self) -> Result<Vec<TransferRow>>;
    /// The file of a transfer arrived: record its size and sha256 (once; a
    /// repeat changes nothing) and let the importing host know.
    fn transfer_received(
        &self,
        id: Uuid,
        size: u64,
        sha256: &str,
        now: Millis,
    ) -> Result<TransferRow>;
    /// The exports a host is to send, the moves it is to import, and the
    /// files of volumes living elsewhere it is to remove.
    fn host_transfers(&self, host: HostId) -> Result<HostTransfers>;
    /// A host's report: failed exports fail their use; a moved volume's
    /// file on its new host ends the move; leftovers it no longer has are
    /// forgotten.
    fn record_transfer_report(
        &self,
        host: HostId,
        exports: &[ObservedExport],
        files: &[ObservedVolume],
        now: Millis,
    ) -> Result<TransferReport>;
    /// Start making an image from an instance's root disk (stopped).
    fn start_image_build(
        &self,
        image_id: Uuid,
        name: &str,
        instance: InstanceId,
        transfer: Uuid,
        op: &Operation,
        now: Millis,
    ) -> Result<BuildRow>;
    fn list_builds(&self) -> Result<Vec<BuildRow>>;
    /// End an image build: with `image`, insert it and succeed the
    /// operation; else fail it with `error`. The build and its transfer
    /// are removed either way; `image.added` commits with a success.
    fn finish_image_build(
        &self,
        image_id: Uuid,
        image: std::result::Result<&Image, &str>,
        now: Millis,
    ) -> Result<Option<cm_api::event::Event>>;
}

/// What a host's desired state holds of transfers.
#[derive(Debug, Clone, Default)]
pub struct HostTransfers {
    pub exports: Vec<cm_api::agent::DesiredExport>,
    /// Moves to this host whose file the master holds.
    pub imports: Vec<MoveRow>,
    /// Volume files to remove (the old copy of a moved volume, a failed
    /// move's partial copy).
    pub leftovers: Vec<Uuid>,
}
