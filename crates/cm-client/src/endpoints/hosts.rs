//! `/v1/hosts*` and `/v1/tokens*`: hosts, their join token, evacuation, orphans.

use crate::request::{delete, get, seg, send, Endpoint};
use cm_api::answer::TokenFile;
use cm_api::host::{EvacuateHost, Evacuation, Host, HostRemoved, Orphan, PurgeOrphans, UpdateHost};
use reqwest::Method;

pub fn list() -> Endpoint<Vec<Host>> {
    get("/v1/hosts".to_string())
}

pub fn show(name: &str) -> Endpoint<Host> {
    get(format!("/v1/hosts/{}", seg(name)))
}

/// `PATCH /v1/hosts/{name}`: enable or disable it.
pub fn update(name: &str, req: &UpdateHost) -> Endpoint<Host> {
    send(Method::PATCH, format!("/v1/hosts/{}", seg(name)), req)
}

/// Forget a host; with `force`, and its instances.
pub fn remove(name: &str, force: bool) -> Endpoint<HostRemoved> {
    let q = if force { "?force=true" } else { "" };
    delete(format!("/v1/hosts/{}{q}", seg(name)))
}

pub fn join_token() -> Endpoint<TokenFile> {
    get("/v1/hosts/join-token".to_string())
}

pub fn rotate_join_token() -> Endpoint<TokenFile> {
    send(
        Method::POST,
        "/v1/hosts/join-token".to_string(),
        &serde_json::json!({}),
    )
}

pub fn evacuate(name: &str, req: &EvacuateHost) -> Endpoint<Evacuation> {
    send(
        Method::POST,
        format!("/v1/hosts/{}/evacuate", seg(name)),
        req,
    )
}

pub fn orphans(name: &str) -> Endpoint<Vec<Orphan>> {
    get(format!("/v1/hosts/{}/orphans", seg(name)))
}

pub fn purge_orphans(name: &str, req: &PurgeOrphans) -> Endpoint<Vec<Orphan>> {
    send(
        Method::POST,
        format!("/v1/hosts/{}/orphans/purge", seg(name)),
        req,
    )
}

/// `POST /v1/tokens/admin/rotate`: a new admin token; the old one stops working.
pub fn rotate_admin_token() -> Endpoint<TokenFile> {
    send(
        Method::POST,
        "/v1/tokens/admin/rotate".to_string(),
        &serde_json::json!({}),
    )
}
