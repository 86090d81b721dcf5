//! `/boot/v1` and `/nocloud`: what guests call, with their record's uuid
//! and secret (HTTP Basic) instead of a bearer token (docs/boot-protocol.md).
//! An unknown uuid and a wrong secret get the same 403 in the same time.

use super::configs::check_parameter_map;
use super::error::{ApiErr, ApiResult, Body};
use super::extract::{Path, Query};
use super::guest_trust::{check_trust, nocloud_access, nocloud_window};
use super::openapi::Errors;
use super::wait_secs;
use crate::bootcfg::{basic_auth, same, Keyring};
use crate::state::App;
use crate::store::{now_ms, CacheUpdate, StoreError};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use cm_api::answer::{Ack, AfterQuery};
use cm_api::boot::{AssignDynamic, Assigned, Heartbeat, UpdateCache};
use cm_api::words::ConfigStatus;
use cm_api::words::EventKind;
use cm_api::ErrorCode;
use std::sync::Arc;
use tokio::time::Instant;
use uuid::Uuid;

fn denied() -> ApiErr {
    ApiErr::new(ErrorCode::Forbidden, "unknown config or wrong secret")
}

/// Check the Basic credentials against record `path_uuid`.
async fn authorize(app: &App, headers: &HeaderMap, path_uuid: &str) -> ApiResult<Uuid> {
    let (user, secret) = basic_auth(headers).unwrap_or_default();
    let uuid = Uuid::parse_str(path_uuid).ok();
    let stored = match uuid {
        Some(u) => app.db(move |s| s.config_secret(u)).await?,
        None => None,
    };
    // Always one lookup and one hash, whether the record exists or not.
    let ok = app.keys.verify(stored.as_ref(), &secret) && user == path_uuid;
    match (ok, uuid) {
        (true, Some(u)) => Ok(u),
        _ => Err(denied()),
    }
}

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
    let uuid = authorize(&app, &headers, &id).await?;
    let deadline = Instant::now() + wait_secs(q.wait);
    let mut changed = app.configs_changed.subscribe();
    loop {
        changed.borrow_and_update();
        let (version, body, status) = app.db(move |s| s.config_body(uuid)).await?;
        let newer = q.after.map(|a| version > a).unwrap_or(true);
        if newer {
            if ConfigStatus::from(status).is_unfetched() {
                app.db(move |s| s.mark_fetched(uuid, now_ms())).await?;
            }
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
            return Ok(resp);
        }
        if Instant::now() >= deadline {
            let mut resp = StatusCode::NOT_MODIFIED.into_response();
            resp.headers_mut()
                .insert("x-config-version", HeaderValue::from(version));
            return Ok(resp);
        }
        let _ = tokio::time::timeout_at(deadline, changed.changed()).await;
    }
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
    let uuid = authorize(&app, &headers, &id).await?;
    let word = req.status.as_str();
    if word.is_empty() || word.len() > 64 {
        return Err(ApiErr::invalid("status", "status is 1-64 characters"));
    }
    if req.trust_key.len() < 16 || req.trust_key.len() > 256 {
        return Err(ApiErr::invalid(
            "trust_key",
            "trust_key is 16-256 characters",
        ));
    }
    if req
        .my_conf_addr
        .as_ref()
        .map(|a| a.len() > 256)
        .unwrap_or(false)
    {
        return Err(ApiErr::invalid(
            "my_conf_addr",
            "my_conf_addr is at most 256 characters",
        ));
    }
    if req.reason.as_ref().map(|r| r.len() > 4096).unwrap_or(false) {
        return Err(ApiErr::invalid(
            "reason",
            "reason is at most 4096 characters",
        ));
    }
    check_parameter_map(&req.parameter_map)?;
    check_trust(&app, uuid, &req.trust_key, req.rekey.as_deref()).await?;
    let upd = CacheUpdate {
        my_conf_addr: req.my_conf_addr.clone(),
        parameter_map: req.parameter_map.clone(),
        status: word.to_string(),
        reason: req.reason.clone(),
    };
    let row = app
        .db(move |s| s.update_cache(uuid, &upd, now_ms()))
        .await?;
    let target = match row.instance_id {
        Some(i) => app
            .db(move |s| s.get_instance(&i.to_string()))
            .await
            .map(|r| r.name)
            .unwrap_or_else(|_| uuid.to_string()),
        None => uuid.to_string(),
    };
    let msg = match &req.reason {
        Some(r) => format!(
            "{} (version {}): {}",
            req.status,
            req.config_version,
            cm_api::validate::printable(r)
        ),
        None => format!("{} (version {})", req.status, req.config_version),
    };
    app.event(EventKind::ConfigStatus, &target, &msg).await;
    Ok(Json(Ack {}))
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
    let (user, secret) = basic_auth(&headers).unwrap_or_default();
    let d = req.domain.clone();
    let holder = req.instance;
    let (stored, inst) = app
        .db(move |s| {
            let inst = match holder {
                Some(i) => match s.get_instance(&i.to_string()) {
                    Ok(r) => Some(r),
                    Err(StoreError::NotFound { .. }) => None,
                    Err(e) => return Err(e),
                },
                None => None,
            };
            Ok((s.domain_secret(&d)?, inst))
        })
        .await?;
    let ok = match holder {
        None => app.keys.verify(stored.as_ref(), &secret),
        Some(i) => {
            // Derived again: the same work whether the instance exists or not.
            let gen = inst.as_ref().map(|r| r.desired.boot_gen).unwrap_or(0);
            let right = same(&secret, &app.keys.instance_secret(&req.domain, i, gen));
            right
                && inst.as_ref().is_some_and(|r| {
                    !r.desired.deleted
                        && r.spec.dynamic_domain.as_deref() == Some(req.domain.as_str())
                })
        }
    };
    if !(ok && user == req.domain) {
        return Err(ApiErr::new(
            ErrorCode::Forbidden,
            "unknown domain or wrong secret",
        ));
    }
    let d = req.domain.clone();
    let keys = app.clone();
    let fresh = move |u: Uuid, epoch: u64| {
        Keyring::hash_for_store(&keys.keys.record_secret(u, epoch), epoch)
    };
    match app
        .db(move |s| s.assign_dynamic(&d, holder.map(Into::into), now_ms(), &fresh))
        .await?
    {
        Some(row) => {
            let to = match &inst {
                Some(i) => format!("instance {}", i.name),
                None => "a guest with the domain's secret".to_string(),
            };
            app.event(
                EventKind::ConfigAssigned,
                &row.uuid.to_string(),
                &format!("handed out from domain {} to {to}", req.domain),
            )
            .await;
            Ok(Json(Assigned {
                uuid: row.uuid,
                secret: app.keys.record_secret(row.uuid, row.secret_epoch),
                config_version: row.version,
            }))
        }
        None => Err(ApiErr::new(
            ErrorCode::NoneLeft,
            format!(
                "none left: every dynamic record of domain '{}' is taken",
                req.domain
            ),
        )
        .field("domain")),
    }
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
    let uuid = authorize(&app, &headers, &id).await?;
    if hb.services.len() > 256 {
        return Err(ApiErr::invalid("services", "at most 256 services"));
    }
    app.db(move |s| s.config_heartbeat(uuid, &hb, now_ms()))
        .await?;
    Ok(Json(Ack {}))
}

