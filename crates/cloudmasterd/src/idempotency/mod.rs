//! Idempotency keys: a retried request gets the first request's answer.
//!
//! `cm` sends `Idempotency-Key: <random uuid>` with every call that changes
//! something (POST, PUT, PATCH, DELETE), as Stripe's API and the IETF draft
//! draft-ietf-httpapi-idempotency-key-header do, and retries it with the same
//! key across a lost connection or a master restart. The master keeps, per
//! principal, key → (method, path, body hash, status, body) for [`TTL`] in the
//! store, so a restart forgets nothing; at most [`MAX_KEYS`], the oldest
//! dropped first, trimmed every minute.
//!
//! - First use: the request runs, and its answer (any status below 500) is
//!   recorded.
//! - A retry (same principal, key, method, path and body): the first answer,
//!   same status and body, with `Idempotent-Replayed: true`.
//! - The same key with another request: 422 `idempotency_key_reused`.
//! - A retry while the first is still running: it waits up to
//!   [`WAIT_IN_FLIGHT`] for it, then 409 `in_progress` with `Retry-After`.
//!
//! A crash between a change's commit and the recording of its answer would
//! let a retry run the change again. So the changes where that matters most,
//! instance create and the instance actions, write the answer in their own
//! transaction: the handler gets the request's [`Keyed`] claim and hands the
//! store a [`KeyedAnswer`](crate::store::KeyedAnswer). Any other change is
//! recorded right after it. An answer that shows a secret once (a record's
//! secret, a token; [`holds_secret`]) is never kept: only the fact that the
//! request was done, and its retry hears so (409).
//!
//! [`Keys::run`] is the whole rule, free of HTTP; [`layer`] is only its axum
//! adapter, so an application layer between the API and the store can use
//! `Keys` as it is.

use crate::app::{Error, Result};
use crate::auth::Principal;
use crate::state::App;
use crate::store::{now_ms, IdempotencyRecord, KeyedAnswer, Millis, RenderAnswer};
use axum::http::StatusCode;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

mod secrets;

pub use secrets::holds_secret;

/// The request header (case-insensitive on the wire).
pub const HEADER: &str = "idempotency-key";
/// Set on an answer that is a replay of the first one.
pub const REPLAYED: &str = "idempotent-replayed";
/// How long a key is remembered.
pub const TTL: Duration = Duration::from_secs(24 * 3600);
/// The most keys kept (the oldest go first).
pub const MAX_KEYS: u64 = 100_000;
/// A retry waits this long for a first attempt still running.
pub const WAIT_IN_FLIGHT: Duration = Duration::from_secs(5);
/// The longest key accepted (Stripe's limit).
pub const MAX_KEY_LEN: usize = 255;
/// Answers larger than this are passed on but not recorded.
pub const MAX_ANSWER: u64 = 1024 * 1024;
/// Expired keys are purged at most this often.
const PURGE_EVERY_MS: Millis = 60_000;

/// One keyed request, as its retries must match it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub principal: String,
    pub key: String,
    pub method: String,
    pub path: String,
    pub body_sha256: String,
}

/// Put into a keyed request's extensions, for handlers that record their
/// answer in their own transaction.
#[derive(Debug, Clone)]
pub struct Keyed(pub Claim);

impl Keyed {
    /// The answer to write with the change: `status` and the body `render`
    /// makes from the row the change wrote.
    pub fn answer(&self, status: StatusCode, render: Box<RenderAnswer>) -> KeyedAnswer {
        KeyedAnswer {
            record: self.0.record(status.as_u16(), Vec::new(), now_ms()),
            render,
        }
    }
}

impl Claim {
    pub fn new(principal: &Principal, key: String, method: &str, path: &str, body: &[u8]) -> Claim {
        Claim {
            principal: principal_name(principal),
            key,
            method: method.to_string(),
            path: path.to_string(),
            body_sha256: hex::encode(Sha256::digest(body)),
        }
    }

    pub fn record(&self, status: u16, response: Vec<u8>, now: Millis) -> IdempotencyRecord {
        IdempotencyRecord {
            principal: self.principal.clone(),
            key: self.key.clone(),
            method: self.method.clone(),
            path: self.path.clone(),
            body_sha256: self.body_sha256.clone(),
            status,
            response,
            withheld: false,
            created_at: now,
            expires_at: now + cm_api::time::duration_millis(TTL),
        }
    }

    fn same_request(&self, method: &str, path: &str, body_sha256: &str) -> bool {
        self.method == method && self.path == path && self.body_sha256 == body_sha256
    }

    fn reused(&self, first_method: &str, first_path: &str) -> Error {
        Error::KeyReused(
            format!(
                "Idempotency-Key '{}' was first used for another request ({first_method} {}) \
                 within the last {} hours; a new request needs a new key",
                cm_api::validate::printable(&self.key),
                cm_api::validate::printable(first_path),
                TTL.as_secs() / 3600
            )
            .into(),
        )
        .field("Idempotency-Key")
    }
}

/// Keys are per principal: one caller can neither replay nor block another's.
fn principal_name(p: &Principal) -> String {
    match p {
        Principal::Admin => "admin".to_string(),
        Principal::Host(h) => format!("host:{h}"),
    }
}

/// An answer to record or to replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
    /// Never to be kept: the handler said `Cache-Control: no-store`.
    pub secret: bool,
}

/// What [`Keys::run`] did.
#[derive(Debug)]
pub enum Outcome<T> {
    /// The request ran; this is its own answer.
    Fresh(T),
    /// The request ran and its change recorded the answer in its own
    /// transaction: this is that record, byte for byte what a retry gets.
    Recorded(Answer),
    /// A retry: the first answer.
    Replayed(Answer),
}

