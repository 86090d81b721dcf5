//! `/v1/hosts`: list, show, enable/disable, remove, and the join token.
//! The rules are in `app::hosts`.

use super::bearer::Admin;
use super::error::{ApiResult, Body};
use super::extract::{Path, Query};
use super::openapi::Errors;
use crate::app::hosts;
use crate::state::App;
use axum::extract::State;
use axum::Json;
use cm_api::answer::{ForceQuery, TokenFile};
use cm_api::host::{Host, HostRemoved, UpdateHost};
use std::sync::Arc;

#[utoipa::path(
    get,
    path = "/v1/hosts",
    tag = "hosts",
    responses((status = 200, description = "OK", body = Vec<cm_api::host::Host>), Errors),
    security(("bearer" = [])),
)]
pub async fn list(State(app): State<Arc<App>>, _: Admin) -> ApiResult<Json<Vec<Host>>> {
    Ok(Json(hosts::list(&app).await?))
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
    Ok(Json(hosts::show(&app, name).await?))
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
    Ok(Json(hosts::update(&app, name, req).await?))
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
    Ok(Json(hosts::delete(&app, name, q.force).await?))
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
    Ok(Json(hosts::join_token(&app).await?))
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
    Ok(Json(hosts::rotate_join_token(&app).await?))
}
