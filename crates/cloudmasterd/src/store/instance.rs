//! An instance as stored, split the way its lifecycles split: what the user
//! asked for (`spec`, fixed at create), what the master wants now
//! (`desired`, changed by users and the restart policy), what its host
//! reports (`observed`), the restart policy's bookkeeping (`restart`), the
//! guest agent's heartbeats (`guest`) and its config record's state.

use super::{HostId, ImageId, InstanceId, Millis};
use cm_api::agent::{ObservedState, Power};
use cm_api::instance::{Accel, PortForward, RestartPolicy};
use cm_api::words::{ResolvedAccel, StopReason};

#[derive(Debug, Clone, PartialEq)]
pub struct InstanceRow {
    pub id: InstanceId,
    pub name: String,
    /// Where it is placed (changed only by an evacuation).
    pub host_id: HostId,
    pub host_name: String,
    pub spec: InstanceSpec,
    pub desired: Desired,
    pub observed: Observed,
    pub restart: RestartState,
    pub guest: GuestState,
    /// Its config record's status and reason, when it has one.
    pub config: Option<ConfigState>,
    /// The names of the volumes it is to hold, in order.
    pub volumes: Vec<String>,
    /// The volume it boots from (a persistent root), by name.
    pub root_volume: Option<String>,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// What the user asked for at create; never changes afterwards.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceSpec {
    pub image_id: ImageId,
    pub image_name: String,
    pub flavor: Option<String>,
    pub memory_mib: u64,
    pub vcpus: u32,
    pub disk_gib: u64,
    pub ports: Vec<PortForward>,
    pub restart_policy: RestartPolicy,
    pub accel: Accel,
    pub stop_timeout_secs: u32,
    pub dynamic_domain: Option<String>,
    /// The deployable and slot that own it (None: a user's own instance).
    pub owner: Option<Owner>,
    /// Its heartbeat policy (an owned instance's, from its deployable).
    pub health: Option<cm_api::agent::HealthPolicy>,
}

/// The deployable slot an instance serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub deployable: cm_api::ids::DeployableId,
    /// The slot's name, `{assembly}-{index}`.
    pub slot: String,
}

/// What the master wants of it now; the host converges to it.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    pub power: Power,
    /// Raised by every start: a boot the host has not done yet.
    pub boot_gen: u64,
    /// Raised by every reboot.
    pub reboot_gen: u64,
    /// The timeout of the stop asked for now, if any.
    pub stop_timeout_now: Option<u32>,
    pub deleted: bool,
    /// The host generation its deletion was asked at.
    pub deleted_gen: Option<u64>,
}

/// What its host last reported.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Observed {
    pub state: Option<ObservedState>,
    pub reason: Option<StopReason>,
    pub boot_gen: u64,
    pub reboot_gen: u64,
    pub pid: Option<u32>,
    pub accel: Option<ResolvedAccel>,
    pub since: Option<Millis>,
}

/// The restart policy's bookkeeping.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RestartState {
    pub running_since: Option<Millis>,
    pub count: u32,
    pub backoff_step: u32,
    pub next_at: Option<Millis>,
}

/// The guest agent's last heartbeat, relayed by the host.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GuestState {
    pub seq: Option<u64>,
    pub seen_at: Option<Millis>,
    pub services: Vec<cm_api::boot::ServiceState>,
    /// The host's judgement of the beats' age (instances with `health`).
    pub liveness: Option<cm_api::words::GuestLiveness>,
}

/// Its config record's status and reason.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigState {
    pub status: String,
    pub reason: Option<String>,
}
