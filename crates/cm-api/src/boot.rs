//! Boot-time configuration (seed 003): the rendezvous cache's records, the
//! boot string, and what guests send and receive (docs/boot-protocol.md).

use crate::words::ConfigStatus;
use crate::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use uuid::Uuid;

/// A `Config` record of the seed's schema, as `/v1/configs` shows it. The
/// config body itself is only in `ConfigDetail`; secrets are never shown.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    pub uuid: Uuid,
    pub domain: String,
    /// Handed out by `assign_dynamic`, first come first served.
    pub dynamic: bool,
    /// For a dynamic record: whether a guest has taken it.
    pub assigned: bool,
    /// The instance this record was made for (`cm instance create --config`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// For a dynamic record: the instance (`--dynamic-domain`) holding it;
    /// it keeps it across reboots until it is deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assigned_to: Option<String>,
    /// The guest's address, from its last `update_cache`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub my_conf_addr: Option<String>,
    /// `registered`, `assigned`, `fetched`, `configured`, `failed`, or what
    /// the guest reported.
    pub status: ConfigStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub parameter_map: BTreeMap<String, String>,
    /// The rendezvous points (`host:port`) the guest may use.
    pub config_hosts: Vec<String>,
    /// Raised by every change of the config body.
    pub config_version: u64,
    pub config_size: u64,
    pub config_sha256: String,
    /// Whether the guest has given its trust key (on its first update).
    pub trust_key_set: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest: Option<GuestStatus>,
    #[serde(with = "crate::ts")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub created_at: Timestamp,
    /// The last update of the record, by anyone (remove_stale reads this).
    #[serde(with = "crate::ts")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub updated_at: Timestamp,
}

/// `GET /v1/configs/{uuid}`: the record and its config body.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigDetail {
    #[serde(flatten)]
    pub record: Config,
    /// The body as text, when it is UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<String>,
    /// The body, base64 (always; it may be binary).
    pub config_base64: String,
}

/// `POST /v1/configs`: the seed's `pre_register(uuid, config, domain)`.
/// Give the body as `config` (text) or `config_base64` (any bytes).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreRegister {
    /// Made up when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_base64: Option<String>,
    /// `default` when absent. A dynamic record's domain must exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default)]
    pub dynamic: bool,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub parameter_map: BTreeMap<String, String>,
}

/// The answer to `pre_register`: the only time the secret is shown.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Registered {
    pub record: Config,
    pub secret: String,
    /// The boot string for a guest that reaches the master as `config_hosts[0]`.
    pub boot_string: String,
}

/// `PUT /v1/configs/{uuid}/config`: a new config body for a record.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_base64: Option<String>,
}

/// `POST /v1/configs/remove-stale`: the seed's `remove_stale(timeout)`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoveStale {
    pub timeout_secs: u32,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Removed {
    pub removed: u32,
}

/// A domain groups records; guests of a dynamic domain prove themselves
/// with the domain's secret.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Domain {
    pub name: String,
    pub dynamic_total: u32,
    pub dynamic_free: u32,
    #[serde(with = "crate::ts")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub created_at: Timestamp,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateDomain {
    pub name: String,
}

/// The answer to creating a domain: the only time its secret is shown.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DomainCreated {
    pub domain: Domain,
    pub secret: String,
    /// The boot string for a dynamic guest of this domain.
    pub boot_string: String,
}

// ---- What guests send and receive (under /boot/v1, HTTP Basic auth) ----

/// The seed's `update_cache(uuid, my_conf_addr, parameter_map, status,
/// trust_key)`: `PUT /boot/v1/configs/{uuid}/status`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateCache {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub my_conf_addr: Option<String>,
    #[serde(default)]
    pub parameter_map: BTreeMap<String, String>,
    pub status: ConfigStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The config version this status is about.
    #[serde(default)]
    pub config_version: u64,
    /// Set by the first update; every later update must carry the same.
    pub trust_key: String,
    /// The re-key credential of this boot (`cm.rekey=` in fw_cfg): needed
    /// to set or replace the trust key of a record tied to an instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rekey: Option<String>,
}

