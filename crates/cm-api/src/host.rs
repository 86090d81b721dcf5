//! Hosts: the machines that run VMs (`cloudhostd`).

use crate::agent::ObservedState;
use crate::words::ResolvedAccel;
use crate::Timestamp;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostState {
    /// Reporting, and open for new instances.
    Ready,
    /// Has not reported within the master's `host_down_after`.
    Down,
    /// Reporting, but closed for new instances (`cm host disable`).
    Disabled,
}

impl HostState {
    pub fn as_str(self) -> &'static str {
        match self {
            HostState::Ready => "ready",
            HostState::Down => "down",
            HostState::Disabled => "disabled",
        }
    }
}

/// What a host measures about itself and sends with every report.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HostFacts {
    pub memory_total_mib: u64,
    /// The kernel's MemAvailable: what is really free now.
    pub memory_available_mib: u64,
    pub vcpus: u32,
    /// Free space of the host's storage directory.
    pub disk_free_mib: u64,
    /// The acceleration `auto` resolves to on this host, after the probe.
    pub accel: ResolvedAccel,
    /// Why `auto` resolved as it did (the probe's result).
    pub accel_note: String,
    pub qemu_version: String,
    pub agent_version: String,
    /// The address other machines reach this host's port forwards at
    /// (`--advertise-addr`, else the forward bind address when it is not a
    /// wildcard): what a deployable's `ipaddress` references and balancer
    /// members resolve to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward_addr: Option<String>,
}

/// A host as the API shows it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Host {
    pub id: Uuid,
    pub name: String,
    pub state: HostState,
    /// Set by `cm host disable`; the host may still be reporting.
    pub enabled: bool,
    pub memory_total_mib: u64,
    /// Memory the master keeps for the host itself and never promises.
    pub memory_reserved_mib: u64,
    /// Total − reserved − memory of every instance placed here.
    pub memory_promised_free_mib: i64,
    /// The kernel's MemAvailable at the last report.
    pub memory_real_free_mib: u64,
    pub vcpus: u32,
    pub disk_free_mib: u64,
    /// Volumes on this host.
    #[serde(default)]
    pub volume_count: u32,
    /// Space its volumes may still grow into (size − allocated, summed):
    /// placement counts it as taken, so a new volume is refused when
    /// `disk_free_mib − volume_unallocated_mib` is smaller than it.
    #[serde(default)]
    pub volume_unallocated_mib: u64,
    pub instance_count: u32,
    pub accel: ResolvedAccel,
    pub accel_note: String,
    pub qemu_version: String,
    /// Where other machines reach its port forwards (`--advertise-addr`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward_addr: Option<String>,
    #[serde(with = "crate::ts::option")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub last_seen: Option<Timestamp>,
    #[serde(with = "crate::ts")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub registered_at: Timestamp,
}

/// `PATCH /v1/hosts/{name}`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateHost {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_reserved_mib: Option<u64>,
}

/// `DELETE /v1/hosts/{name}?force=true`: what was forgotten with the host.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostRemoved {
    pub name: String,
    pub id: Uuid,
    /// Instances placed there that the cloud no longer knows (`force`).
    #[serde(default)]
    pub forgotten_instances: Vec<String>,
}

/// `POST /v1/hosts/{name}/evacuate`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvacuateHost {
    /// Evacuate even though the host is not down: its VMs are orphaned
    /// (stopped, kept) when it next hears from the master.
    #[serde(default)]
    pub force: bool,
}

/// One instance moved by an evacuation.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evacuated {
    pub instance: String,
    pub id: Uuid,
    pub to_host: String,
    /// Its start on the new host, when it was running (or meant to be).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<crate::operation::Operation>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evacuation {
    pub host: String,
    pub instances: Vec<Evacuated>,
}

/// A VM a host keeps that is no instance of that host (docs/host.md).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Orphan {
    pub id: Uuid,
    /// The instance name it had on that host.
    pub name: String,
    pub state: ObservedState,
    pub disk_bytes: u64,
    /// `cm host orphans NAME --purge` asked for its removal.
    pub purge_requested: bool,
    /// Where the instance of that id lives now (after an evacuation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub now_on_host: Option<String>,
    #[serde(with = "crate::ts")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub first_seen: Timestamp,
    #[serde(with = "crate::ts")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub last_seen: Timestamp,
}

/// `POST /v1/hosts/{name}/orphans/purge`: remove these orphans' files
/// (all of the host's orphans when `ids` is empty).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PurgeOrphans {
    #[serde(default)]
    pub ids: Vec<Uuid>,
}
