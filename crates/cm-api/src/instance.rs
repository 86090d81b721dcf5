//! Instances: virtual machines placed on hosts.

use crate::Timestamp;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

/// What the user sees. Derived on the master from the desired state it owns
/// and the observed state the host reports (DESIGN.md §2).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InstanceState {
    /// Accepted; its host has not taken it up yet.
    Pending,
    /// Its host is fetching the image, making disks or launching QEMU.
    Starting,
    Running,
    /// An ACPI shutdown was sent; QEMU is forced off after the timeout.
    Stopping,
    Stopped,
    /// It could not be started; `reason` says why.
    Error,
    /// Deleted; the record goes once its host has removed every file.
    Deleting,
    /// Its host is down: the last state reported is in `reason`.
    Unknown,
}

impl InstanceState {
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceState::Pending => "pending",
            InstanceState::Starting => "starting",
            InstanceState::Running => "running",
            InstanceState::Stopping => "stopping",
            InstanceState::Stopped => "stopped",
            InstanceState::Error => "error",
            InstanceState::Deleting => "deleting",
            InstanceState::Unknown => "unknown",
        }
    }
}

impl fmt::Display for InstanceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// When the master starts an instance again after it stopped by itself.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Never.
    No,
    /// When QEMU died or could not start (not after a clean guest poweroff).
    #[default]
    OnFailure,
    /// Whenever it stops without being asked to.
    Always,
}

impl RestartPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            RestartPolicy::No => "no",
            RestartPolicy::OnFailure => "on-failure",
            RestartPolicy::Always => "always",
        }
    }
}

impl FromStr for RestartPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "no" => Ok(RestartPolicy::No),
            "on-failure" => Ok(RestartPolicy::OnFailure),
            "always" => Ok(RestartPolicy::Always),
            _ => Err(format!(
                "restart policy must be no, on-failure or always, got '{s}'"
            )),
        }
    }
}

/// The hardware acceleration an instance asks for.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Accel {
    Kvm,
    Tcg,
    /// KVM where the host's probe boot proved it works, TCG otherwise.
    #[default]
    Auto,
}

impl Accel {
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
            Accel::Auto => "auto",
        }
    }
}

impl FromStr for Accel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "kvm" => Ok(Accel::Kvm),
            "tcg" => Ok(Accel::Tcg),
            "auto" => Ok(Accel::Auto),
            _ => Err(format!("accel must be kvm, tcg or auto, got '{s}'")),
        }
    }
}

/// A TCP port forward of QEMU user-mode networking: host port → guest port.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PortForward {
    pub guest: u16,
    pub host: u16,
}

impl FromStr for PortForward {
    type Err = String;
    /// `GUEST:HOST`, as `cm instance create --port 80:8080`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (g, h) = s
            .split_once(':')
            .ok_or_else(|| format!("port forward must be GUEST:HOST, got '{s}'"))?;
        let parse = |p: &str, what: &str| -> Result<u16, String> {
            match p.parse::<u16>() {
                Ok(0) | Err(_) => Err(format!("{what} port must be 1-65535, got '{p}'")),
                Ok(v) => Ok(v),
            }
        };
        Ok(PortForward {
            guest: parse(g, "guest")?,
            host: parse(h, "host")?,
        })
    }
}

impl fmt::Display for PortForward {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.guest, self.host)
    }
}

/// `POST /v1/instances`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateInstance {
    pub name: String,
    /// The image to boot; required, except with `root_volume` (then empty:
    /// the instance boots the volume, made from its own image).
    #[serde(default)]
    pub image: String,
    /// A flavor name; `memory_mib`/`vcpus` override its values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flavor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vcpus: Option<u32>,
    /// Place on this host instead of letting the scheduler choose.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortForward>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_policy: Option<RestartPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accel: Option<Accel>,
    /// Seconds an ACPI shutdown may take before QEMU is forced off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_timeout_secs: Option<u32>,
    /// A boot-time config (text) registered under the instance's uuid; the
    /// guest gets `uuid:IP:port:secret` at boot (docs/boot-protocol.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<String>,
    /// The same as `config`, for any bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_base64: Option<String>,
    /// Boot as a dynamic guest of this domain: the guest gets only the
    /// rendezvous address and the domain's secret, and asks `assign_dynamic`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dynamic_domain: Option<String>,
    /// Judge the guest's heartbeats by this policy: its host reports the
    /// guest `up`, `suspect` or `silent` (docs/host.md, "Heartbeat
    /// watchdog"). A deployable's instances get their deployable's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat: Option<HeartbeatPolicy>,
    /// Volumes (names or ids) to attach at boot, in this order. The
    /// instance is placed on their host; they must all be on one host
    /// and available (docs/storage.md).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<String>,
    /// Keep the root disk as a volume named `NAME-root`, made from the image
    /// on the instance's host: it survives the instance's deletion and can
    /// boot another (`root_volume`). Default: an ephemeral root, a qcow2
    /// overlay deleted with the instance (docs/storage.md, "Persistent roots").
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub persistent: bool,
    /// Boot from this volume (name or id; available, made from an image, or
    /// a clone, move or restore of one). The instance is placed on its host
    /// and its image is the volume's; `image` must then be empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_volume: Option<String>,
}