/// `POST /boot/v1/assign`: the seed's `assign_dynamic`, with the domain's
/// secret, or with an instance's own credential (`@DOMAIN/INSTANCE` boot
/// strings), which gives that instance the same record at every boot.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssignDynamic {
    pub domain: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<Uuid>,
}

/// `POST /boot/v1/assign` with the domain's name and secret: the seed's
/// `assign_dynamic`. Answers a record's uuid and its secret.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assigned {
    pub uuid: Uuid,
    pub secret: String,
    pub config_version: u64,
}

/// A service's state as the guest agent sees it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceState {
    pub name: String,
    /// `starting`, `running` (up and its check passes), `unhealthy`
    /// (running, check failing), `failed` (exited), `stopped`.
    pub state: crate::words::ServiceStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// One heartbeat: a line of JSON on the virtio-serial port
/// `org.cloudmaster.agent.0`, or the body of `POST /boot/v1/configs/{uuid}/heartbeat`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Starts at 1 when the agent starts, +1 each beat.
    pub seq: u64,
    /// The guest's clock, seconds since the epoch.
    pub time: f64,
    #[serde(default)]
    pub services: Vec<ServiceState>,
    /// The config status the agent last reported (`configured`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_status: Option<ConfigStatus>,
    #[serde(default)]
    pub config_version: u64,
}

/// What a host asks its guest's agent on the agent port, one JSON line
/// (`{"freeze":{"id":...,"timeout_ms":10000}}`), for a snapshot or backup
/// consistent at the file-system level (docs/storage.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum HostRequest {
    /// Freeze every mounted file system that can be (`fsfreeze -f`),
    /// answer `frozen` or `freeze_failed`, and thaw on its own after
    /// `timeout_ms` if no `thaw` comes.
    Freeze { id: uuid::Uuid, timeout_ms: u64 },
    /// Thaw what `freeze` `id` froze; answer `thawed`.
    Thaw { id: uuid::Uuid },
}

/// The guest agent's answers to a `HostRequest`, one JSON line among its
/// heartbeats on the agent port (`{"frozen":{"id":...,"mounts":["/mnt/v"]}}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum GuestAnswer {
    Frozen {
        id: uuid::Uuid,
        /// The mount points frozen (none: nothing could be, e.g. a root
        /// in RAM only).
        mounts: Vec<String>,
    },
    FreezeFailed {
        id: uuid::Uuid,
        error: String,
    },
    Thawed {
        id: uuid::Uuid,
    },
}

/// The longest a guest stays frozen without a `thaw` (its own bound).
pub const MAX_FREEZE_MS: u64 = 60_000;

/// What the master knows of a guest agent's heartbeats.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GuestStatus {
    /// `up`, `silent for Ns`, `no agent`.
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    #[serde(
        default,
        with = "crate::ts::option",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub last_heartbeat: Option<Timestamp>,
    #[serde(default)]
    pub services: Vec<ServiceState>,
    /// `virtio-serial` (through its host) or `http` (federated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
    /// The host's judgement of the beats' age (`up`, `suspect`, `silent`),
    /// for an instance with a heartbeat policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness: Option<crate::words::GuestLiveness>,
}

/// The boot string: `UUID:HOST[:PORT]:SECRET` for a record made for this
/// guest, `@DOMAIN:HOST[:PORT]:SECRET` for a dynamic guest that asks
/// `assign_dynamic` with its domain's secret, or
/// `@DOMAIN/INSTANCE:HOST[:PORT]:SECRET` for a dynamic instance of our
/// cloud, with its own credential. HOST may be `[v6]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootString {
    pub who: BootWho,
    pub host: String,
    pub port: u16,
    pub secret: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootWho {
    Record(Uuid),
    Domain(String),
    /// A dynamic guest that is this instance: it keeps its record.
    Instance {
        domain: String,
        instance: Uuid,
    },
}

