//! Small answers and query strings shared by several routes: what the
//! master sends back from a delete, a token rotation or an agent report, and
//! the query parameters it reads (so no request type lives only in the server).
//! Fields are in alphabetical order: the order the master (and `cm --json`)
//! has always written them in.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// `GET /v1/info`: who this master is and how it paces its hosts.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Info {
    pub cloud_id: Uuid,
    pub host_down_after_secs: u64,
    pub report_interval_secs: u64,
    pub version: String,
}

/// A resource named `name` was deleted (`deleted` is always true).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameDeleted {
    pub deleted: bool,
    pub name: String,
}

/// An upload was deleted (`deleted` is always true).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdDeleted {
    pub deleted: bool,
    pub id: Uuid,
}

/// A config record was removed (`removed` is always true).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UuidRemoved {
    pub removed: bool,
    pub uuid: Uuid,
}

/// A token (the join token, a new admin token) and the file on the master
/// that holds it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenFile {
    pub file: String,
    pub token: String,
}

/// Taken: `{}`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {}

/// `POST /v1/agent/replies/{id}`: whether a request was still waiting for it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivered {
    pub delivered: bool,
}

/// `?after=&wait=`: a long-poll for something newer than `after`, at most
/// `wait` seconds (capped at 60).
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AfterQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<u64>,
}

/// `?wait=`: seconds to wait for a change (capped at 60).
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<u64>,
}

/// `GET /v1/events?since=&type=&limit=&wait=`.
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventQuery {
    /// Events after this sequence number (0: all that is kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<i64>,
    /// Only events of this type (`instance.state`, ...); a type no event
    /// has gives an empty list.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(rename = "type"))]
    pub kind: Option<String>,
    /// At most this many (1-10000, default 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<u64>,
    /// Only the events of this deployable (`cm deploy events NAME`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployable: Option<String>,
}

/// `GET /v1/configs?domain=`.
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
}

/// `DELETE /v1/hosts/{name}?force=true`: forget its instances too.
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForceQuery {
    #[serde(default)]
    pub force: bool,
}

/// `GET /v1/instances/{name}/console?bytes=`: the last `bytes` of the log.
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsoleQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
}

/// `GET /v1/uploads?sha256=`: unfinished uploads of these bytes.
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sha256Query {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}
