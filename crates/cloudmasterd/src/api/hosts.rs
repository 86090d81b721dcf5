//! `/v1/hosts`: list, show, enable/disable, remove, and the join token.

use super::bearer::Admin;
use super::error::{ApiErr, ApiResult, Body};
use super::extract::{Path, Query};
use super::openapi::Errors;
use crate::auth;
use crate::state::App;
use crate::store::now_ms;
use crate::view;
use axum::extract::State;
use axum::Json;
use cm_api::answer::{ForceQuery, TokenFile};
use cm_api::host::{Host, HostRemoved, UpdateHost};
use cm_api::words::EventKind;
use cm_api::ErrorCode;
use std::sync::Arc;

#[utoipa::path(
    get,
    path = "/v1/hosts",
    tag = "hosts",
    responses((status = 200, description = "OK", body = Vec<cm_api::host::Host>), Errors),
    security(("bearer" = [])),
)]
pub async fn list(State(app): State<Arc<App>>, _: Admin) -> ApiResult<Json<Vec<Host>>> {
    let rows = app.db(|s| s.list_hosts()).await?;
    let now = now_ms();
    Ok(Json(
        rows.iter()
            .map(|h| view::host(h, now, app.settings.host_down_after))
            .collect(),
    ))
}

#[utoipa::path(
    get,
    path = "/v1/hosts/{name}",
    tag = "hosts",
    params(("name" = String, Path, description = "host name")),
    responses((status = 200, description = "OK", body = cm_api::host::Host), Errors),
    security(("bearer" = [])),
)]
pub async fn show(
    State(app): State<Arc<App>>,
    _: Admin,
    Path(name): Path<String>,
) -> ApiResult<Json<Host>> {
    let row = app.db(move |s| s.get_host(&name)).await?;
    Ok(Json(view::host(
        &row,
        now_ms(),
        app.settings.host_down_after,
    )))
}

#[utoipa::path(
    patch,
    path = "/v1/hosts/{name}",
    tag = "hosts",
    params(("name" = String, Path, description = "host name")),
    request_body = cm_api::host::UpdateHost,
    responses((status = 200, description = "OK", body = cm_api::host::Host), Errors),
    security(("bearer" = [])),
)]
pub async fn update(
    State(app): State<Arc<App>>,
    _: Admin,
    Path(name): Path<String>,
    Body(req): Body<UpdateHost>,
) -> ApiResult<Json<Host>> {
    if req.enabled.is_none() && req.memory_reserved_mib.is_none() {
        return Err(ApiErr::invalid(
            "enabled",
            "nothing to change: give enabled or memory_reserved_mib",
        ));
    }
    let row = app
        .db(move |s| s.update_host(&name, req.enabled, req.memory_reserved_mib))
        .await?;
    if let Some(e) = req.enabled {
        let what = if e {
            "enabled"
        } else {
            "disabled: no new instances"
        };
        app.event(EventKind::HostState, &row.name, what).await;
    }
    Ok(Json(view::host(
        &row,
        now_ms(),
        app.settings.host_down_after,
    )))
}

/// Forget a host: its token stops working at once, so its agent cannot come
/// back on its own (docs/host.md). With `force`, its instances are forgotten.
#[utoipa::path(
    delete,
    path = "/v1/hosts/{name}",
    tag = "hosts",
    params(("name" = String, Path, description = "host name"), cm_api::answer::ForceQuery),
    responses((status = 200, description = "forgotten", body = cm_api::host::HostRemoved), Errors),
    security(("bearer" = [])),
)]
pub async fn delete(
    State(app): State<Arc<App>>,
    _: Admin,
    Path(name): Path<String>,
    Query(q): Query<ForceQuery>,
) -> ApiResult<Json<HostRemoved>> {
    let (row, forgotten) = app
        .db(move |s| s.delete_host(&name, q.force, now_ms()))
        .await?;
    app.forget_host_tokens(row.id);
    // Its long-poll, if one waits, answers now: the host is refused at once.
    app.hub.notify(row.id);
    let names: Vec<String> = forgotten.iter().map(|i| i.name.clone()).collect();
    let what = if names.is_empty() {
        "removed from the cloud; its token is revoked".to_string()
    } else {
        format!(
            "removed from the cloud with --force; its token is revoked; instances forgotten: {}",
            names.join(", ")
        )
    };
    app.event(EventKind::HostDeleted, &row.name, &what).await;
    for i in &forgotten {
        app.event(
            EventKind::InstanceDeleted,
            &i.name,
            &format!("forgotten with host {}", row.name),
        )
        .await;
    }
    app.ops_changed();
    Ok(Json(HostRemoved {
        name: row.name,
        id: row.id.uuid(),
        forgotten_instances: names,
    }))
}

/// The join token, from the master's `join.token` file: the store keeps
/// only its hash (docs/security.md).
#[utoipa::path(
    get,
    path = "/v1/hosts/join-token",
    tag = "hosts",
    responses((status = 200, description = "the join token and its file", body = cm_api::answer::TokenFile), Errors),
    security(("bearer" = [])),
)]
pub async fn join_token(State(app): State<Arc<App>>, _: Admin) -> ApiResult<Json<TokenFile>> {
    let dir = app.settings.data_dir.clone();
    let t = app
        .db_with(move |s| auth::join_token_from_file(s, &dir))
        .await?;
    let t = t.ok_or_else(|| {
        ApiErr::new(
            ErrorCode::Conflict,
            format!(
                "the master keeps only a hash of the join token, and {} no longer holds it: \
                 make a new one with `cm host join-token --rotate`",
                app.settings.data_dir.join(auth::JOIN_TOKEN_FILE).display()
            ),
        )
    })?;
    Ok(Json(TokenFile {
        token: t,
        file: token_file(&app, auth::JOIN_TOKEN_FILE),
    }))
}

#[utoipa::path(
    post,
    path = "/v1/hosts/join-token",
    tag = "hosts",
    responses((status = 200, description = "a new join token", body = cm_api::answer::TokenFile), Errors),
    security(("bearer" = [])),
)]
pub async fn rotate_join_token(
    State(app): State<Arc<App>>,
    _: Admin,
) -> ApiResult<Json<TokenFile>> {
    let dir = app.settings.data_dir.clone();
    let t = app
        .db_with(move |s| auth::rotate_join_token(s, &dir))
        .await?;
    app.event(
        EventKind::HostJoinToken,
        "cloud",
        "join token rotated: the old one no longer registers hosts",
    )
    .await;
    Ok(Json(TokenFile {
        token: t,
        file: token_file(&app, auth::JOIN_TOKEN_FILE),
    }))
}

/// Where the master keeps a token, as the answer names it.
pub fn token_file(app: &App, name: &str) -> String {
    app.settings.data_dir.join(name).display().to_string()
}
