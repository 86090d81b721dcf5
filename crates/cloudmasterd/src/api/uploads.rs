//! `/v1/uploads`: image files on their way in (docs/api.md "Uploads").
//!
//! `POST` declares one (size and sha256, or a URL the master fetches),
//! `PATCH` appends bytes at `Upload-Offset`, `GET` says how far it is,
//! `DELETE` drops it. `POST /v1/images` then names complete uploads.

use super::bearer::Admin;
use super::error::{ApiErr, ApiResult, Body};
use super::openapi::{Errors, UploadOffset};
use crate::state::App;
use crate::store::{now_ms, UploadRow};
use crate::uploads::{self, fetch, Received};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use cm_api::answer::{IdDeleted, Sha256Query};
use cm_api::upload::{check_sha256, CreateUpload, Upload, UploadState, OFFSET_HEADER};
use cm_api::ErrorCode;
use sha2::Digest;
use std::sync::Arc;
use uuid::Uuid;

pub fn parse_id(field: &str, s: &str) -> ApiResult<Uuid> {
    Uuid::parse_str(s).map_err(|_| {
        ApiErr::invalid(
            field,
            format!(
                "'{}' is not an upload id",
                cm_api::validate::printable(&s.chars().take(80).collect::<String>())
            ),
        )
    })
}

fn with_offset(up: Upload, status: StatusCode) -> Response {
    let offset = HeaderValue::from(up.offset);
    let mut r = (status, Json(up)).into_response();
    r.headers_mut().insert(OFFSET_HEADER, offset);
    r
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
    if let Some(h) = &q.sha256 {
        check_sha256("sha256", h)?;
    }
    let rows = app.db(|s| s.list_uploads()).await?;
    Ok(Json(
        rows.iter()
            .filter(|r| match (&q.sha256, &r.sha256) {
                (Some(want), Some(have)) => want.eq_ignore_ascii_case(have),
                (Some(_), None) => false,
                (None, _) => true,
            })
            .map(|r| app.uploads.to_wire(r))
            .collect(),
    ))
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
    let id = parse_id("id", &id)?;
    let row = app.db(move |s| s.get_upload(id)).await?;
    Ok(with_offset(app.uploads.to_wire(&row), StatusCode::OK))
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
    let max = app.uploads.settings.max_bytes;
    if let Some(h) = &req.sha256 {
        check_sha256("sha256", h)?;
    }
    let url = match (&req.url, req.size) {
        (Some(u), None) => Some(fetch::check_url(u)?),
        (Some(_), Some(_)) => {
            return Err(ApiErr::invalid(
                "size",
                "give size for an upload, or url for an import, not both",
            ))
        }
        (None, None) => {
            return Err(ApiErr::invalid(
                "size",
                "size (bytes) and sha256 are required, or a url to import",
            ))
        }
        (None, Some(0)) => return Err(ApiErr::invalid("size", "an image file cannot be empty")),
        (None, Some(size)) => {
            if req.sha256.is_none() {
                return Err(ApiErr::invalid(
                    "sha256",
                    "sha256 of the data is required: the master checks it when the last byte is in",
                ));
            }
            if size > max {
                return Err(ApiErr::new(
                    ErrorCode::BodyTooLarge,
                    format!("{size} bytes is more than this master's limit of {max} bytes"),
                )
                .field("size"));
            }
            let dir = app.settings.uploads_dir();
            if let Some(free) = uploads::free_bytes(&dir) {
                if size > free {
                    return Err(ApiErr::new(
                        ErrorCode::InsufficientStorage,
                        format!("the master has {free} bytes free, not {size}"),
                    )
                    .field("size"));
                }
            }
            None
        }
    };
    let open = app
        .db(|s| s.list_uploads())
        .await?
        .into_iter()
        .filter(|r| r.state != UploadState::Failed)
        .count();
    if open >= uploads::MAX_UPLOADS {
        return Err(ApiErr::new(
            ErrorCode::Conflict,
            format!("{open} uploads are open already; finish or delete one (GET /v1/uploads)"),
        ));
    }
    let id = Uuid::new_v4();
    let now = now_ms();
    let row = UploadRow {
        id,
        state: if url.is_some() {
            UploadState::Fetching
        } else {
            UploadState::Receiving
        },
        size: req.size,
        sha256: req.sha256.as_ref().map(|h| h.to_ascii_lowercase()),
        url: url.as_ref().map(|u| u.to_string()),
        error: None,
        created_at: now,
        updated_at: now,
    };
    // The file first: a crash before the row leaves a file the next start
    // removes, never a row without its file.
    let path = app.uploads.file(id);
    std::fs::File::create(&path)
        .map_err(|e| ApiErr::internal(format!("{}: {e}", path.display())))?;
    let rec = row.clone();
    if let Err(e) = app.db(move |s| s.insert_upload(&rec)).await {
        app.uploads.discard(id);
        return Err(e.into());
    }
    if let Some(u) = url {
        tokio::spawn(fetch::run(app.clone(), id, u, row.sha256.clone()));
    }
    Ok(with_offset(app.uploads.to_wire(&row), StatusCode::CREATED))
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
    let id = parse_id("id", &id)?;
    check_content_type(&headers)?;
    let offset = header_offset(&headers)?;
    let slot = app.uploads.slot(id);
    let Ok(mut slot) = slot.try_lock() else {
        return Err(ApiErr::new(
            ErrorCode::Conflict,
            format!("another request is using upload {id}; try again when it ends"),
        ));
    };
    let row = app.db(move |s| s.get_upload(id)).await?;
    match row.state {
        UploadState::Receiving => {}
        other => {
            return Err(ApiErr::new(
                ErrorCode::Conflict,
                format!("upload {id} is {}: it takes no more bytes", other.as_str()),
            ))
        }
    }
    let (Some(size), Some(want)) = (row.size, row.sha256.clone()) else {
        return Err(ApiErr::internal(format!(
            "upload {id} has no size or sha256"
        )));
    };
    let path = app.uploads.file(id);
    let have = app.uploads.offset(id);
    if offset != have {
        return Err(ApiErr::new(
            ErrorCode::Conflict,
            format!("upload {id} holds {have} bytes: send from offset {have}, not {offset}"),
        )
        .field(OFFSET_HEADER));
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| have + n > size) {
        return Err(too_long(id, size, have));
    }
    let mut hash = match slot.hashed.take() {
        Some((n, h)) if n == have => h,
        _ => {
            let p = path.clone();
            tokio::task::spawn_blocking(move || uploads::hash_prefix(&p, have))
                .await
                .map_err(|e| ApiErr::internal(format!("hash task: {e}")))?
                .map_err(|e| ApiErr::internal(format!("reading upload {id}: {e}")))?
        }
    };
    let (len, outcome) = uploads::receive(&path, have, size, &mut hash, body, uploads::IDLE)
        .await
        .map_err(|e| ApiErr::internal(format!("writing upload {id}: {e}")))?;
    match outcome {
        Received::TooLong => {
            slot.hashed = Some((len, hash));
            return Err(too_long(id, size, have));
        }
        Received::Cut(why) => {
            slot.hashed = Some((len, hash));
            return Err(ApiErr::new(
                ErrorCode::MalformedBody,
                format!("the body ended early ({why}); upload {id} holds {len} bytes, resume from there"),
            ));
        }
        Received::Ended => {}
    }
    if len < size {
        slot.hashed = Some((len, hash));
        return Ok(with_offset(app.uploads.to_wire(&row), StatusCode::OK));
    }
    let got = hex::encode(hash.finalize());
    if got != want {
        app.db(move |s| s.delete_upload(id)).await?;
        drop(slot);
        app.uploads.discard(id);
        return Err(ApiErr::invalid(
            "sha256",
            format!("the data's sha256 is {got}, not the declared {want}: upload {id} is removed"),
        ));
    }
    let done = UploadRow {
        state: UploadState::Complete,
        updated_at: now_ms(),
        ..row
    };
    let rec = done.clone();
    app.db(move |s| s.update_upload(&rec)).await?;
    Ok(with_offset(app.uploads.to_wire(&done), StatusCode::OK))
}

