//! Limits on what unauthenticated and guest clients may cost the master
//! (docs/security.md, "The master under hostile clients"): the middleware
//! that spends the buckets of `app::limits` per record on `update_cache` and
//! guest heartbeats, and per source address on failed guest authentication,
//! answered with 429, `Retry-After` and the JSON error.
//!
//! The body limit of the unauthenticated routes is a layer in `api::router`.

use super::error::ApiErr;
use crate::state::App;
use axum::extract::{ConnectInfo, RawPathParams, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use cm_api::ErrorCode;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

fn too_many(what: &str, wait: Duration) -> Response {
    let secs = wait
        .as_secs()
        .saturating_add(u64::from(wait.subsec_nanos() > 0))
        .max(1);
    let mut resp = ApiErr::new(
        ErrorCode::RateLimited,
        format!("too many requests {what}: try again in {secs}s"),
    )
    .into_response();
    resp.headers_mut()
        .insert(axum::http::header::RETRY_AFTER, HeaderValue::from(secs));
    resp
}

fn refused_auth(status: StatusCode) -> bool {
    status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN
}

/// Middleware on the guest routes: a source address whose failed
/// authentications emptied its bucket is refused until it refills.
pub async fn guest_auth_failures(
    State(app): State<Arc<App>>,
    req: Request,
    next: Next,
) -> Response {
    let ip = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let limiter = &app.limiters.auth_failures;
    if let Some(ip) = ip {
        if let Err(wait) = limiter.check(&ip, Instant::now()) {
            return too_many("that failed authentication from this address", wait);
        }
    }
    let resp = next.run(req).await;
    if let (Some(ip), true) = (ip, refused_auth(resp.status())) {
        let _ = limiter.take(&ip, Instant::now());
    }
    resp
}

/// Middleware on `update_cache` and heartbeats: one bucket per record and
/// route. A request that fails authentication gives its token back (it is
/// counted as a failure instead), so nobody can spend a record's bucket
/// without its secret.
pub async fn per_record(
    State(app): State<Arc<App>>,
    params: RawPathParams,
    req: Request,
    next: Next,
) -> Response {
    let uuid = params
        .iter()
        .find(|(k, _)| *k == "uuid")
        .and_then(|(_, v)| Uuid::parse_str(v).ok());
    let Some(uuid) = uuid else {
        return next.run(req).await;
    };
    let route = req
        .uri()
        .path()
        .rsplit('/')
        .next()
        .unwrap_or("")
        .to_string();
    let key = (route, uuid);
    let limiter = &app.limiters.records;
    if let Err(wait) = limiter.take(&key, Instant::now()) {
        return too_many("for this record", wait);
    }
    let resp = next.run(req).await;
    if refused_auth(resp.status()) {
        limiter.refund(&key, Instant::now());
    }
    resp
}
