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
//! recorded right after it.
//!
//! [`Keys::run`] is the whole rule, free of HTTP; [`layer`] is only its axum
//! adapter, so an application layer between the API and the store can use
//! `Keys` as it is.

use crate::api::error::{ApiErr, ApiResult};
use crate::auth::Principal;
use crate::state::App;
use crate::store::{now_ms, IdempotencyRecord, KeyedAnswer, Millis, RenderAnswer};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use cm_api::ErrorCode;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

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
const MAX_KEY_LEN: usize = 255;
/// Answers larger than this are passed on but not recorded.
const MAX_ANSWER: u64 = 1024 * 1024;
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
            created_at: now,
            expires_at: now + TTL.as_millis() as Millis,
        }
    }

    fn same_request(&self, method: &str, path: &str, body_sha256: &str) -> bool {
        self.method == method && self.path == path && self.body_sha256 == body_sha256
    }

    fn reused(&self, first_method: &str, first_path: &str) -> ApiErr {
        ApiErr::new(
            ErrorCode::IdempotencyKeyReused,
            format!(
                "Idempotency-Key '{}' was first used for another request ({first_method} {}) \
                 within the last {} hours; a new request needs a new key",
                cm_api::validate::printable(&self.key),
                cm_api::validate::printable(first_path),
                TTL.as_secs() / 3600
            ),
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
    async fn recorded(&self, claim: &Claim) -> ApiResult<Option<Answer>> {
        let (p, k) = (claim.principal.clone(), claim.key.clone());
        let found = self
            .app
            .db(move |s| s.idempotency_get(&p, &k, now_ms()))
            .await?;
        match found {
            None => Ok(None),
            Some(r) if claim.same_request(&r.method, &r.path, &r.body_sha256) => Ok(Some(Answer {
                status: r.status,
                body: r.response,
            })),
            Some(r) => Err(claim.reused(&r.method, &r.path)),
        }
    }

    fn claim(&self, claim: &Claim) -> ApiResult<Claimed<'_>> {
        let id = (claim.principal.clone(), claim.key.clone());
        let mut m = self
            .in_flight
            .lock()
            .map_err(|_| ApiErr::internal("idempotency registry poisoned"))?;
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
    pub async fn run<T, F, Fut>(&self, claim: Claim, exec: F) -> ApiResult<Outcome<T>>
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
                        return Err(ApiErr::new(
                            ErrorCode::InProgress,
                            format!(
                                "the first request with Idempotency-Key '{}' is still running; retry later",
                                cm_api::validate::printable(&claim.key)
                            ),
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
                let rec = claim.record(a.status, a.body, now_ms());
                match self.app.db(move |s| s.idempotency_put(&rec)).await {
                    Ok(true) => Outcome::Fresh(value),
                    // The change wrote its answer in its own transaction.
                    Ok(false) => match self.recorded(&claim).await {
                        Ok(Some(a)) => Outcome::Recorded(a),
                        _ => Outcome::Fresh(value),
                    },
                    Err(e) => {
                        tracing::error!("cannot record an idempotency key: {}", e.0);
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
                Err(e) => tracing::warn!("purging idempotency keys: {}", e.0),
            }
        });
    }
}

/// The key as sent: a token of visible ASCII, or the draft's quoted string.
pub fn parse_key(raw: &HeaderValue) -> ApiResult<String> {
    let bad = || {
        ApiErr::invalid(
            "Idempotency-Key",
            format!("Idempotency-Key must be 1-{MAX_KEY_LEN} visible ASCII characters"),
        )
    };
    let s = raw.to_str().map_err(|_| bad())?.trim();
    let s = s
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(s);
    if s.is_empty()
        || s.len() > MAX_KEY_LEN
        || !s.bytes().all(|b| b.is_ascii_graphic() && b != b'"')
    {
        return Err(bad());
    }
    Ok(s.to_string())
}

/// Middleware (after authentication): applies [`Keys::run`] to requests
/// that change something and carry an `Idempotency-Key`.
pub async fn layer(State(keys): State<Arc<Keys>>, req: Request, next: Next) -> Response {
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return next.run(req).await;
    }
    let Some(raw) = req.headers().get(HEADER) else {
        return next.run(req).await;
    };
    let key = match parse_key(raw) {
        Ok(k) => k,
        Err(e) => return e.into_response(),
    };
    let Some(principal) = req.extensions().get::<Principal>().copied() else {
        return next.run(req).await;
    };
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, crate::api::MAX_BODY).await {
        Ok(b) => b,
        Err(_) => {
            return ApiErr::new(
                ErrorCode::BodyTooLarge,
                format!(
                    "cannot read the body (at most {} bytes)",
                    crate::api::MAX_BODY
                ),
            )
            .into_response()
        }
    };
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let claim = Claim::new(&principal, key, parts.method.as_str(), path, &bytes);
    let (method, path) = (claim.method.clone(), claim.path.clone());
    let mut req = Request::from_parts(parts, Body::from(bytes));
    req.extensions_mut().insert(Keyed(claim.clone()));
    let outcome = keys
        .run(
            claim,
            || async move { answer_of(next.run(req).await).await },
        )
        .await;
    match outcome {
        Ok(Outcome::Fresh(resp)) => resp,
        Ok(Outcome::Recorded(a)) => replay(a, false),
        Ok(Outcome::Replayed(a)) => {
            tracing::info!(
                "{method} {path}: a retry; replayed its first answer ({})",
                a.status
            );
            replay(a, true)
        }
        Err(e) => {
            let in_progress = e.0.code() == ErrorCode::InProgress;
            let mut resp = e.into_response();
            if in_progress {
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            resp
        }
    }
}

/// Buffer a handler's answer to record it (unless it is too large to keep).
async fn answer_of(resp: Response) -> (Response, Option<Answer>) {
    use axum::body::HttpBody;
    let small = resp
        .body()
        .size_hint()
        .upper()
        .is_some_and(|n| n <= MAX_ANSWER);
    if !small {
        return (resp, None);
    }
    let (parts, body) = resp.into_parts();
    match axum::body::to_bytes(body, MAX_ANSWER as usize).await {
        Ok(b) => {
            let answer = Answer {
                status: parts.status.as_u16(),
                body: b.to_vec(),
            };
            (Response::from_parts(parts, Body::from(b)), Some(answer))
        }
        Err(e) => (
            ApiErr::internal(format!("reading the answer: {e}")).into_response(),
            None,
        ),
    }
}

fn replay(a: Answer, replayed: bool) -> Response {
    let status = StatusCode::from_u16(a.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = (status, a.body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if replayed {
        resp.headers_mut()
            .insert(REPLAYED, HeaderValue::from_static("true"));
    }
    resp
}

#[cfg(test)]
mod tests;
