//! `/v1/images` and `/v1/flavors`. The rules are in `app::catalog`.

use super::bearer::Admin;
use super::error::{ApiResult, Body};
use super::extract::Path;
use super::openapi::Errors;
use crate::app::catalog;
use crate::state::App;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use cm_api::answer::NameDeleted;
use cm_api::image::{CreateFlavor, CreateImage, Flavor, Image};
use std::sync::Arc;

#[utoipa::path(
    get,
    path = "/v1/images",
    tag = "images",
    responses((status = 200, description = "OK", body = Vec<cm_api::image::Image>), Errors),
    security(("bearer" = [])),
)]
pub async fn list_images(State(app): State<Arc<App>>, _: Admin) -> ApiResult<Json<Vec<Image>>> {
    Ok(Json(catalog::list_images(&app).await?))
}

#[utoipa::path(
    get,
    path = "/v1/images/{name}",
    tag = "images",
    params(("name" = String, Path, description = "image name")),
    responses((status = 200, description = "OK", body = cm_api::image::Image), Errors),
    security(("bearer" = [])),
)]
pub async fn show_image(
    State(app): State<Arc<App>>,
    _: Admin,
    Path(name): Path<String>,
) -> ApiResult<Json<Image>> {
    Ok(Json(catalog::show_image(&app, name).await?))
}

#[utoipa::path(
    post,
    path = "/v1/images",
    tag = "images",
    request_body = cm_api::image::CreateImage,
    responses((status = 201, description = "added", body = cm_api::image::Image), Errors),
    security(("bearer" = [])),
)]
pub async fn create_image(
    State(app): State<Arc<App>>,
    _: Admin,
    Body(req): Body<CreateImage>,
) -> ApiResult<(StatusCode, Json<Image>)> {
    Ok((
        StatusCode::CREATED,
        Json(catalog::create_image(&app, req).await?),
    ))
}

#[utoipa::path(
    delete,
    path = "/v1/images/{name}",
    tag = "images",
    params(("name" = String, Path, description = "image name")),
    responses((status = 200, description = "deleted", body = cm_api::answer::NameDeleted), Errors),
    security(("bearer" = [])),
)]
pub async fn delete_image(
    State(app): State<Arc<App>>,
    _: Admin,
    Path(name): Path<String>,
) -> ApiResult<Json<NameDeleted>> {
    Ok(Json(catalog::delete_image(&app, name).await?))
}

#[utoipa::path(
    get,
    path = "/v1/flavors",
    tag = "flavors",
    responses((status = 200, description = "OK", body = Vec<cm_api::image::Flavor>), Errors),
    security(("bearer" = [])),
)]
pub async fn list_flavors(State(app): State<Arc<App>>, _: Admin) -> ApiResult<Json<Vec<Flavor>>> {
    Ok(Json(catalog::list_flavors(&app).await?))
}

#[utoipa::path(
    get,
    path = "/v1/flavors/{name}",
    tag = "flavors",
    params(("name" = String, Path, description = "flavor name")),
    responses((status = 200, description = "OK", body = cm_api::image::Flavor), Errors),
    security(("bearer" = [])),
)]
pub async fn show_flavor(
    State(app): State<Arc<App>>,
    _: Admin,
    Path(name): Path<String>,
) -> ApiResult<Json<Flavor>> {
    Ok(Json(catalog::show_flavor(&app, name).await?))
}

#[utoipa::path(
    post,
    path = "/v1/flavors",
    tag = "flavors",
    request_body = cm_api::image::CreateFlavor,
    responses((status = 201, description = "created", body = cm_api::image::Flavor), Errors),
    security(("bearer" = [])),
)]
pub async fn create_flavor(
    State(app): State<Arc<App>>,
    _: Admin,
    Body(req): Body<CreateFlavor>,
) -> ApiResult<(StatusCode, Json<Flavor>)> {
    Ok((
        StatusCode::CREATED,
        Json(catalog::create_flavor(&app, req).await?),
    ))
}

#[utoipa::path(
    delete,
    path = "/v1/flavors/{name}",
    tag = "flavors",
    params(("name" = String, Path, description = "flavor name")),
    responses((status = 200, description = "deleted", body = cm_api::answer::NameDeleted), Errors),
    security(("bearer" = [])),
)]
pub async fn delete_flavor(
    State(app): State<Arc<App>>,
    _: Admin,
    Path(name): Path<String>,
) -> ApiResult<Json<NameDeleted>> {
    Ok(Json(catalog::delete_flavor(&app, name).await?))
}