/// What a spent NoCloud credential reads as user-data.
const SPENT_USER_DATA: &str =
    "#cloud-config\n# cloudmaster: this boot's NoCloud credential is spent \
(user-data is served once per boot; docs/security.md)\n";

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
    let (uuid, access) = nocloud_access(&app, &headers, &id).await?;
    let text = |s: String| {
        let mut r = s.into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        r
    };
    match file.as_str() {
        "meta-data" => {
            // Not secret: served in any boot of the launch (cloud-init fetches
            // it again at every boot, and must see the same instance-id).
            nocloud_window(&app, uuid, access, false).await?;
            let row = app.db(move |s| s.get_config(uuid)).await?;
            let host = match row.instance_id {
                Some(i) => app
                    .db(move |s| s.get_instance(&i.to_string()))
                    .await
                    .map(|r| r.name)
                    .ok(),
                None => None,
            };
            let host = host.unwrap_or_else(|| format!("cm-{}", &uuid.to_string()[..8]));
            Ok(text(format!(
                "instance-id: {uuid}\nlocal-hostname: {host}\n"
            )))
        }
        "user-data" => {
            if !nocloud_window(&app, uuid, access, false).await? {
                // Spent: an empty cloud-config (a refusal would make cloud-init
                // drop to DataSourceNone and treat the VM as a new instance).
                return Ok(text(SPENT_USER_DATA.to_string()));
            }
            let (_, body, status) = app.db(move |s| s.config_body(uuid)).await?;
            if ConfigStatus::from(status).is_unfetched() {
                app.db(move |s| s.mark_fetched(uuid, now_ms())).await?;
            }
            Ok(body.into_response())
        }
        // cloud-init's last file: the boot's NoCloud credential is spent.
        "vendor-data" => {
            nocloud_window(&app, uuid, access, true).await?;
            Ok(text(String::new()))
        }
        // DHCP on every ethernet interface, which is what cloud-init would
        // fall back to: written out, so it is the same on every version.
        "network-config" => Ok(text(
            "version: 2\nethernets:\n  all:\n    match:\n      name: \"e*\"\n    dhcp4: true\n"
                .to_string(),
        )),
        other => Err(ApiErr::new(
            ErrorCode::NotFound,
            format!("no NoCloud file '{}'", cm_api::validate::printable(other)),
        )),
    }
}
