//! What the store keeps of idempotency keys (crate::idempotency).

use super::{InstanceRow, Millis};

/// The first answer to a request made with an idempotency key
/// (crate::idempotency), kept for its retries until `expires_at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyRecord {
    /// Who sent it ("admin", "host:UUID"): keys are per principal.
    pub principal: String,
    pub key: String,
    pub method: String,
    /// Path and query.
    pub path: String,
    pub body_sha256: String,
    pub status: u16,
    /// Empty when `withheld`.
    pub response: Vec<u8>,
    /// The answer held a secret that is shown once: it is not kept.
    pub withheld: bool,
    pub created_at: Millis,
    pub expires_at: Millis,
}

/// Renders a keyed request's answer from the row its change wrote.
pub type RenderAnswer = dyn Fn(&InstanceRow) -> serde_json::Result<Vec<u8>> + Send + Sync;

/// The answer to a keyed request, written in the same transaction as the
/// change it answers, so that a crash cannot separate them.
pub struct KeyedAnswer {
    /// The key's record; `response` is filled by `render`.
    pub record: IdempotencyRecord,
    pub render: Box<RenderAnswer>,
}
