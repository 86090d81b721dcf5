//! Volumes (issue 12, seed 002): qcow2 files on one host that outlive the
//! instances they are attached to (docs/storage.md).
//!
//! The master owns what should exist and what should be attached where; a
//! host owns what its files and its QEMUs hold. A volume's `state` is
//! derived from both, as an instance's is.

use crate::operation::Operation;
use crate::Timestamp;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Volume sizes are whole MiB.
pub const VOLUME_SIZE_UNIT: u64 = 1 << 20;
/// The smallest volume: 1 MiB.
pub const MIN_VOLUME_BYTES: u64 = VOLUME_SIZE_UNIT;
/// The largest volume: 64 TiB (qcow2's own limit is far above).
pub const MAX_VOLUME_BYTES: u64 = 64 << 40;
/// Seconds a host waits for a guest to release a hot-unplugged disk
/// (`DEVICE_DELETED`) before the detach fails, or, with `force`, before
/// it restarts the VM without the disk.
pub const DETACH_TIMEOUT_SECS: u32 = 30;

/// A volume's size as `cm` shows it (`10G`, `512M`).
pub fn human_size(bytes: u64) -> String {
    const G: u64 = 1 << 30;
    const M: u64 = 1 << 20;
    if bytes >= G && bytes.is_multiple_of(G) {
        format!("{}G", bytes / G)
    } else if bytes.is_multiple_of(M) {
        format!("{}M", bytes / M)
    } else {
        format!("{bytes}B")
    }
}

/// A size to read, not to type back: `2.4 MiB`, `512 KiB`, `17 B`.
pub fn approx_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = UNITS[0];
    for u in &UNITS[1..] {
        if v < 1024.0 {
            break;
        }
        v /= 1024.0;
        unit = u;
    }
    if v < 10.0 {
        format!("{v:.1} {unit}")
    } else {
        format!("{v:.0} {unit}")
    }
}

/// The serial number the guest sees for this volume's disk
/// (`/sys/block/vdX/serial`, `/dev/disk/by-id/virtio-SERIAL`): `cm` and
/// 18 hex digits of its id, the 20 bytes virtio-blk allows.
pub fn disk_serial(volume: Uuid) -> String {
    let hex = volume.simple().to_string();
    format!("cm{}", &hex[..18])
}

/// The QEMU block node and device id of a volume's disk in a VM (QEMU's
/// node names are at most 31 characters).
pub fn qemu_node(volume: Uuid) -> String {
    let hex = volume.simple().to_string();
    format!("vol{}", &hex[..24])
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VolumeState {
    /// Recorded; its host has not made the file yet.
    Creating,
    /// Made, attached to nothing.
    Available,
    /// To be attached; its host has not reported it attached yet.
    Attaching,
    /// Its host reports it attached to `attached_to`.
    Attached,
    /// To be detached; the guest has not released it yet.
    Detaching,
    /// To be grown to `size_bytes`; its host reports a smaller size.
    Resizing,
    /// Being copied to `moving_to` (`cm volume move`): its old host is
    /// flattening and sending the file, or its new host fetching it.
    Moving,
    /// Deleted; its host has not removed the file yet.
    Deleting,
    /// Its host could not make, grow, attach or detach it: `error` says why.
    Error,
}

impl VolumeState {
    pub fn as_str(self) -> &'static str {
        match self {
            VolumeState::Creating => "creating",
            VolumeState::Available => "available",
            VolumeState::Attaching => "attaching",
            VolumeState::Attached => "attached",
            VolumeState::Detaching => "detaching",
            VolumeState::Resizing => "resizing",
            VolumeState::Moving => "moving",
            VolumeState::Deleting => "deleting",
            VolumeState::Error => "error",
        }
    }
}

/// A volume as the API shows it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Volume {
    pub id: Uuid,
    pub name: String,
    pub state: VolumeState,
    /// The host whose disk holds it.
    pub host: String,
    /// The size asked for (the guest sees this many bytes).
    pub size_bytes: u64,
    /// Bytes its file takes on the host's disk, at the host's last report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocated_bytes: Option<u64>,
    /// The instance it is (or is to be) attached to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attached_to: Option<String>,
    /// The serial number the guest sees (`/sys/block/vdX/serial`).
    pub serial: String,
    /// The instance whose root disk it is (`cm instance create
    /// --persistent` or `--root-volume`); it is then `attached` to it too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_of: Option<String>,
    /// The image it was made from (a persistent root, or a clone, move or
    /// restore of one): what makes it bootable with `--root-volume`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// While `moving`: the host it is being copied to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moving_to: Option<String>,
    /// Why it is in `error`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(with = "crate::ts")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub created_at: Timestamp,
    #[serde(with = "crate::ts")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub updated_at: Timestamp,
}

/// `POST /v1/volumes`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateVolume {
    pub name: String,
    /// Whole MiB, from 1 MiB to 64 TiB.
    pub size_bytes: u64,
    /// Make it on this host instead of letting the scheduler choose.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

/// `POST /v1/volumes/{name}/resize`: grow it (a volume never shrinks).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResizeVolume {
    pub size_bytes: u64,
}

/// `POST /v1/volumes/{name}/attach`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttachVolume {
    /// The instance's name or id; it must be on the volume's host.
    pub instance: String,
}

/// `POST /v1/volumes/{name}/detach`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetachVolume {
    /// When the guest does not release the disk within
    /// `DETACH_TIMEOUT_SECS`, restart the VM without it instead of failing.
    #[serde(default)]
    pub force: bool,
}

/// `POST /v1/volumes/{name}/move`: copy it, offline, to another host
/// (docs/storage.md, "Moving a volume"). It must be attached to nothing and
/// hold no snapshots (internal snapshots are not copied).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoveVolume {
    pub host: String,
}

/// `202` answer to a volume's create, resize, attach, detach and delete.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VolumeAccepted {
    pub volume: Volume,
    pub operation: Operation,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn approximate_sizes_read_as_people_write_them() {
        assert_eq!(approx_size(17), "17 B");
        assert_eq!(approx_size(2_490_368), "2.4 MiB");
        assert_eq!(approx_size(512 << 10), "512 KiB");
        assert_eq!(approx_size(3 << 30), "3.0 GiB");
    }

    #[test]
    fn serials_and_nodes_fit_virtio_and_qemu() {
        let id = Uuid::new_v4();
        assert_eq!(disk_serial(id).len(), 20);
        assert!(qemu_node(id).len() <= 31);
        assert_ne!(disk_serial(id), disk_serial(Uuid::new_v4()));
    }

    #[test]
    fn sizes_read_as_users_write_them() {
        assert_eq!(human_size(10 << 30), "10G");
        assert_eq!(human_size(512 << 20), "512M");
        assert_eq!(human_size(1536 << 20), "1536M");
    }
}
