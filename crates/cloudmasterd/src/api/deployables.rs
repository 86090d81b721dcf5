//! `/v1/deployables`: specs applied, compared, rolled back and deleted
//! (issue 11). The rules are in `app::deployables`.

use super::bearer::Admin;
use super::error::{ApiResult, Body};
use super::extract::{Path, Query};
use super::openapi::Errors;
use crate::app::deployables;
use crate::state::App;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use cm_api::deploy::{
    ApplyAnswer, ApplyRequest, Deployable, DeployableList, RollbackRequest, SpecQuery, SpecSource,
};
use std::sync::Arc;

/// Apply a spec: a new deployable, a new generation, or nothing when it
/// equals the spec in force. A bad spec is refused whole (400 `invalid`,
/// `field` the first path, the message every `path: reason` a line).
#[utoipa::path(
    put,
    path = "/v1/deployables/{name}",
    tag = "deployables",
    params(("name" = String, Path, description = "deployable name (the spec's)")),
    request_body = cm_api::deploy::ApplyRequest,
    responses((status = 200, description = "applied (or unchanged)", body = cm_api::deploy::ApplyAnswer), Errors),
    security(("bearer" = [])),
)]
pub async fn apply(
    State(app): State<Arc<App>>,
    _: Admin,
    Path(name): Path<String>,
    Body(req): Body<ApplyRequest>,
) -> ApiResult<Json<ApplyAnswer>> {
    Ok(Json(deployables::apply(&app, &name, req).await?))
}

#[utoipa::path(
    get,
    path = "/v1/deployables",
    tag = "deployables",
    responses((status = 200, description = "live deployables with their slots", body = cm_api::deploy::DeployableList), Errors),
    security(("bearer" = [])),
)]
pub async fn list(State(app): State<Arc<App>>, _: Admin) -> ApiResult<Json<DeployableList>> {
    Ok(Json(deployables::list(&app).await?))
}

#[utoipa::path(
    get,
    path = "/v1/deployables/{name}",
    tag = "deployables",
    params(("name" = String, Path, description = "deployable name or id")),
    responses((status = 200, description = "with its spec in force and its slots", body = cm_api::deploy::Deployable), Errors),
    security(("bearer" = [])),
)]
pub async fn show(
    State(app): State<Arc<App>>,
    _: Admin,
    Path(name): Path<String>,
) -> ApiResult<Json<Deployable>> {
    Ok(Json(deployables::show(&app, &name).await?))
}

/// Delete: the deployable is `deleting` until its engine has removed its
/// instances.
#[utoipa::path(
    delete,
    path = "/v1/deployables/{name}",
    tag = "deployables",
    params(("name" = String, Path, description = "deployable name or id")),
    responses((status = 202, description = "being deleted", body = cm_api::deploy::Deployable), Errors),
    security(("bearer" = [])),
)]
pub async fn delete(
    State(app): State<Arc<App>>,
    _: Admin,
    Path(name): Path<String>,
) -> ApiResult<(StatusCode, Json<Deployable>)> {
    Ok((
        StatusCode::ACCEPTED,
        Json(deployables::delete(&app, &name).await?),
    ))
}

/// One generation's spec as it was sent.
#[utoipa::path(
    get,
    path = "/v1/deployables/{name}/spec",
    tag = "deployables",
    params(("name" = String, Path, description = "deployable name or id"), cm_api::deploy::SpecQuery),
    responses((status = 200, description = "the source", body = cm_api::deploy::SpecSource), Errors),
    security(("bearer" = [])),
)]
pub async fn spec(
    State(app): State<Arc<App>>,
    _: Admin,
    Path(name): Path<String>,
    Query(q): Query<SpecQuery>,
) -> ApiResult<Json<SpecSource>> {
    Ok(Json(deployables::source(&app, &name, q.generation).await?))
}

/// What applying this spec would change; writes nothing.
#[utoipa::path(
    post,
    path = "/v1/deployables/{name}/diff",
    tag = "deployables",
    params(("name" = String, Path, description = "deployable name (the spec's)")),
    request_body = cm_api::deploy::ApplyRequest,
    responses((status = 200, description = "the changes", body = cm_api::deploy::ApplyAnswer), Errors),
    security(("bearer" = [])),
)]
pub async fn diff(
    State(app): State<Arc<App>>,
    _: Admin,
    Path(name): Path<String>,
    Body(req): Body<ApplyRequest>,
) -> ApiResult<Json<ApplyAnswer>> {
    Ok(Json(deployables::diff(&app, &name, req).await?))
}

/// Apply an earlier generation's spec again, as a new generation.
#[utoipa::path(
    post,
    path = "/v1/deployables/{name}/rollback",
    tag = "deployables",
    params(("name" = String, Path, description = "deployable name or id")),
    request_body = cm_api::deploy::RollbackRequest,
    responses((status = 200, description = "rolled back (a new generation)", body = cm_api::deploy::ApplyAnswer), Errors),
    security(("bearer" = [])),
)]
pub async fn rollback(
    State(app): State<Arc<App>>,
    _: Admin,
    Path(name): Path<String>,
    Body(req): Body<RollbackRequest>,
) -> ApiResult<Json<ApplyAnswer>> {
    Ok(Json(deployables::rollback(&app, &name, req).await?))
}

/// Let the ladder run again on a failed slot (or every failed one): its
/// counters and back-off are cleared (`cm deploy repair`).
#[utoipa::path(
    post,
    path = "/v1/deployables/{name}/repair",
    tag = "deployables",
    params(("name" = String, Path, description = "deployable name or id")),
    request_body = cm_api::deploy::RepairRequest,
    responses((status = 200, description = "the slots repaired (none: none was failed)", body = cm_api::deploy::RepairAnswer), Errors),
    security(("bearer" = [])),
)]
pub async fn repair(
    State(app): State<Arc<App>>,
    _: Admin,
    Path(name): Path<String>,
    Body(req): Body<cm_api::deploy::RepairRequest>,
) -> ApiResult<Json<cm_api::deploy::RepairAnswer>> {
    Ok(Json(crate::app::repair::repair(&app, &name, req).await?))
}
