//! Bearer tokens: the admin token made on first start, host tokens made at
//! registration. Only SHA-256 hashes are stored; tokens are 256-bit random,
//! so a plain hash is enough and lookups need no per-token salt.

use crate::api::error::ApiErr;
use crate::state::App;
use crate::store::{TokenKind, TokenRow};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use cm_api::ErrorCode;
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use uuid::Uuid;

/// Who is calling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Principal {
    Admin,
    Host(Uuid),
}

pub fn new_token(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{prefix}_{}", hex::encode(bytes))
}

pub fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

pub fn principal(row: &TokenRow) -> Option<Principal> {
    match (row.kind, row.host_id) {
        (TokenKind::Admin, _) => Some(Principal::Admin),
        (TokenKind::Host, Some(h)) => Some(Principal::Host(h)),
        (TokenKind::Host, None) => None,
    }
}

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
pub struct HostAgent(pub Uuid);

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_prefixed() {
        let a = new_token("cma");
        let b = new_token("cma");
        assert_ne!(a, b);
        assert!(a.starts_with("cma_") && a.len() == 4 + 64);
        assert_eq!(hash(&a), hash(&a));
        assert_ne!(hash(&a), hash(&b));
    }
}
