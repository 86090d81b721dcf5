//! `/v1/uploads`: image files on their way in (docs/api.md "Uploads").
//!
//! `POST` declares one (size and sha256, or a URL the master fetches),
//! `PATCH` appends bytes at `Upload-Offset`, `GET` says how far it is,
//! `DELETE` drops it. `POST /v1/images` then names complete uploads. The
//! rules are in `app::uploads`.

use super::bearer::Admin;
use super::error::{ApiErr, ApiResult, Body};
use super::openapi::{Errors, UploadOffset};
use crate::app::uploads;
use crate::state::App;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use cm_api::answer::{IdDeleted, Sha256Query};
use cm_api::upload::{CreateUpload, Upload, OFFSET_HEADER};
use cm_api::ErrorCode;
use std::sync::Arc;

fn with_offset(up: Upload, status: StatusCode) -> Response {
    let offset = HeaderValue::from(up.offset);
    let mut r = (status, Json(up)).into_response();
    r.headers_mut().insert(OFFSET_HEADER, offset);
    r
}

fn header_offset(headers: &HeaderMap) -> ApiResult<u64> {
    headers
        .get(OFFSET_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .ok_or_else(|| {
            ApiErr::invalid(
                OFFSET_HEADER,
                format!("{OFFSET_HEADER}: the offset this body starts at is required (GET the upload for it)"),
            )
        })
}

fn check_content_type(headers: &HeaderMap) -> ApiResult<()> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let ct = ct.split(';').next().unwrap_or("").trim();
    if ct.eq_ignore_ascii_case(cm_api::upload::CONTENT_TYPE)
        || ct.eq_ignore_ascii_case("application/octet-stream")
    {
        return Ok(());
    }
    Err(ApiErr::new(
        ErrorCode::MalformedBody,
        format!(
            "expected Content-Type: {} (the file's bytes)",
            cm_api::upload::CONTENT_TYPE
        ),
    ))
}

/// `GET /v1/uploads[?sha256=HEX]`: a client looks for its unfinished
/// upload of the same bytes, to resume it.
#[utoipa::path(
    get,
    path = "/v1/uploads",
    tag = "uploads",
    params(cm_api::answer::Sha256Query),
    responses((status = 200, description = "OK", body = Vec<cm_api::upload::Upload>), Errors),
    security(("bearer" = [])),
)]
pub async fn list(
    State(app): State<Arc<App>>,
    _: Admin,
    Query(q): Query<Sha256Query>,
) -> ApiResult<Json<Vec<Upload>>> {
    Ok(Json(uploads::list(&app, q.sha256).await?))
}

#[utoipa::path(
    get,
    path = "/v1/uploads/{id}",
    tag = "uploads",
    params(("id" = String, Path, description = "upload id (a uuid)")),
    responses((status = 200, description = "the upload (Upload-Offset header: bytes received)", body = cm_api::upload::Upload), Errors),
    security(("bearer" = [])),
)]
pub async fn show(
    State(app): State<Arc<App>>,
    _: Admin,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    Ok(with_offset(uploads::show(&app, &id).await?, StatusCode::OK))
}

#[utoipa::path(
    post,
    path = "/v1/uploads",
    tag = "uploads",
    request_body = cm_api::upload::CreateUpload,
    responses((status = 201, description = "created (Upload-Offset header: bytes received)", body = cm_api::upload::Upload), Errors),
    security(("bearer" = [])),
)]
pub async fn create(
    State(app): State<Arc<App>>,
    _: Admin,
    Body(req): Body<CreateUpload>,
) -> ApiResult<Response> {
    Ok(with_offset(
        uploads::create(&app, req).await?,
        StatusCode::CREATED,
    ))
}

/// `PATCH /v1/uploads/{id}`: append the body at `Upload-Offset`. The body
/// streams to disk (this route has no body limit but the upload's size);
/// bytes received before a broken connection are kept, to resume from.
#[utoipa::path(
    patch,
    path = "/v1/uploads/{id}",
    tag = "uploads",
    params(("id" = String, Path, description = "upload id (a uuid)"), UploadOffset),
    request_body(content = Vec<u8>, content_type = "application/offset+octet-stream", description = "the bytes at Upload-Offset"),
    responses((status = 200, description = "bytes appended", body = cm_api::upload::Upload), Errors),
    security(("bearer" = [])),
)]
pub async fn write(
    State(app): State<Arc<App>>,
    _: Admin,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> ApiResult<Response> {
    let id = uploads::parse_id("id", &id)?;
    check_content_type(&headers)?;
    let offset = header_offset(&headers)?;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let up = uploads::write(&app, id, offset, declared, body).await?;
    Ok(with_offset(up, StatusCode::OK))
}

#[utoipa::path(
    delete,
    path = "/v1/uploads/{id}",
    tag = "uploads",
    params(("id" = String, Path, description = "upload id (a uuid)")),
    responses((status = 200, description = "deleted", body = cm_api::answer::IdDeleted), Errors),
    security(("bearer" = [])),
)]
pub async fn delete(
    State(app): State<Arc<App>>,
    _: Admin,
    Path(id): Path<String>,
) -> ApiResult<Json<IdDeleted>> {
    let id = uploads::delete(&app, &id).await?;
    Ok(Json(IdDeleted { id, deleted: true }))
}
