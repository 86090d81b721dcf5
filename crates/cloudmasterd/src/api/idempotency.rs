//! The axum adapter of [`Keys::run`]: the key from the header, the claim
//! from the request, the answer from the response.

use super::error::{ApiErr, ApiResult};
use crate::auth::Principal;
use crate::idempotency::{
    Answer, Claim, Keyed, Keys, Outcome, HEADER, MAX_ANSWER, MAX_KEY_LEN, REPLAYED,
};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use cm_api::ErrorCode;
use std::sync::Arc;

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
    // Keys cover the API's JSON requests; a file upload (any other content
    // type) streams through untouched, its own protocol makes it resumable.
    if !json_or_empty(req.headers()) {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, super::MAX_BODY).await {
        Ok(b) => b,
        Err(_) => {
            return ApiErr::new(
                ErrorCode::BodyTooLarge,
                format!("cannot read the body (at most {} bytes)", super::MAX_BODY),
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
            let in_progress = matches!(e, crate::app::Error::InProgress(_));
            let mut resp = ApiErr::from(e).into_response();
            if in_progress {
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            resp
        }
    }
}

/// Whether a request's body is JSON (or there is none).
fn json_or_empty(h: &axum::http::HeaderMap) -> bool {
    match h.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) {
        None => true,
        Some(t) => t
            .split(';')
            .next()
            .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json")),
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
    match axum::body::to_bytes(body, usize::try_from(MAX_ANSWER).unwrap_or(usize::MAX)).await {
        Ok(b) => {
            let answer = Answer {
                status: parts.status.as_u16(),
                body: b.to_vec(),
                secret: parts
                    .headers
                    .get(header::CACHE_CONTROL)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.contains("no-store")),
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
