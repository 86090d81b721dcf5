//! `/v1/volumes` (docs/storage.md): create (placed on a host with room),
//! list, show, and the slow actions, each answered `202` with the volume
//! and its operation. The rules are in `app::volumes`.

use super::bearer::Admin;
use super::error::{ApiResult, Body};
use super::extract::Path;
use super::openapi::Errors;
use crate::app::volumes;
use crate::idempotency::Keyed;
use crate::state::App;
use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use cm_api::volume::{
    AttachVolume, CreateVolume, DetachVolume, ResizeVolume, Volume, VolumeAccepted,
};
use std::sync::Arc;

type Accepted = ApiResult<(StatusCode, Json<VolumeAccepted>)>;

fn accepted(a: VolumeAccepted) -> (StatusCode, Json<VolumeAccepted>) {
    (StatusCode::ACCEPTED, Json(a))
}

#[utoipa::path(
    get,
    path = "/v1/volumes",
    tag = "volumes",
    responses((status = 200, description = "OK", body = Vec<cm_api::volume::Volume>), Errors),
    security(("bearer" = [])),
)]
pub async fn list(State(app): State<Arc<App>>, _: Admin) -> ApiResult<Json<Vec<Volume>>> {
    Ok(Json(volumes::list(&app).await?))
}

#[utoipa::path(
    post,
    path = "/v1/volumes",
    tag = "volumes",
    request_body = cm_api::volume::CreateVolume,
    responses((status = 202, description = "placed; the operation tells when its host made it", body = cm_api::volume::VolumeAccepted), Errors),
    security(("bearer" = [])),
)]
pub async fn create(
    State(app): State<Arc<App>>,
    _: Admin,
    keyed: Option<Extension<Keyed>>,
    Body(req): Body<CreateVolume>,
) -> Accepted {
    let k = keyed.map(|Extension(k)| k);
    Ok(accepted(volumes::create(&app, k, req).await?))
}

#[utoipa::path(
    get,
    path = "/v1/volumes/{name}",
    tag = "volumes",
    params(("name" = String, Path, description = "volume name or id")),
    responses((status = 200, description = "OK", body = cm_api::volume::Volume), Errors),
    security(("bearer" = [])),
)]
pub async fn show(
    State(app): State<Arc<App>>,
    _: Admin,
    Path(name): Path<String>,
) -> ApiResult<Json<Volume>> {
    Ok(Json(volumes::show(&app, name).await?))
}

#[utoipa::path(
    delete,
    path = "/v1/volumes/{name}",
    tag = "volumes",
    params(("name" = String, Path, description = "volume name or id")),
    responses((status = 202, description = "delete recorded; done when its host removed the file", body = cm_api::volume::VolumeAccepted), Errors),
    security(("bearer" = [])),
)]
pub async fn delete(
    State(app): State<Arc<App>>,
    _: Admin,
    keyed: Option<Extension<Keyed>>,
    Path(name): Path<String>,
) -> Accepted {
    let k = keyed.map(|Extension(k)| k);
    Ok(accepted(volumes::delete(&app, k, name).await?))
}

#[utoipa::path(
    post,
    path = "/v1/volumes/{name}/resize",
    tag = "volumes",
    params(("name" = String, Path, description = "volume name or id")),
    request_body = cm_api::volume::ResizeVolume,
    responses((status = 202, description = "grow recorded", body = cm_api::volume::VolumeAccepted), Errors),
    security(("bearer" = [])),
)]
pub async fn resize(
    State(app): State<Arc<App>>,
    _: Admin,
    keyed: Option<Extension<Keyed>>,
    Path(name): Path<String>,
    Body(req): Body<ResizeVolume>,
) -> Accepted {
    let k = keyed.map(|Extension(k)| k);
    Ok(accepted(volumes::resize(&app, k, name, req).await?))
}

#[utoipa::path(
    post,
    path = "/v1/volumes/{name}/attach",
    tag = "volumes",
    params(("name" = String, Path, description = "volume name or id")),
    request_body = cm_api::volume::AttachVolume,
    responses((status = 202, description = "attach recorded", body = cm_api::volume::VolumeAccepted), Errors),
    security(("bearer" = [])),
)]
pub async fn attach(
    State(app): State<Arc<App>>,
    _: Admin,
    keyed: Option<Extension<Keyed>>,
    Path(name): Path<String>,
    Body(req): Body<AttachVolume>,
) -> Accepted {
    let k = keyed.map(|Extension(k)| k);
    Ok(accepted(volumes::attach(&app, k, name, req).await?))
}

#[utoipa::path(
    post,
    path = "/v1/volumes/{name}/detach",
    tag = "volumes",
    params(("name" = String, Path, description = "volume name or id")),
    request_body = Option<cm_api::volume::DetachVolume>,
    responses((status = 202, description = "detach recorded", body = cm_api::volume::VolumeAccepted), Errors),
    security(("bearer" = [])),
)]
pub async fn detach(
    State(app): State<Arc<App>>,
    _: Admin,
    keyed: Option<Extension<Keyed>>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Accepted {
    // The body is optional: an empty one means no force.
    let req: DetachVolume = if body.iter().all(u8::is_ascii_whitespace) {
        DetachVolume::default()
    } else {
        super::error::parse(&body)?
    };
    let k = keyed.map(|Extension(k)| k);
    Ok(accepted(volumes::detach(&app, k, name, req).await?))
}
