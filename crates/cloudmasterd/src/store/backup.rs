//! Backups (issue 12 point 6, docs/storage.md "Backups") as stored: the
//! intent the master owns (exists, of which disk, on which host's chain,
//! made by which schedule, deleted) and the facts the chain's host reported
//! (full or incremental and why, consistency, sizes, time, or an error);
//! and the schedules that make them.

use super::{HostId, IdempotencyRecord, Millis, Operation, Result};
use cm_api::agent::{DesiredChain, ObservedBackup};
use cm_api::backup::BackupKind;
use cm_api::snapshot::{Consistency, SnapshotOf};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq)]
pub struct BackupRow {
    pub id: Uuid,
    pub name: String,
    pub of: SnapshotOf,
    /// The volume's id, or the instance's (its root disk).
    pub disk_id: Uuid,
    /// The volume's or the instance's name when it was made.
    pub source_name: String,
    pub host_id: HostId,
    pub host_name: String,
    pub target: String,
    pub schedule_id: Option<Uuid>,
    pub schedule_name: Option<String>,
    pub deleted: bool,
    pub deleted_gen: Option<u64>,
    /// The host generation it was recorded at.
    pub intent_gen: u64,
    pub facts: BackupFacts,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// What its host last reported.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BackupFacts {
    pub kind: Option<BackupKind>,
    pub full_reason: Option<String>,
    pub consistency: Option<Consistency>,
    pub size_bytes: Option<u64>,
    pub file_bytes: Option<u64>,
    pub took_ms: Option<u64>,
    pub error: Option<String>,
    /// With an ssh target, once made: whether the copy there holds it.
    pub mirrored: Option<bool>,
    /// Why the chain's last mirroring failed (its host tries again).
    pub mirror_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleRow {
    pub id: Uuid,
    pub name: String,
    pub of: SnapshotOf,
    pub disk_id: Uuid,
    pub source_name: String,
    pub target: String,
    pub every_secs: u64,
    pub keep: u32,
    pub next_at: Millis,
    pub created_at: Millis,
}

/// A new backup, validated; `disk_id` is checked (and its host found) in
/// the transaction that records it.
#[derive(Debug, Clone)]
pub struct NewBackup {
    pub id: Uuid,
    pub name: String,
    pub of: SnapshotOf,
    pub disk_id: Uuid,
    /// The canonical target asked for (`cm_api::backup_target`), or
    /// `None`: the chain's own (its live backups' ssh target), else `host`;
    /// resolved in the transaction that records it.
    pub target: Option<String>,
}

/// A new schedule (of the same disk as its first backup).
#[derive(Debug, Clone)]
pub struct NewSchedule {
    pub id: Uuid,
    pub name: String,
    pub every_secs: u64,
    pub keep: u32,
}

/// Renders a keyed request's answer from what its change wrote.
pub type RenderBackup =
    dyn Fn(&BackupRow, Option<&ScheduleRow>) -> serde_json::Result<Vec<u8>> + Send + Sync;

pub struct BackupKeyed {
    pub record: IdempotencyRecord,
    pub render: Box<RenderBackup>,
}

/// One backup whose facts changed with a report.
#[derive(Debug, Clone)]
pub struct BackupChanged {
    pub before: BackupRow,
    pub after: BackupRow,
}

#[derive(Debug, Clone, Default)]
pub struct BackupReport {
    pub changed: Vec<BackupChanged>,
    /// Deleted backups their host no longer holds: their records are gone.
    pub purged: Vec<BackupRow>,
    /// The events the report made, committed with it.
    pub events: Vec<cm_api::event::Event>,
}

/// What a report's changes tell, appended in the report's own transaction.
pub type BackupEvents = dyn Fn(&BackupReport) -> Vec<super::engine::NewEvent>;

/// What a schedule tick did, with the events it made (committed with it).
#[derive(Debug, Clone, Default)]
pub struct ScheduleTick {
    /// Backups made by schedules, with their operations.
    pub made: Vec<BackupRow>,
    /// Backups past their schedule's `keep`, now deleting.
    pub expired: Vec<BackupRow>,
    /// Schedules whose source is gone, removed.
    pub ended: Vec<ScheduleRow>,
    pub events: Vec<cm_api::event::Event>,
}

/// Makes the operation of a backup a schedule makes or expires.
pub type OpFor<'a> = dyn Fn(Uuid, &str, cm_api::words::OperationKind) -> Operation + 'a;
/// The name of a schedule's next backup (`SOURCE-YYYYMMDD-HHMMSS`).
pub type NameFor<'a> = dyn Fn(&ScheduleRow) -> String + 'a;
/// What a tick's changes tell.
pub type TickEvents = dyn Fn(&ScheduleTick) -> Vec<super::engine::NewEvent>;

pub trait BackupStore {
    /// Record a backup of a disk with its create operation (and a schedule
    /// with it). Refused when a name is taken, the disk is being deleted,
    /// the chain's previous backup is still being made, or the target is
    /// an ssh one while the chain is kept at another (one chain, one place).
    fn create_backup(
        &self,
        new: &NewBackup,
        schedule: Option<&NewSchedule>,
        op: &Operation,
        keyed: Option<&BackupKeyed>,
        now: Millis,
    ) -> Result<(BackupRow, Option<ScheduleRow>)>;
    /// Every backup, deleting ones included, oldest first.
    fn list_backups(&self) -> Result<Vec<BackupRow>>;
    fn get_backup(&self, name_or_id: &str) -> Result<BackupRow>;
    /// Record its deletion (refused while it is being made).
    fn delete_backup(
        &self,
        id: Uuid,
        op: &Operation,
        keyed: Option<&BackupKeyed>,
        now: Millis,
    ) -> Result<BackupRow>;
    /// A new volume from a made backup (`place` sees the spaces), with
    /// the transfer its chain's host sends and the import on its host.
    #[allow(clippy::too_many_arguments)]
    fn restore_backup(
        &self,
        id: Uuid,
        new: &super::volume::NewVolume,
        place: &super::volume::VolumePlacer<'_>,
        transfer: Uuid,
        op: &Operation,
        keyed: Option<&super::volume::VolumeKeyed>,
        now: Millis,
    ) -> Result<super::volume::VolumeRow>;
    fn list_backup_schedules(&self) -> Result<Vec<ScheduleRow>>;
    /// Remove a schedule (its backups stay).
    fn delete_backup_schedule(&self, name_or_id: &str) -> Result<ScheduleRow>;
    /// The chains a host keeps.
    fn host_chains(&self, host: HostId) -> Result<Vec<DesiredChain>>;
    /// Record the backup facts of a host's report.
    fn record_backup_report(
        &self,
        host: HostId,
        seen: &[ObservedBackup],
        tell: &BackupEvents,
        now: Millis,
    ) -> Result<BackupReport>;
    /// Make each due schedule's next backup, expire backups past `keep`,
    /// end schedules whose source is gone: one transaction.
    fn tick_backup_schedules(
        &self,
        now: Millis,
        name: &NameFor<'_>,
        op: &OpFor<'_>,
        tell: &TickEvents,
    ) -> Result<ScheduleTick>;
}
