//! Snapshots (issue 12 point 4, docs/storage.md "Snapshots") as stored:
//! the intent the master owns (exists, of which disk, deleted, a disk's
//! revert generation, a clone's source) and the facts its host reported
//! (taken with which consistency, the disk's size then, or an error).

use super::volume::{NewVolume, VolumePlacer, VolumeRow};
use super::{HostId, IdempotencyRecord, Millis, Operation, Result};
use cm_api::agent::{CloneSource, DesiredRevert, ObservedInstance, ObservedVolume};
use cm_api::snapshot::{Consistency, SnapshotOf};
use std::collections::HashMap;
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotRow {
    pub id: Uuid,
    pub name: String,
    pub of: SnapshotOf,
    /// The volume's id, or the instance's (its root disk).
    pub disk_id: Uuid,
    /// The volume's or the instance's name.
    pub source_name: String,
    pub host_id: HostId,
    pub host_name: String,
    pub deleted: bool,
    pub deleted_gen: Option<u64>,
    /// The host generation it was recorded at.
    pub intent_gen: u64,
    pub facts: SnapshotFacts,
    /// The disk's revert under way to it (`gen` not yet applied).
    pub restoring: bool,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// What its host last reported.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SnapshotFacts {
    pub consistency: Option<Consistency>,
    pub size_bytes: Option<u64>,
    pub error: Option<String>,
}

/// A disk's revert, as recorded and as its host applied it.
#[derive(Debug, Clone, PartialEq)]
pub struct RevertRow {
    pub disk_id: Uuid,
    pub of: SnapshotOf,
    pub host_id: HostId,
    pub snapshot: Uuid,
    pub gen: u64,
    pub intent_gen: u64,
    /// The last gen its host applied.
    pub applied: u64,
    pub error: Option<String>,
}

/// What a disk of a host is to hold.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DiskIntent {
    pub snapshots: Vec<Uuid>,
    pub deleted: Vec<Uuid>,
    pub revert: Option<DesiredRevert>,
}

/// The snapshot part of a host's desired state, by disk id.
#[derive(Debug, Clone, Default)]
pub struct HostSnapshots {
    pub disks: HashMap<Uuid, DiskIntent>,
    /// Volumes made from a snapshot.
    pub clones: HashMap<Uuid, CloneSource>,
}

/// A new snapshot, validated.
#[derive(Debug, Clone)]
pub struct NewSnapshot {
    pub id: Uuid,
    pub name: String,
    pub of: SnapshotOf,
    pub disk_id: Uuid,
}

/// Renders a keyed request's answer from the snapshot its change wrote.
pub type RenderSnapshot = dyn Fn(&SnapshotRow) -> serde_json::Result<Vec<u8>> + Send + Sync;

pub struct SnapshotKeyed {
    pub record: IdempotencyRecord,
    pub render: Box<RenderSnapshot>,
}

/// One snapshot whose facts changed with a report.
#[derive(Debug, Clone)]
pub struct SnapshotChanged {
    pub before: SnapshotRow,
    pub after: SnapshotRow,
}

#[derive(Debug, Clone, Default)]
pub struct SnapshotReport {
    pub changed: Vec<SnapshotChanged>,
    /// Deleted snapshots their host no longer holds: their records are gone.
    pub purged: Vec<SnapshotRow>,
    /// Reverts newly applied (or newly failed).
    pub reverts: Vec<Reverted>,
    /// The events the report made, committed with it.
    pub events: Vec<cm_api::event::Event>,
}

/// A revert newly applied or newly failed, with its snapshot's name.
#[derive(Debug, Clone)]
pub struct Reverted {
    pub before: RevertRow,
    pub after: RevertRow,
    pub name: String,
}

/// What a report's changes tell, appended in the report's own transaction.
pub type SnapshotEvents = dyn Fn(&SnapshotReport) -> Vec<super::engine::NewEvent>;

pub trait SnapshotStore {
    /// Record a snapshot of a disk with its create operation (refused when
    /// the name is taken or the disk is being deleted).
    fn create_snapshot(
        &self,
        new: &NewSnapshot,
        op: &Operation,
        keyed: Option<&SnapshotKeyed>,
        now: Millis,
    ) -> Result<SnapshotRow>;
    /// Every snapshot, deleting ones included, by name.
    fn list_snapshots(&self) -> Result<Vec<SnapshotRow>>;
    fn get_snapshot(&self, name_or_id: &str) -> Result<SnapshotRow>;
    /// Revert its disk to it (refused unless taken and the disk's user is
    /// stopped); the operation's `want` is the new revert gen.
    fn restore_snapshot(
        &self,
        id: Uuid,
        op: &Operation,
        keyed: Option<&SnapshotKeyed>,
        now: Millis,
    ) -> Result<SnapshotRow>;
    /// Record its deletion (refused while a clone of it is being made).
    fn delete_snapshot(
        &self,
        id: Uuid,
        op: &Operation,
        keyed: Option<&SnapshotKeyed>,
        now: Millis,
    ) -> Result<SnapshotRow>;
    /// A new volume made from it on its host (`place` sees the spaces).
    fn clone_snapshot(
        &self,
        id: Uuid,
        new: &NewVolume,
        place: &VolumePlacer<'_>,
        op: &Operation,
        keyed: Option<&super::volume::VolumeKeyed>,
        now: Millis,
    ) -> Result<VolumeRow>;
    fn disk_revert(&self, disk: Uuid) -> Result<Option<RevertRow>>;
    /// What a host's disks are to hold.
    fn host_snapshots(&self, host: HostId) -> Result<HostSnapshots>;
    /// Record the snapshot facts of a host's report (after `record_report`).
    fn record_snapshot_report(
        &self,
        host: HostId,
        files: &[ObservedVolume],
        observed: &[ObservedInstance],
        tell: &SnapshotEvents,
        now: Millis,
    ) -> Result<SnapshotReport>;
}
