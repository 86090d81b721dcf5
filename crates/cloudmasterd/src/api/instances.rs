//! `/v1/instances`: create (placed by the scheduler), list, show, the power
//! actions (each returns an operation), delete, console. The rules are in
//! `app::instances`.

use super::bearer::Admin;
use super::encoding;
use super::error::{ApiResult, Body};
use super::extract::{Path, Query};
use super::openapi::Errors;
use crate::app::{instance_list, instances};
use crate::idempotency::Keyed;
use crate::state::App;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::{Extension, Json};
use cm_api::answer::ConsoleQuery;
use cm_api::instance::{ConsoleLog, CreateInstance, Instance, InstanceAccepted, StopInstance};
use cm_api::operation::Operation;
use std::sync::Arc;

#[utoipa::path(
    get,
    path = "/v1/instances",
    tag = "instances",
    responses((status = 200, description = "OK (gzip when the request accepts it)", body = Vec<cm_api::instance::Instance>), Errors),
    security(("bearer" = [])),
)]
pub async fn list(
    State(app): State<Arc<App>>,
    _: Admin,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let list = instance_list::list(&app).await?;
    let gzip = match encoding::worth_gzip(&headers, list.json.len()) {
        true => Some(list.gzipped().await?),
        false => None,
    };
    Ok(encoding::json(list.json.clone(), gzip))
}

#[utoipa::path(
    get,
    path = "/v1/instances/{name}",
    tag = "instances",
    params(("name" = String, Path, description = "instance name")),
    responses((status = 200, description = "OK", body = cm_api::instance::Instance), Errors),
    security(("bearer" = [])),
)]
pub async fn show(
    State(app): State<Arc<App>>,
    _: Admin,
    Path(name): Path<String>,
) -> ApiResult<Json<Instance>> {
    Ok(Json(instances::show(&app, name).await?))
}

#[utoipa::path(
    post,
    path = "/v1/instances",
    tag = "instances",
    request_body = cm_api::instance::CreateInstance,
    responses((status = 202, description = "placed; the operation tells when it runs", body = cm_api::instance::InstanceAccepted), Errors),
    security(("bearer" = [])),
)]
pub async fn create(
    State(app): State<Arc<App>>,
    _: Admin,
    keyed: Option<Extension<Keyed>>,
    Body(req): Body<CreateInstance>,
) -> ApiResult<(StatusCode, Json<InstanceAccepted>)> {
    let accepted = instances::create(&app, keyed.map(|Extension(k)| k), req).await?;
    Ok((StatusCode::ACCEPTED, Json(accepted)))
}

#[utoipa::path(
    post,
    path = "/v1/instances/{name}/start",
    tag = "instances",
    params(("name" = String, Path, description = "instance name")),
    responses((status = 202, description = "start requested", body = cm_api::operation::Operation), Errors),
    security(("bearer" = [])),
)]
pub async fn start(
    State(app): State<Arc<App>>,
    _: Admin,
    keyed: Option<Extension<Keyed>>,
    Path(name): Path<String>,
) -> ApiResult<(StatusCode, Json<Operation>)> {
    let op = instances::start(&app, keyed.map(|Extension(k)| k), name).await?;
    Ok((StatusCode::ACCEPTED, Json(op)))
}

#[utoipa::path(
    post,
    path = "/v1/instances/{name}/stop",
    tag = "instances",
    params(("name" = String, Path, description = "instance name")),
    request_body = Option<cm_api::instance::StopInstance>,
    responses((status = 202, description = "stop requested", body = cm_api::operation::Operation), Errors),
    security(("bearer" = [])),
)]
pub async fn stop(
    State(app): State<Arc<App>>,
    _: Admin,
    keyed: Option<Extension<Keyed>>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<(StatusCode, Json<Operation>)> {
    // The body is optional: an empty one means the defaults.
    let req: StopInstance = if body.iter().all(u8::is_ascii_whitespace) {
        StopInstance::default()
    } else {
        super::error::parse(&body)?
    };
    let op = instances::stop(&app, keyed.map(|Extension(k)| k), name, req).await?;
    Ok((StatusCode::ACCEPTED, Json(op)))
}

#[utoipa::path(
    post,
    path = "/v1/instances/{name}/reboot",
    tag = "instances",
    params(("name" = String, Path, description = "instance name")),
    responses((status = 202, description = "reboot requested", body = cm_api::operation::Operation), Errors),
    security(("bearer" = [])),
)]
pub async fn reboot(
    State(app): State<Arc<App>>,
    _: Admin,
    keyed: Option<Extension<Keyed>>,
    Path(name): Path<String>,
) -> ApiResult<(StatusCode, Json<Operation>)> {
    let op = instances::reboot(&app, keyed.map(|Extension(k)| k), name).await?;
    Ok((StatusCode::ACCEPTED, Json(op)))
}

#[utoipa::path(
    delete,
    path = "/v1/instances/{name}",
    tag = "instances",
    params(("name" = String, Path, description = "instance name")),
    responses((status = 202, description = "delete requested", body = cm_api::operation::Operation), Errors),
    security(("bearer" = [])),
)]
pub async fn delete(
    State(app): State<Arc<App>>,
    _: Admin,
    keyed: Option<Extension<Keyed>>,
    Path(name): Path<String>,
) -> ApiResult<(StatusCode, Json<Operation>)> {
    let op = instances::delete(&app, keyed.map(|Extension(k)| k), name).await?;
    Ok((StatusCode::ACCEPTED, Json(op)))
}

#[utoipa::path(
    get,
    path = "/v1/instances/{name}/console",
    tag = "instances",
    params(("name" = String, Path, description = "instance name"), cm_api::answer::ConsoleQuery),
    responses((status = 200, description = "OK", body = cm_api::instance::ConsoleLog), Errors),
    security(("bearer" = [])),
)]
pub async fn console(
    State(app): State<Arc<App>>,
    _: Admin,
    Path(name): Path<String>,
    Query(q): Query<ConsoleQuery>,
) -> ApiResult<Json<ConsoleLog>> {
    Ok(Json(instances::console(&app, name, q.bytes).await?))
}
