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