fn too_long(id: Uuid, size: u64, have: u64) -> ApiErr {
    ApiErr::new(
        ErrorCode::BodyTooLarge,
        format!(
            "upload {id} is {size} bytes and holds {have}: the body may carry at most {} more",
            size - have
        ),
    )
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
    let id = parse_id("id", &id)?;
    let slot = app.uploads.slot(id);
    let Ok(_guard) = slot.try_lock() else {
        return Err(ApiErr::new(
            ErrorCode::Conflict,
            format!("upload {id} is in use (being written, fetched or made into an image)"),
        ));
    };
    app.db(move |s| s.get_upload(id)).await?;
    app.db(move |s| s.delete_upload(id)).await?;
    app.uploads.discard(id);
    Ok(Json(IdDeleted { id, deleted: true }))
}

/// A complete upload, locked for `POST /v1/images` to take.
pub struct Taken {
    pub row: UploadRow,
    /// Held until the image is recorded: no PATCH, DELETE or expiry meanwhile.
    pub _guard: tokio::sync::OwnedMutexGuard<uploads::Slot>,
}

/// Lock a complete upload for an image; `field` names it in errors.
pub async fn take(app: &Arc<App>, field: &str, id: Uuid, want: Option<&str>) -> ApiResult<Taken> {
    let guard = app.uploads.slot(id).try_lock_owned().map_err(|_| {
        ApiErr::new(
            ErrorCode::Conflict,
            format!("upload {id} is in use (being written, fetched or made into an image)"),
        )
        .field(field)
    })?;
    let row = app
        .db(move |s| s.get_upload(id))
        .await
        .map_err(|e| e.field(field))?;
    if row.state != UploadState::Complete {
        let why = match (&row.state, &row.error) {
            (UploadState::Failed, Some(e)) => format!("failed: {}", e.message),
            (UploadState::Fetching, _) => "still being fetched".to_string(),
            _ => format!(
                "not complete: it holds {} of {} bytes",
                app.uploads.offset(id),
                row.size.unwrap_or(0)
            ),
        };
        return Err(ApiErr::new(ErrorCode::Conflict, format!("upload {id} is {why}")).field(field));
    }
    let have = row.sha256.clone().unwrap_or_default();
    if let Some(w) = want {
        if !w.eq_ignore_ascii_case(&have) {
            return Err(ApiErr::invalid(
                &format!("{field}.sha256"),
                format!("upload {id} has sha256 {have}, not {w}"),
            ));
        }
    }
    Ok(Taken { row, _guard: guard })
}
