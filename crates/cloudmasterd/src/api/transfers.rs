//! Transfers (docs/storage.md, "Transfers"): hosts send and fetch disks
//! through the master (`/v1/agent/transfers/{id}`); users move volumes
//! (`POST /v1/volumes/{name}/move`) and make images from instances
//! (`POST /v1/images/from-instance`). The rules are in `app::transfers`,
//! `app::volume_moves` and `app::image_builds`.

use super::bearer::{Admin, HostAgent};
use super::error::{ApiErr, ApiResult, Body};
use super::extract::Path;
use super::openapi::Errors;
use crate::app::transfers::PutError;
use crate::app::{image_builds, transfers, volume_moves};
use crate::idempotency::Keyed;
use crate::state::App;
use axum::body::Body as RespBody;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use cm_api::answer::Ack;
use cm_api::image::{ImageAccepted, ImageFromInstance};
use cm_api::volume::{MoveVolume, VolumeAccepted};
use cm_api::{ApiError, ErrorBody, ErrorCode};
use std::sync::Arc;
use uuid::Uuid;

#[utoipa::path(
    put,
    path = "/v1/agent/transfers/{id}",
    tag = "agent",
    params(("id" = String, Path, description = "transfer id (a uuid)"), ("x-cm-sha256" = String, Header, description = "the body's sha256, 64 lowercase hex digits")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "the flattened qcow2 file"),
    responses((status = 200, description = "stored and checked (or received before)", body = cm_api::answer::Ack), (status = 422, description = "the body's sha256 is not x-cm-sha256: nothing kept"), Errors),
    security(("bearer" = [])),
)]
pub async fn put(
    State(app): State<Arc<App>>,
    HostAgent(host): HostAgent,
    Path(id): Path<Uuid>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let sha = headers.get("x-cm-sha256").and_then(|v| v.to_str().ok());
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match transfers::put(&app, host, id, sha, declared, body).await {
        Ok(_) => Json(Ack {}).into_response(),
        Err(PutError::Other(e)) => ApiErr::from(e).into_response(),
        Err(e @ PutError::Mismatch { .. }) => {
            let body = ApiError {
                error: ErrorBody {
                    code: ErrorCode::InvalidInput,
                    message: e.to_string(),
                    field: Some("x-cm-sha256".into()),
                },
            };
            (StatusCode::UNPROCESSABLE_ENTITY, Json(body)).into_response()
        }
    }
}

#[utoipa::path(
    get,
    path = "/v1/agent/transfers/{id}",
    tag = "agent",
    params(("id" = String, Path, description = "transfer id (a uuid)")),
    responses((status = 200, description = "the file", body = Vec<u8>, content_type = "application/octet-stream"), Errors),
    security(("bearer" = [])),
)]
pub async fn get(
    State(app): State<Arc<App>>,
    HostAgent(host): HostAgent,
    Path(id): Path<Uuid>,
) -> ApiResult<Response> {
    let (path, size) = transfers::get(&app, host, id).await?;
    let f = tokio::fs::File::open(&path)
        .await
        .map_err(|e| ApiErr::internal(format!("transfer file {}: {e}", path.display())))?;
    let body = RespBody::from_stream(tokio_util::io::ReaderStream::with_capacity(f, 1 << 20));
    Response::builder()
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, size)
        .body(body)
        .map_err(|e| ApiErr::internal(e.to_string()))
}

#[utoipa::path(
    post,
    path = "/v1/volumes/{name}/move",
    tag = "volumes",
    params(("name" = String, Path, description = "volume name or id")),
    request_body = cm_api::volume::MoveVolume,
    responses((status = 202, description = "move recorded; the operation tells when the new host has it", body = cm_api::volume::VolumeAccepted), Errors),
    security(("bearer" = [])),
)]
pub async fn move_volume(
    State(app): State<Arc<App>>,
    _: Admin,
    keyed: Option<Extension<Keyed>>,
    Path(name): Path<String>,
    Body(req): Body<MoveVolume>,
) -> ApiResult<(StatusCode, Json<VolumeAccepted>)> {
    let k = keyed.map(|Extension(k)| k);
    let a = volume_moves::move_volume(&app, k, name, req).await?;
    Ok((StatusCode::ACCEPTED, Json(a)))
}

#[utoipa::path(
    post,
    path = "/v1/images/from-instance",
    tag = "images",
    request_body = cm_api::image::ImageFromInstance,
    responses((status = 202, description = "recorded; the operation's target_id is the new image's id", body = cm_api::image::ImageAccepted), Errors),
    security(("bearer" = [])),
)]
pub async fn from_instance(
    State(app): State<Arc<App>>,
    _: Admin,
    Body(req): Body<ImageFromInstance>,
) -> ApiResult<(StatusCode, Json<ImageAccepted>)> {
    let a = image_builds::create(&app, req).await?;
    Ok((StatusCode::ACCEPTED, Json(a)))
}
