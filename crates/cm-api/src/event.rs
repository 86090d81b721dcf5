//! The event log: every state change and action, in order.

use crate::words::EventType;
use crate::Timestamp;
use serde::{Deserialize, Serialize};

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Strictly increasing; `GET /v1/events?since=SEQ` returns what came after.
    pub seq: i64,
    #[serde(with = "crate::ts")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub time: Timestamp,
    /// What happened; a type a newer master wrote to the same store is
    /// kept as its word.
    #[serde(rename = "type")]
    pub kind: EventType,
    /// The resource's name (`web-1`) or id.
    pub target: String,
    pub message: String,
    /// What the policy engine adds to its events (issue 11); absent on
    /// every other event, so older clients read the same JSON.
    #[serde(default, flatten)]
    pub detail: EventDetail,
}

/// An engine event's structured part: "why was web-2 replaced at 10:04"
/// is answered by `object`, `from` → `to`, `reason` and `action`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EventDetail {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployable: Option<String>,
    /// The deployable's spec generation in force.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
    /// The slot (`web-2`), service (`web-2/httpd`), instance or pool member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<crate::words::EngineAction>,
    /// Budgets and counts at the time (`{"svc:httpd": "2/3 in 2m"}`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub counters: std::collections::BTreeMap<String, String>,
}

impl EventDetail {
    pub fn is_empty(&self) -> bool {
        *self == EventDetail::default()
    }
}

/// The SSE stream's notice to a client that read too slowly: `dropped`
/// events were not sent; `GET /v1/events?since={resume_from}` has them
/// (unless retention removed them meanwhile).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lagged {
    pub dropped: u64,
    pub resume_from: i64,
}

/// The SSE event name of [`Lagged`].
pub const LAGGED: &str = "lagged";

/// Header of a `410 events_expired` answer: the oldest sequence number kept.
pub const OLDEST_SEQ_HEADER: &str = "x-events-oldest-seq";