/// How the host judges an instance's guest heartbeats. The guest beats at
/// the interval its config sets (`[agent] heartbeat_ms`, docs/guest.md).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatPolicy {
    /// Beats are expected this often (at least 200ms): `suspect` once one
    /// is missed.
    pub interval: crate::time::Dur,
    /// `silent` after this long without a beat (more than the interval).
    pub timeout: crate::time::Dur,
    /// Before the first beat of a boot, `silent` only after this long
    /// (default 120s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_grace: Option<crate::time::Dur>,
}

/// The boot grace when a policy gives none.
pub const DEFAULT_BOOT_GRACE_MS: u64 = 120_000;

impl HeartbeatPolicy {
    /// The policy as hosts get it, once its values are checked.
    pub fn to_health(&self, field: &str) -> Result<crate::agent::HealthPolicy, crate::ApiError> {
        const HOUR_MS: u64 = 3_600_000;
        let (interval, timeout) = (self.interval.as_millis(), self.timeout.as_millis());
        let grace = self
            .boot_grace
            .map_or(DEFAULT_BOOT_GRACE_MS, |g| g.as_millis());
        let bad = |f: &str, m: &str| Err(crate::ApiError::invalid(&format!("{field}.{f}"), m));
        if !(200..=HOUR_MS).contains(&interval) {
            return bad("interval", "the heartbeat interval must be 200ms to 1h");
        }
        if timeout <= interval || timeout > HOUR_MS {
            return bad(
                "timeout",
                "the heartbeat timeout must be longer than the interval, and at most 1h",
            );
        }
        if grace > HOUR_MS {
            return bad("boot_grace", "the boot grace must be at most 1h");
        }
        Ok(crate::agent::HealthPolicy {
            heartbeat_interval_ms: interval,
            heartbeat_timeout_ms: timeout,
            boot_grace_ms: grace,
            services: vec![],
        })
    }

    /// The policy a host's `HealthPolicy` came from (to show it).
    pub fn from_health(h: &crate::agent::HealthPolicy) -> HeartbeatPolicy {
        HeartbeatPolicy {
            interval: crate::time::Dur::from_millis(h.heartbeat_interval_ms),
            timeout: crate::time::Dur::from_millis(h.heartbeat_timeout_ms),
            boot_grace: Some(crate::time::Dur::from_millis(h.boot_grace_ms)),
        }
    }
}

/// `POST /v1/instances/{name}/stop`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StopInstance {
    /// Skip the ACPI shutdown and power off at once.
    #[serde(default)]
    pub force: bool,
    /// Override the instance's stop timeout for this stop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u32>,
}

/// An instance as the API shows it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    pub id: Uuid,
    pub name: String,
    pub state: InstanceState,
    /// Why it is stopped, in error, or unknown (`crashed`, `guest poweroff`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub image: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flavor: Option<String>,
    pub memory_mib: u64,
    pub vcpus: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    pub ports: Vec<PortForward>,
    pub restart_policy: RestartPolicy,
    /// What was asked for.
    pub accel: Accel,
    /// What the host actually uses (`kvm` or `tcg`), once running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accel_used: Option<crate::words::ResolvedAccel>,
    pub stop_timeout_secs: u32,
    /// Starts done by the restart policy.
    pub restart_count: u32,
    #[serde(
        default,
        with = "crate::ts::option",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub next_restart_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// The guest agent's heartbeats (`up`, `silent for Ns`, `no agent`) and
    /// the states of its services.
    pub guest: crate::boot::GuestStatus,
    /// The heartbeat policy its host judges the guest by, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat: Option<HeartbeatPolicy>,
    /// The status of its boot-time config (`registered`, `configured`,
    /// `failed`, ...), when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_status: Option<crate::words::ConfigStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_reason: Option<String>,
    /// The dynamic domain it boots in, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dynamic_domain: Option<String>,
    /// The volumes attached to it (or to be), by name, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<String>,
    /// The volume its root disk is (persistent root); absent: the root is
    /// ephemeral, an overlay on `image` deleted with the instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_volume: Option<String>,
    #[serde(with = "crate::ts")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub created_at: Timestamp,
    #[serde(with = "crate::ts")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub updated_at: Timestamp,
}

/// `202` answer to `POST /v1/instances`: the new record and the operation
/// that completes when it runs.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceAccepted {
    pub instance: Instance,
    pub operation: crate::operation::Operation,
}

/// `GET /v1/instances/{name}/console`: the tail of the serial log.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConsoleLog {
    /// The log's text (lossy UTF-8).
    pub text: String,
    /// Total size of the log on the host, in bytes.
    pub size: u64,
    /// Whether `text` is only the end of the log.
    pub truncated: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_forwards_parse_guest_then_host() {
        let p: PortForward = "80:8080".parse().unwrap();
        assert_eq!(
            p,
            PortForward {
                guest: 80,
                host: 8080
            }
        );
        "80".parse::<PortForward>().unwrap_err();
        "0:80".parse::<PortForward>().unwrap_err();
        "80:70000".parse::<PortForward>().unwrap_err();
    }

    #[test]
    fn restart_policy_names() {
        for p in [
            RestartPolicy::No,
            RestartPolicy::OnFailure,
            RestartPolicy::Always,
        ] {
            assert_eq!(p.as_str().parse::<RestartPolicy>().unwrap(), p);
            assert_eq!(
                serde_json::to_string(&p).unwrap(),
                format!("\"{}\"", p.as_str())
            );
        }
    }
}
