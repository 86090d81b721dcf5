//! Snapshots (issue 12 point 4): a volume's or an instance's root disk's
//! state at one moment, kept inside its qcow2 file as an internal snapshot
//! (docs/storage.md, "Snapshots"). Restored in place (the disk's user
//! stopped) or cloned into a new volume on the same host.

use crate::operation::Operation;
use crate::Timestamp;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The qcow2 tag of a snapshot inside its disk: its id, so a user's name
/// never reaches qemu-img or QMP.
pub fn snapshot_tag(id: Uuid) -> String {
    format!("cm-{id}")
}

/// What a snapshot was taken of.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotOf {
    Volume,
    /// An instance's root disk (instances of disk images only).
    InstanceRoot,
}

/// How consistent a snapshot is, as its host took it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Consistency {
    /// No running VM had the disk: nothing was writing.
    Offline,
    /// A running guest's cm-guest froze its file systems (`fsfreeze`)
    /// around the snapshot.
    Filesystem,
    /// A running VM had the disk and nothing froze it: like a power cut.
    Crash,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotState {
    /// Recorded; its host has not taken it yet.
    Creating,
    Ready,
    /// Its disk is being reverted to it.
    Restoring,
    /// Deleted; its host has not removed it from the disk yet.
    Deleting,
    /// Its host could not take it (`error` says why).
    Error,
}

/// A snapshot as the API shows it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub id: Uuid,
    pub name: String,
    pub state: SnapshotState,
    pub of: SnapshotOf,
    /// The volume's or the instance's name.
    pub source: String,
    pub source_id: Uuid,
    pub host: String,
    /// Once taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistency: Option<Consistency>,
    /// The disk's virtual size when it was taken (a clone gets this size).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(with = "crate::ts")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub created_at: Timestamp,
}

/// `POST /v1/snapshots`: of a volume or of an instance's root disk, one of
/// the two.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateSnapshot {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
}

/// `POST /v1/snapshots/{name}/clone`: a new volume from the snapshot, on
/// its host.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloneSnapshot {
    /// The new volume's name.
    pub volume: String,
}

/// `202` answer to a snapshot's create, restore and delete.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotAccepted {
    pub snapshot: Snapshot,
    pub operation: Operation,
}

/// `GET /v1/snapshots?volume=&instance=`: the snapshots of one disk.
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotQuery {
    /// Only the snapshots of this volume (name or id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<String>,
    /// Only the snapshots of this instance's root disk (name or id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
}