/// Keys being run now, in memory: a restart ends them all anyway.
type InFlight = HashMap<(String, String), (Claim, watch::Sender<()>)>;

pub struct Keys {
    app: Arc<App>,
    in_flight: Mutex<InFlight>,
    last_purge: AtomicI64,
    /// How long a retry waits for a first run (WAIT_IN_FLIGHT).
    wait_in_flight: Duration,
}

/// Ends a key's run when dropped (also when the request is cancelled).
struct Running<'a> {
    keys: &'a Keys,
    id: (String, String),
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        if let Ok(mut m) = self.keys.in_flight.lock() {
            // Dropping the sender wakes every waiter.
            m.remove(&self.id);
        }
    }
}

enum Claimed<'a> {
    Mine(Running<'a>),
    /// Another request with the same key is running.
    Busy(watch::Receiver<()>),
}

impl Keys {
    pub fn new(app: Arc<App>) -> Keys {
        Keys {
            app,
            in_flight: Mutex::new(HashMap::new()),
            last_purge: AtomicI64::new(0),
            wait_in_flight: WAIT_IN_FLIGHT,
        }
    }

    /// The recorded answer for `claim`, or its refusal when the key was used
    /// for another request.
    async fn recorded(&self, claim: &Claim) -> Result<Option<Answer>> {
        let (p, k) = (claim.principal.clone(), claim.key.clone());
        let found = self
            .app
            .db(move |s| s.idempotency_get(&p, &k, now_ms()))
            .await?;
        match found {
            None => Ok(None),
            Some(r) if claim.same_request(&r.method, &r.path, &r.body_sha256) && r.withheld => {
                Err(Error::conflict(format!(
                    "the first request with Idempotency-Key '{}' was done (HTTP {}), but its \
                     answer held a secret that is shown only once and is not kept",
                    cm_api::validate::printable(&claim.key),
                    r.status
                )))
            }
            Some(r) if claim.same_request(&r.method, &r.path, &r.body_sha256) => Ok(Some(Answer {
                status: r.status,
                body: r.response,
                secret: false,
            })),
            Some(r) => Err(claim.reused(&r.method, &r.path)),
        }
    }

    fn claim(&self, claim: &Claim) -> Result<Claimed<'_>> {
        let id = (claim.principal.clone(), claim.key.clone());
        let mut m = self
            .in_flight
            .lock()
            .map_err(|_| Error::internal("idempotency registry poisoned"))?;
        if let Some((first, tx)) = m.get(&id) {
            if !first.same_request(&claim.method, &claim.path, &claim.body_sha256) {
                return Err(claim.reused(&first.method, &first.path));
            }
            return Ok(Claimed::Busy(tx.subscribe()));
        }
        m.insert(id.clone(), (claim.clone(), watch::channel(()).0));
        Ok(Claimed::Mine(Running { keys: self, id }))
    }

    /// Run `exec` once per key: replay, refuse, or run it and record the
    /// answer it returns beside its value (None: not to be recorded).
    pub async fn run<T, F, Fut>(&self, claim: Claim, exec: F) -> Result<Outcome<T>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = (T, Option<Answer>)>,
    {
        let deadline = Instant::now() + self.wait_in_flight;
        let running = loop {
            if let Some(a) = self.recorded(&claim).await? {
                return Ok(Outcome::Replayed(a));
            }
            match self.claim(&claim)? {
                Claimed::Mine(r) => break r,
                Claimed::Busy(mut rx) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    // Err from changed(): the first run ended; look again.
                    if tokio::time::timeout(left, rx.changed()).await.is_err() {
                        return Err(Error::InProgress(
                            format!(
                                "the first request with Idempotency-Key '{}' is still running; retry later",
                                cm_api::validate::printable(&claim.key)
                            )
                            .into(),
                        ));
                    }
                }
            }
        };
        // A first run may have ended between the lookup and the claim.
        if let Some(a) = self.recorded(&claim).await? {
            return Ok(Outcome::Replayed(a));
        }
        let (value, answer) = exec().await;
        let outcome = match answer {
            Some(a) if a.status < 500 && a.body.len() as u64 <= MAX_ANSWER => {
                let mut rec = claim.record(a.status, a.body, now_ms());
                // Keep that the request was made, never a secret it showed
                // (the store checks the body too).
                rec.withheld = a.secret;
                match self.app.db(move |s| s.idempotency_put(&rec)).await {
                    Ok(true) => Outcome::Fresh(value),
                    // The change wrote its answer in its own transaction.
                    Ok(false) => match self.recorded(&claim).await {
                        Ok(Some(a)) => Outcome::Recorded(a),
                        _ => Outcome::Fresh(value),
                    },
                    Err(e) => {
                        tracing::error!("cannot record an idempotency key: {e}");
                        Outcome::Fresh(value)
                    }
                }
            }
            _ => Outcome::Fresh(value),
        };
        drop(running);
        self.purge_now_and_then();
        Ok(outcome)
    }

    /// Drop expired keys and trim to MAX_KEYS, at most once a minute.
    fn purge_now_and_then(&self) {
        let now = now_ms();
        let last = self.last_purge.load(Ordering::Relaxed);
        if now - last < PURGE_EVERY_MS
            || self
                .last_purge
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let app = self.app.clone();
        tokio::spawn(async move {
            match app.db(move |s| s.idempotency_purge(now, MAX_KEYS)).await {
                Ok(n) if n > 0 => tracing::debug!("purged {n} idempotency keys"),
                Ok(_) => {}
                Err(e) => tracing::warn!("purging idempotency keys: {e}"),
            }
        });
    }
}

#[cfg(test)]
mod tests;
