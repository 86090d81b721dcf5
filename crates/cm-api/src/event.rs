//! The event log: every state change and action, in order.

use crate::Timestamp;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Strictly increasing; `GET /v1/events?since=SEQ` returns what came after.
    pub seq: i64,
    #[serde(with = "crate::ts")]
    pub time: Timestamp,
    /// `instance.state`, `instance.restart`, `host.state`, `host.registered`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// The resource's name (`web-1`) or id.
    pub target: String,
    pub message: String,
}