impl fmt::Display for BootString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.who {
            BootWho::Record(u) => write!(f, "{u}:")?,
            BootWho::Domain(d) => write!(f, "@{d}:")?,
            BootWho::Instance { domain, instance } => write!(f, "@{domain}/{instance}:")?,
        }
        write!(f, "{}:{}:{}", self.host, self.port, self.secret)
    }
}

impl std::str::FromStr for BootString {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("bad boot string: {why}");
        let (who, rest) = s.split_once(':').ok_or_else(|| bad("no ':'"))?;
        let who = match who.strip_prefix('@').map(|d| d.split_once('/')) {
            Some(Some((d, i))) if !d.is_empty() => BootWho::Instance {
                domain: d.to_string(),
                instance: Uuid::parse_str(i).map_err(|_| bad("instance is not a uuid"))?,
            },
            Some(None) if who.len() > 1 => BootWho::Domain(who[1..].to_string()),
            Some(_) => return Err(bad("empty domain")),
            None => BootWho::Record(Uuid::parse_str(who).map_err(|_| bad("not a uuid"))?),
        };
        let (host, rest) = if let Some(r) = rest.strip_prefix('[') {
            let (h, r) = r.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
            (
                format!("[{h}]"),
                r.strip_prefix(':')
                    .ok_or_else(|| bad("nothing after the host"))?,
            )
        } else {
            rest.split_once(':')
                .map(|(h, r)| (h.to_string(), r))
                .ok_or_else(|| bad("no secret"))?
        };
        if host.is_empty() {
            return Err(bad("empty host"));
        }
        let (port, secret) = match rest.split_once(':') {
            Some((p, sec)) => (
                p.parse::<u16>().map_err(|_| bad("port is not a number"))?,
                sec,
            ),
            None => (crate::DEFAULT_PORT, rest),
        };
        if secret.is_empty() {
            return Err(bad("empty secret"));
        }
        Ok(BootString {
            who,
            host,
            port,
            secret: secret.to_string(),
        })
    }
}

/// The kernel command line key and the SMBIOS OEM string prefix; also the
/// boot string's line in the fw_cfg file.
pub const BOOT_KEY: &str = "cm.boot=";
/// The re-key credential's line in the fw_cfg file.
pub const REKEY_KEY: &str = "cm.rekey=";
/// The fw_cfg file cloudhostd gives QEMU (`-fw_cfg name=...,file=...`); in
/// the guest `/sys/firmware/qemu_fw_cfg/by_name/opt/org.cloudmaster/boot/raw`.
pub const FW_CFG_NAME: &str = "opt/org.cloudmaster/boot";
/// The virtio-serial port name guests heartbeat on.
pub const AGENT_PORT: &str = "org.cloudmaster.agent.0";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_strings_round_trip() {
        let u = Uuid::new_v4();
        for s in [
            format!("{u}:10.0.2.2:8107:s3cret"),
            format!("{u}:[fd00::1]:8107:s3cret"),
            "@web:10.0.2.2:9000:dom-secret".to_string(),
            format!("@web/{u}:10.0.2.2:9000:inst-secret"),
        ] {
            let b: BootString = s.parse().unwrap();
            assert_eq!(b.to_string(), s);
        }
        let b: BootString = format!("{u}:10.0.2.2:s3cret").parse().unwrap();
        assert_eq!((b.port, b.secret.as_str()), (8107, "s3cret"));
        assert_eq!(b.who, BootWho::Record(u));
        let b: BootString = format!("@web/{u}:h:s").parse().unwrap();
        assert_eq!(
            b.who,
            BootWho::Instance {
                domain: "web".into(),
                instance: u
            }
        );
        for bad in [
            "",
            "x:1.2.3.4:1:s",
            "@:h:1:s",
            "@/x:h:1:s",
            "@web/notauuid:h:1:s",
            &format!("{u}:h:notaport:s"),
            &format!("{u}::1:s"),
            &format!("{u}:h:1:"),
        ] {
            assert!(bad.parse::<BootString>().is_err(), "{bad}");
        }
    }
}
