//! Deployables (seed 001, issue 11): a declared set of assemblies (guests)
//! and the services in them, kept healthy by the master's policy engine.
//!
//! The spec types here are what `cm deploy apply -f app.yaml` sends and the
//! master stores (as normalised JSON). YAML, TOML, JSON and pacemaker-cloud's
//! XML all parse into [`DeployableSpec`] (`parse`, behind the `formats`
//! feature); [`check`] refuses a bad spec as a whole with the path of every
//! bad field. Every struct refuses unknown fields.

use crate::time::Dur;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

mod diff;
mod errors;
pub mod view;
pub use diff::diff;
pub use errors::SpecErrors;
pub use view::*;

#[cfg(feature = "formats")]
mod check;
#[cfg(feature = "formats")]
mod parse;
#[cfg(feature = "formats")]
pub mod xml;
#[cfg(feature = "formats")]
pub use check::{
    check, INCARNATION_DIGITS, MAX_ASSEMBLIES, MAX_COUNT, MAX_SERVICES, MIN_HEARTBEAT,
};
#[cfg(feature = "formats")]
pub use parse::{load, parse, MAX_SPEC_BYTES};

#[cfg(test)]
mod diff_tests;
#[cfg(all(test, feature = "formats"))]
mod tests;

/// A deployable as written by its user.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployableSpec {
    pub name: String,
    /// pacemaker-cloud's uuid, kept as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<uuid::Uuid>,
    pub assemblies: Vec<AssemblySpec>,
    #[serde(default)]
    pub policy: Policy,
    #[serde(default)]
    pub update: UpdatePolicy,
}

/// A guest: an image, its size, its boot configuration and its services.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssemblySpec {
    pub name: String,
    pub image: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flavor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vcpus: Option<u32>,
    /// How many instances of it (1 to 64).
    #[serde(default = "one")]
    pub count: u32,
    #[serde(default)]
    pub spread: Spread,
    /// Guest ports forwarded from the host (a pool's members are these).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortSpec>,
    /// Extra cm-guest TOML appended to the rendered config (files, users).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<String>,
    /// A stateful assembly never runs twice: it is replaced only once its
    /// host is known dead.
    #[serde(default)]
    pub stateful: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<ServiceSpec>,
    /// Restarts of the whole assembly allowed per window before it is
    /// replaced (default: the policy's budget).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalation: Option<Budget>,
}

fn one() -> u32 {
    1
}

/// How an assembly's instances are spread over hosts.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Spread {
    /// On different hosts where they fit, else together.
    #[default]
    Prefer,
    /// On different hosts or not at all.
    Require,
    /// Wherever the scheduler puts them.
    None,
}

/// A guest port the host forwards.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortSpec {
    pub name: String,
    pub guest: u16,
}

/// A service in an assembly: a command cm-guest runs, or an LSB init script.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    pub name: String,
    /// A shell command line cm-guest runs and keeps running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
    /// An LSB init script name (`/etc/init.d/NAME start|status|stop`),
    /// pacemaker-cloud's `class="lsb"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lsb: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<CheckSpec>,
    /// Services (`name` in this assembly, `assembly.service` in another)
    /// that must be running before this one starts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, EnvValue>,
    /// Restarts of this service allowed per window before the assembly is
    /// restarted (default: the policy's budget).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalation: Option<Budget>,
    /// Assemblies of this deployable this service may be moved to when its
    /// own assembly has failed every other rung (never a stateful one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub may_move_to: Vec<String>,
    /// The balancer pool whose members are this service's instances.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<PoolRef>,
}

/// A health check: exactly one of `exec` and `http`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<String>,
    /// `http://127.0.0.1:8080/health` inside the guest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
    #[serde(default = "default_check_interval")]
    pub interval: Dur,
    #[serde(default = "default_check_timeout")]
    pub timeout: Dur,
}

fn default_check_interval() -> Dur {
    Dur::from_secs(5)
}
fn default_check_timeout() -> Dur {
    Dur::from_secs(2)
}

/// An environment value: text, or another assembly's address or parameter
/// (`{ref: "db.ipaddress"}`), re-resolved when that assembly is replaced.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EnvValue {
    Text(String),
    Ref {
        #[serde(rename = "ref")]
        reference: String,
    },
}

