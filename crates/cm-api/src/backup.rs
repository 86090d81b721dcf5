//! Backups (issue 12 point 6, docs/storage.md "Backups"): copies of a
//! volume or an instance's root disk kept outside it, in a chain of qcow2
//! files (a full, then incrementals made from QEMU's dirty bitmap), that
//! outlive the disk and restore as a new volume on any host.
//!
//! Where a chain lives (`target`): `host` (the default) is the backup
//! directory of the disk's own host, `DATA/backups/CHAIN/`. The chain of a
//! disk is named for it (`chain_name`), so a chain outlives its volume and
//! a restore finds it by the backup's record alone.

use crate::operation::Operation;
use crate::snapshot::{Consistency, SnapshotOf};
use crate::Timestamp;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The directory (under the host's `DATA/backups/`) of a disk's chain.
pub fn chain_name(of: SnapshotOf, disk: Uuid) -> String {
    match of {
        SnapshotOf::Volume => format!("volume-{disk}"),
        SnapshotOf::InstanceRoot => format!("root-{disk}"),
    }
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackupState {
    /// Asked of the host, not yet reported made.
    Creating,
    Ready,
    /// Its removal is asked of the host.
    Deleting,
    /// The host could not make it (`error` says why); `cm backup delete`
    /// forgets it.
    Error,
}

/// Full (every allocated cluster of the disk) or incremental (the clusters
/// written since the chain's previous backup, by the disk's dirty bitmap).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackupKind {
    Full,
    Incremental,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Backup {
    pub id: Uuid,
    pub name: String,
    pub state: BackupState,
    pub of: SnapshotOf,
    /// The volume's or instance's name when it was taken (kept after the
    /// source is deleted).
    pub source: String,
    pub source_id: Uuid,
    /// The host whose `target` holds the chain.
    pub host: String,
    /// `host`: the backup directory of the disk's host; or
    /// `ssh://[user@]host[:port]/path` (backup_target.rs): the chain is
    /// made on the disk's host and mirrored there after each change.
    pub target: String,
    /// With an ssh target, once made: whether the copy there holds this
    /// backup (`false`: not copied yet, or the last copy failed:
    /// `mirror_error`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirrored: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror_error: Option<String>,
    /// The schedule that made it (`None`: made by hand).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// Once made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<BackupKind>,
    /// Why a backup is full (`the first backup of this chain`, `the disk
    /// has no dirty bitmap`, `the disk was resized ...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistency: Option<Consistency>,
    /// The disk's virtual size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    /// The bytes its file takes on the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_bytes: Option<u64>,
    /// How long the host took to make it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub took_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(with = "crate::ts")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub created_at: Timestamp,
}

/// `POST /v1/backups`: back up one disk now; with `every`, also keep doing
/// it on that schedule, keeping the newest `keep` (24 when not given).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBackup {
    /// Exactly one of `volume` and `instance` (its root disk).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// Default: `SOURCE-YYYYMMDD-HHMMSS` (UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `host` or `ssh://[user@]host[:port]/path` (backup_target.rs).
    /// Default: where the disk's chain is kept already, else `host`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// `30m`, `1h`, `1d`...: at least a minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every: Option<String>,
    /// With `every`: how many of the schedule's backups to keep (1..=1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep: Option<u32>,
}

/// `202` to `POST /v1/backups`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackupAccepted {
    pub backup: Backup,
    pub operation: Operation,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<BackupSchedule>,
}

/// `POST /v1/backups/{name}/restore`: a new volume `as` with the disk as
/// it was, on `host` (default: the chain's host). The operation's target is
/// the new volume.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreBackup {
    #[serde(rename = "as")]
    pub as_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

/// Backups of one disk made on a schedule, the oldest removed past `keep`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackupSchedule {
    pub id: Uuid,
    /// `SOURCE-every-EVERY` unless given.
    pub name: String,
    pub of: SnapshotOf,
    pub source: String,
    pub source_id: Uuid,
    pub target: String,
    pub every_secs: u64,
    pub keep: u32,
    #[serde(with = "crate::ts")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub next_at: Timestamp,
    #[serde(with = "crate::ts")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub created_at: Timestamp,
}

#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
}

/// `1h` → 3600. Units s, m, h, d; a whole number before them.
pub fn parse_every(s: &str) -> Option<u64> {
    let s = s.trim();
    let unit = s.chars().last()?;
    let n: u64 = s[..s.len() - unit.len_utf8()].parse().ok()?;
    let mul = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return None,
    };
    n.checked_mul(mul)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_read_as_people_write_them() {
        assert_eq!(parse_every("1h"), Some(3600));
        assert_eq!(parse_every("30m"), Some(1800));
        assert_eq!(parse_every("2d"), Some(172_800));
        assert_eq!(parse_every("h"), None);
        assert_eq!(parse_every("1w"), None);
        assert_eq!(parse_every("-1h"), None);
    }

    #[test]
    fn a_chain_is_named_for_its_disk() {
        let id = Uuid::nil();
        assert_eq!(chain_name(SnapshotOf::Volume, id), format!("volume-{id}"));
        assert_eq!(
            chain_name(SnapshotOf::InstanceRoot, id),
            format!("root-{id}")
        );
    }
}
