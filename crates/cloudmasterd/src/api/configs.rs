//! `/v1/configs` and `/v1/config-domains`: the rendezvous cache as its
//! owner sees it, with the admin token. The rules are in `app::configs`.

use super::bearer::Admin;
use super::error::{ApiResult, Body};
use super::extract::{Path, Query};
use super::openapi::Errors;
use crate::app::configs;
use crate::state::App;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use cm_api::answer::{DomainQuery, NameDeleted, UuidRemoved};
use cm_api::boot::{
    Config, ConfigDetail, CreateDomain, Domain, DomainCreated, PreRegister, Registered,
    RemoveStale, Removed, SetConfig,
};
use std::sync::Arc;

#[utoipa::path(
    post,
    path = "/v1/configs",
    tag = "configs",
    request_body = cm_api::boot::PreRegister,
    responses((status = 201, description = "registered", body = cm_api::boot::Registered), Errors),
    security(("bearer" = [])),
)]
pub async fn pre_register(
    State(app): State<Arc<App>>,
    _: Admin,
    Body(req): Body<PreRegister>,
) -> ApiResult<(StatusCode, Json<Registered>)> {
    Ok((
        StatusCode::CREATED,
        Json(configs::pre_register(&app, req).await?),
    ))
}

#[utoipa::path(
    get,
    path = "/v1/configs",
    tag = "configs",
    params(cm_api::answer::DomainQuery),
    responses((status = 200, description = "OK", body = Vec<cm_api::boot::Config>), Errors),
    security(("bearer" = [])),
)]
pub async fn list(
    State(app): State<Arc<App>>,
    _: Admin,
    Query(q): Query<DomainQuery>,
) -> ApiResult<Json<Vec<Config>>> {
    Ok(Json(configs::list(&app, q.domain).await?))
}

#[utoipa::path(
    get,
    path = "/v1/configs/{uuid}",
    tag = "configs",
    params(("uuid" = String, Path, description = "record uuid")),
    responses((status = 200, description = "OK", body = cm_api::boot::ConfigDetail), Errors),
    security(("bearer" = [])),
)]
pub async fn detail(
    State(app): State<Arc<App>>,
    _: Admin,
    Path(id): Path<String>,
) -> ApiResult<Json<ConfigDetail>> {
    Ok(Json(configs::detail(&app, &id).await?))
}

/// A new config body; a guest long-polling for it gets it at once.
#[utoipa::path(
    put,
    path = "/v1/configs/{uuid}/config",
    tag = "configs",
    params(("uuid" = String, Path, description = "record uuid")),
    request_body = cm_api::boot::SetConfig,
    responses((status = 200, description = "OK", body = cm_api::boot::Config), Errors),
    security(("bearer" = [])),
)]
pub async fn set_config(
    State(app): State<Arc<App>>,
    _: Admin,
    Path(id): Path<String>,
    Body(req): Body<SetConfig>,
) -> ApiResult<Json<Config>> {
    Ok(Json(configs::set_config(&app, &id, req).await?))
}

/// The seed's `remove`.
#[utoipa::path(
    delete,
    path = "/v1/configs/{uuid}",
    tag = "configs",
    params(("uuid" = String, Path, description = "record uuid")),
    responses((status = 200, description = "removed", body = cm_api::answer::UuidRemoved), Errors),
    security(("bearer" = [])),
)]
pub async fn remove(
    State(app): State<Arc<App>>,
    _: Admin,
    Path(id): Path<String>,
) -> ApiResult<Json<UuidRemoved>> {
    Ok(Json(configs::remove(&app, &id).await?))
}

/// The seed's `remove_stale(timeout) -> removed`.
#[utoipa::path(
    post,
    path = "/v1/configs/remove-stale",
    tag = "configs",
    request_body = cm_api::boot::RemoveStale,
    responses((status = 200, description = "OK", body = cm_api::boot::Removed), Errors),
    security(("bearer" = [])),
)]
pub async fn remove_stale(
    State(app): State<Arc<App>>,
    _: Admin,
    Body(req): Body<RemoveStale>,
) -> ApiResult<Json<Removed>> {
    Ok(Json(configs::remove_stale(&app, req).await?))
}

#[utoipa::path(
    post,
    path = "/v1/config-domains",
    tag = "configs",
    request_body = cm_api::boot::CreateDomain,
    responses((status = 201, description = "created", body = cm_api::boot::DomainCreated), Errors),
    security(("bearer" = [])),
)]
pub async fn create_domain(
    State(app): State<Arc<App>>,
    _: Admin,
    Body(req): Body<CreateDomain>,
) -> ApiResult<(StatusCode, Json<DomainCreated>)> {
    Ok((
        StatusCode::CREATED,
        Json(configs::create_domain(&app, req).await?),
    ))
}

#[utoipa::path(
    get,
    path = "/v1/config-domains",
    tag = "configs",
    responses((status = 200, description = "OK", body = Vec<cm_api::boot::Domain>), Errors),
    security(("bearer" = [])),
)]
pub async fn list_domains(State(app): State<Arc<App>>, _: Admin) -> ApiResult<Json<Vec<Domain>>> {
    Ok(Json(configs::list_domains(&app).await?))
}

#[utoipa::path(
    delete,
    path = "/v1/config-domains/{name}",
    tag = "configs",
    params(("name" = String, Path, description = "domain name")),
    responses((status = 200, description = "deleted", body = cm_api::answer::NameDeleted), Errors),
    security(("bearer" = [])),
)]
pub async fn delete_domain(
    State(app): State<Arc<App>>,
    _: Admin,
    Path(name): Path<String>,
) -> ApiResult<Json<NameDeleted>> {
    Ok(Json(configs::delete_domain(&app, name).await?))
}
