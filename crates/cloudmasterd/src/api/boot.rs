//! `/boot/v1` and `/nocloud`: what guests call, with their record's uuid
//! and secret (HTTP Basic) instead of a bearer token (docs/boot-protocol.md).
//! The checks are in `app::boot`; an unknown uuid and a wrong secret get the
//! same 403 in the same time.

use super::error::{ApiResult, Body};
use super::extract::{Path, Query};
use super::openapi::Errors;
use super::wait_secs;
use crate::app::boot::{self, Fetched, NocloudFile};
use crate::bootcfg::basic_auth;
use crate::state::App;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use cm_api::answer::{Ack, AfterQuery};
use cm_api::boot::{AssignDynamic, Assigned, Heartbeat, UpdateCache};
use std::sync::Arc;

/// The config body; with `after`, a long-poll for a newer version.
#[utoipa::path(
    get,
    path = "/boot/v1/configs/{uuid}",
    tag = "boot",
    params(("uuid" = String, Path, description = "record uuid"), cm_api::answer::AfterQuery),
    responses((status = 200, description = "the config body (X-Config-Version, X-Config-Sha256)", body = Vec<u8>, content_type = "application/octet-stream"), (status = 304, description = "no newer version within wait"), Errors),
    security(("basic" = [])),
)]
pub async fn fetch(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(q): Query<AfterQuery>,
) -> ApiResult<Response> {
    let who = basic_auth(&headers).unwrap_or_default();
    let fetched = boot::fetch(&app, who, &id, q.after, wait_secs(q.wait)).await?;
    Ok(match fetched {
        Fetched::Body { version, body } => {
            let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&body));
            let mut resp = body.into_response();
            let h = resp.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            h.insert("x-config-version", HeaderValue::from(version));
            if let Ok(v) = HeaderValue::from_str(&sha) {
                h.insert("x-config-sha256", v);
            }
            resp
        }
        Fetched::NotModified { version } => {
            let mut resp = StatusCode::NOT_MODIFIED.into_response();
            resp.headers_mut()
                .insert("x-config-version", HeaderValue::from(version));
            resp
        }
    })
}

/// The seed's `update_cache`: the guest's address, parameters and status.
/// The first update sets the trust key; every later one must carry it.
#[utoipa::path(
    put,
    path = "/boot/v1/configs/{uuid}/status",
    tag = "boot",
    params(("uuid" = String, Path, description = "record uuid")),
    request_body = cm_api::boot::UpdateCache,
    responses((status = 200, description = "taken", body = cm_api::answer::Ack), Errors),
    security(("basic" = [])),
)]
pub async fn update_cache(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Body(req): Body<UpdateCache>,
) -> ApiResult<Json<Ack>> {
    let who = basic_auth(&headers).unwrap_or_default();
    Ok(Json(boot::update_cache(&app, who, &id, req).await?))
}

/// The seed's `assign_dynamic`: first come, first served. With the
/// domain's secret any guest may ask (the seed's federated case); with an
/// instance's own credential (`@DOMAIN/INSTANCE`, derived for its current
/// launch) the record is bound to that instance, which gets it again at
/// every boot until it is deleted.
#[utoipa::path(
    post,
    path = "/boot/v1/assign",
    tag = "boot",
    request_body = cm_api::boot::AssignDynamic,
    responses((status = 200, description = "a record of the domain", body = cm_api::boot::Assigned), Errors),
    security(("basic" = [])),
)]
pub async fn assign(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Body(req): Body<AssignDynamic>,
) -> ApiResult<Json<Assigned>> {
    let who = basic_auth(&headers).unwrap_or_default();
    Ok(Json(boot::assign(&app, who, req).await?))
}

/// Heartbeats of guests outside our hosts (federated), over HTTP.
#[utoipa::path(
    post,
    path = "/boot/v1/configs/{uuid}/heartbeat",
    tag = "boot",
    params(("uuid" = String, Path, description = "record uuid")),
    request_body = cm_api::boot::Heartbeat,
    responses((status = 200, description = "taken", body = cm_api::answer::Ack), Errors),
    security(("basic" = [])),
)]
pub async fn heartbeat(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Body(hb): Body<Heartbeat>,
) -> ApiResult<Json<Ack>> {
    let who = basic_auth(&headers).unwrap_or_default();
    Ok(Json(boot::heartbeat(&app, who, &id, hb).await?))
}

/// cloud-init NoCloud data of a record: `meta-data`, `user-data` (the
/// config body), `vendor-data`, `network-config`.
#[utoipa::path(
    get,
    path = "/nocloud/{uuid}/{file}",
    tag = "nocloud",
    params(("uuid" = String, Path, description = "record uuid"), ("file" = String, Path, description = "meta-data, user-data, vendor-data or network-config")),
    responses((status = 200, description = "NoCloud data", body = String, content_type = "text/plain; charset=utf-8"), Errors),
    security(("basic" = [])),
)]
pub async fn nocloud(
    State(app): State<Arc<App>>,
    Path((id, file)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let who = basic_auth(&headers).unwrap_or_default();
    Ok(match boot::nocloud(&app, who, &id, &file).await? {
        NocloudFile::Body(body) => body.into_response(),
        NocloudFile::Text(s) => {
            let mut r = s.into_response();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            r
        }
    })
}
