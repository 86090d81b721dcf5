//! The bearer token at the door: the middleware that finds the caller's
//! principal, and the extractors handlers take to say who may call them.

use super::error::ApiErr;
use crate::auth::{hash, Principal};
use crate::state::App;
use crate::store::HostId;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use cm_api::ErrorCode;
use std::sync::Arc;

/// Middleware: every request needs a known bearer token; the principal is
/// put into the request for handlers to check.
pub async fn require_token(
    State(app): State<Arc<App>>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiErr> {
    let token = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or_else(|| {
            ApiErr::new(
                ErrorCode::Unauthorized,
                "missing bearer token (Authorization: Bearer ...)",
            )
        })?;
    let who = app
        .principal_for(&hash(token))
        .ok_or_else(|| ApiErr::new(ErrorCode::Unauthorized, "unknown token"))?;
    req.extensions_mut().insert(who);
    Ok(next.run(req).await)
}

/// Handlers for people and scripts take this: only the admin token passes.
pub struct Admin;

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Admin {
    type Rejection = ApiErr;
    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, ApiErr> {
        match parts.extensions.get::<Principal>() {
            Some(Principal::Admin) => Ok(Admin),
            Some(_) => Err(ApiErr::new(
                ErrorCode::Forbidden,
                "this token may not do that",
            )),
            None => Err(ApiErr::new(ErrorCode::Unauthorized, "missing bearer token")),
        }
    }
}

/// Agent endpoints take this: only a host token passes, and names the host.
pub struct HostAgent(pub HostId);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for HostAgent {
    type Rejection = ApiErr;
    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, ApiErr> {
        match parts.extensions.get::<Principal>() {
            Some(Principal::Host(h)) => Ok(HostAgent(*h)),
            Some(_) => Err(ApiErr::new(
                ErrorCode::Forbidden,
                "only a host token may do that",
            )),
            None => Err(ApiErr::new(ErrorCode::Unauthorized, "missing bearer token")),
        }
    }
}