/// A service's place in a balancer: `balancer` is a name configured on the
/// master (`cloudmasterd --balancer NAME=unix:PATH`), never a socket path.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolRef {
    pub balancer: String,
    pub backend: String,
    /// The name of one of the assembly's `ports`.
    pub port: String,
}

/// How failures are detected and how far the engine goes before escalating.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    #[serde(default = "default_hb_interval")]
    pub heartbeat_interval: Dur,
    #[serde(default = "default_hb_timeout")]
    pub heartbeat_timeout: Dur,
    /// How long a new guest may take to send its first heartbeat.
    #[serde(default = "default_boot_grace")]
    pub boot_grace: Dur,
    #[serde(default)]
    pub restart_backoff: Backoff,
    /// Replacements allowed per window before an assembly is `failed`;
    /// also the default budget of assemblies and services.
    #[serde(default)]
    pub escalation: Budget,
}

fn default_hb_interval() -> Dur {
    Dur::from_secs(1)
}
fn default_hb_timeout() -> Dur {
    Dur::from_secs(3)
}
fn default_boot_grace() -> Dur {
    Dur::from_secs(120)
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            heartbeat_interval: default_hb_interval(),
            heartbeat_timeout: default_hb_timeout(),
            boot_grace: default_boot_grace(),
            restart_backoff: Backoff::default(),
            escalation: Budget::default(),
        }
    }
}

/// Exponential back-off between restarts: `initial`, doubled, at most `max`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backoff {
    pub initial: Dur,
    pub max: Dur,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff {
            initial: Dur::from_secs(1),
            max: Dur::from_secs(30),
        }
    }
}

/// `failures` allowed in any `period` (pacemaker-cloud's
/// `escalation_failures` in `escalation_period`).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    pub failures: Limit,
    pub period: Dur,
}

impl Default for Budget {
    fn default() -> Budget {
        Budget {
            failures: Limit::Count(3),
            period: Dur::from_secs(600),
        }
    }
}

/// A count, or `"unlimited"` (the XML's INFINITY: never escalate).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Limit {
    Count(u32),
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    Unlimited(Unlimited),
}

/// The word `unlimited`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Unlimited {
    #[serde(rename = "unlimited")]
    Unlimited,
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for Unlimited {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .enum_values(Some(["unlimited"]))
            .into()
    }
}
#[cfg(feature = "openapi")]
impl utoipa::ToSchema for Unlimited {}

/// How a changed spec is rolled out (Nomad's `update` block).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdatePolicy {
    /// Instances changed at once.
    #[serde(default = "one")]
    pub max_parallel: u32,
    /// How long a new instance must stay healthy before the next one.
    #[serde(default = "default_min_healthy")]
    pub min_healthy_time: Dur,
    /// A new instance not healthy by then stops the rollout.
    #[serde(default = "default_healthy_deadline")]
    pub healthy_deadline: Dur,
    /// Roll back at once when the rollout stops.
    #[serde(default)]
    pub auto_rollback: bool,
}

fn default_min_healthy() -> Dur {
    Dur::from_secs(2)
}
fn default_healthy_deadline() -> Dur {
    Dur::from_secs(180)
}

impl Default for UpdatePolicy {
    fn default() -> UpdatePolicy {
        UpdatePolicy {
            max_parallel: 1,
            min_healthy_time: default_min_healthy(),
            healthy_deadline: default_healthy_deadline(),
            auto_rollback: false,
        }
    }
}

/// The language a spec was written in.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SpecFormat {
    #[default]
    Yaml,
    Toml,
    Json,
    /// pacemaker-cloud's deployable XML.
    Xml,
}

impl SpecFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            SpecFormat::Yaml => "yaml",
            SpecFormat::Toml => "toml",
            SpecFormat::Json => "json",
            SpecFormat::Xml => "xml",
        }
    }

    /// The format of a file by its extension (`app.yml`, `app.toml`, ...).
    pub fn of_path(path: &str) -> Option<SpecFormat> {
        let ext = path.rsplit_once('.')?.1.to_ascii_lowercase();
        match ext.as_str() {
            "yaml" | "yml" => Some(SpecFormat::Yaml),
            "toml" => Some(SpecFormat::Toml),
            "json" => Some(SpecFormat::Json),
            "xml" => Some(SpecFormat::Xml),
            _ => None,
        }
    }
}

/// One problem of a spec: `assemblies[1].services[0].check.http: not a URL`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecError {
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for SpecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}
