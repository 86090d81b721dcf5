//! Uploads, the image files on their way in (docs/api.md "Uploads"): their
//! declaration (size and sha256, or a URL the master fetches), the bytes
//! appended at an offset and checked when the last is in, their removal, and
//! the lock `POST /v1/images` takes on a complete one.

use super::{Error, Result};
use crate::state::App;
use crate::store::{now_ms, UploadRow};
use crate::uploads::{self, fetch, Received};
use cm_api::upload::{check_sha256, CreateUpload, Upload, UploadState, OFFSET_HEADER};
use sha2::Digest;
use std::sync::Arc;
use uuid::Uuid;

pub fn parse_id(field: &str, s: &str) -> Result<Uuid> {
    Uuid::parse_str(s).map_err(|_| {
        Error::invalid(
            field,
            format!(
                "'{}' is not an upload id",
                cm_api::validate::printable(&s.chars().take(80).collect::<String>())
            ),
        )
    })
}

/// The uploads, or those of the bytes with `sha256` (to resume one).
pub async fn list(app: &App, sha256: Option<String>) -> Result<Vec<Upload>> {
    if let Some(h) = &sha256 {
        check_sha256("sha256", h)?;
    }
    let rows = app.db(|s| s.list_uploads()).await?;
    Ok(rows
        .iter()
        .filter(|r| match (&sha256, &r.sha256) {
            (Some(want), Some(have)) => want.eq_ignore_ascii_case(have),
            (Some(_), None) => false,
            (None, _) => true,
        })
        .map(|r| app.uploads.to_wire(r))
        .collect())
}

pub async fn show(app: &App, id: &str) -> Result<Upload> {
    let id = parse_id("id", id)?;
    let row = app.db(move |s| s.get_upload(id)).await?;
    Ok(app.uploads.to_wire(&row))
}

/// The URL to fetch, or None for bytes the client sends: checked against
/// the size limit and the master's free disk.
fn check_create(app: &App, req: &CreateUpload) -> Result<Option<reqwest::Url>> {
    let max = app.uploads.settings.max_bytes;
    if let Some(h) = &req.sha256 {
        check_sha256("sha256", h)?;
    }
    match (&req.url, req.size) {
        (Some(u), None) => Ok(Some(fetch::check_url(u)?)),
        (Some(_), Some(_)) => Err(Error::invalid(
            "size",
            "give size for an upload, or url for an import, not both",
        )),
        (None, None) => Err(Error::invalid(
            "size",
            "size (bytes) and sha256 are required, or a url to import",
        )),
        (None, Some(0)) => Err(Error::invalid("size", "an image file cannot be empty")),
        (None, Some(size)) => {
            if req.sha256.is_none() {
                return Err(Error::invalid(
                    "sha256",
                    "sha256 of the data is required: the master checks it when the last byte is in",
                ));
            }
            if size > max {
                return Err(Error::TooLarge(
                    format!("{size} bytes is more than this master's limit of {max} bytes").into(),
                )
                .field("size"));
            }
            let dir = app.settings.uploads_dir();
            if let Some(free) = uploads::free_bytes(&dir) {
                if size > free {
                    return Err(Error::NoRoom(
                        format!("the master has {free} bytes free, not {size}").into(),
                    )
                    .field("size"));
                }
            }
            Ok(None)
        }
    }
}

/// Declare an upload (or start a fetch); at most `MAX_UPLOADS` open.
pub async fn create(app: &Arc<App>, req: CreateUpload) -> Result<Upload> {
    let url = check_create(app, &req)?;
    let open = app
        .db(|s| s.list_uploads())
        .await?
        .into_iter()
        .filter(|r| r.state != UploadState::Failed)
        .count();
    if open >= uploads::MAX_UPLOADS {
        return Err(Error::conflict(format!(
            "{open} uploads are open already; finish or delete one (GET /v1/uploads)"
        )));
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
        .map_err(|e| Error::internal(format!("{}: {e}", path.display())))?;
    let rec = row.clone();
    if let Err(e) = app.db(move |s| s.insert_upload(&rec)).await {
        app.uploads.discard(id);
        return Err(e);
    }
    if let Some(u) = url {
        tokio::spawn(fetch::run(app.clone(), id, u, row.sha256.clone()));
    }
    Ok(app.uploads.to_wire(&row))
}

fn too_long(id: Uuid, size: u64, have: u64) -> Error {
    Error::TooLarge(
        format!(
            "upload {id} is {size} bytes and holds {have}: the body may carry at most {} more",
            size - have
        )
        .into(),
    )
}

/// The upload that takes bytes at `offset`: receiving, and holding exactly
/// that many. Its size and sha256, and the bytes it holds.
fn check_writable(app: &App, row: &UploadRow, offset: u64) -> Result<(u64, String, u64)> {
    let id = row.id;
    if row.state != UploadState::Receiving {
        return Err(Error::conflict(format!(
            "upload {id} is {}: it takes no more bytes",
            row.state.as_str()
        )));
    }
    let (Some(size), Some(want)) = (row.size, row.sha256.clone()) else {
        return Err(Error::internal(format!(
            "upload {id} has no size or sha256"
        )));
    };
    let have = app.uploads.offset(id);
    if offset != have {
        return Err(Error::conflict(format!(
            "upload {id} holds {have} bytes: send from offset {have}, not {offset}"
        ))
        .field(OFFSET_HEADER));
    }
    Ok((size, want, have))
}

/// Append `body` at `offset` (`declared`: its Content-Length, if given).
/// Bytes received before a broken connection are kept, to resume from; the
/// last byte in, the sha256 is checked and the upload complete.
pub async fn write(
    app: &App,
    id: Uuid,
    offset: u64,
    declared: Option<u64>,
    body: axum::body::Body,
) -> Result<Upload> {
    let slot = app.uploads.slot(id);
    let Ok(mut slot) = slot.try_lock() else {
        return Err(Error::conflict(format!(
            "another request is using upload {id}; try again when it ends"
        )));
    };
    let row = app.db(move |s| s.get_upload(id)).await?;
    let (size, want, have) = check_writable(app, &row, offset)?;
    if declared.is_some_and(|n| have + n > size) {
        return Err(too_long(id, size, have));
    }
    let path = app.uploads.file(id);
    let mut hash = match slot.hashed.take() {
        Some((n, h)) if n == have => h,
        _ => {
            let p = path.clone();
            tokio::task::spawn_blocking(move || uploads::hash_prefix(&p, have))
                .await
                .map_err(|e| Error::internal(format!("hash task: {e}")))?
                .map_err(|e| Error::internal(format!("reading upload {id}: {e}")))?
        }
    };
    let (len, outcome) = uploads::receive(&path, have, size, &mut hash, body, uploads::IDLE)
        .await
        .map_err(|e| Error::internal(format!("writing upload {id}: {e}")))?;
    match outcome {
        Received::TooLong => {
            slot.hashed = Some((len, hash));
            return Err(too_long(id, size, have));
        }
        Received::Cut(why) => {
            slot.hashed = Some((len, hash));
            return Err(Error::Malformed(
                format!("the body ended early ({why}); upload {id} holds {len} bytes, resume from there").into(),
            ));
        }
        Received::Ended => {}
    }
    if len < size {
        slot.hashed = Some((len, hash));
        return Ok(app.uploads.to_wire(&row));
    }
    let got = hex::encode(hash.finalize());
    if got != want {
        app.db(move |s| s.delete_upload(id)).await?;
        drop(slot);
        app.uploads.discard(id);
        return Err(Error::invalid(
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
    Ok(app.uploads.to_wire(&done))
}

pub async fn delete(app: &App, id: &str) -> Result<Uuid> {
    let id = parse_id("id", id)?;
    let slot = app.uploads.slot(id);
    let Ok(_guard) = slot.try_lock() else {
        return Err(Error::conflict(format!(
            "upload {id} is in use (being written, fetched or made into an image)"
        )));
    };
    app.db(move |s| s.get_upload(id)).await?;
    app.db(move |s| s.delete_upload(id)).await?;
    app.uploads.discard(id);
    Ok(id)
}

/// A complete upload, locked for `POST /v1/images` to take.
pub struct Taken {
    pub row: UploadRow,
    /// Held until the image is recorded: no PATCH, DELETE or expiry meanwhile.
    pub _guard: tokio::sync::OwnedMutexGuard<uploads::Slot>,
}

/// Lock a complete upload for an image; `field` names it in errors.
pub async fn take(app: &Arc<App>, field: &str, id: Uuid, want: Option<&str>) -> Result<Taken> {
    let guard = app.uploads.slot(id).try_lock_owned().map_err(|_| {
        Error::conflict(format!(
            "upload {id} is in use (being written, fetched or made into an image)"
        ))
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
        return Err(Error::conflict(format!("upload {id} is {why}")).field(field));
    }
    let have = row.sha256.clone().unwrap_or_default();
    if let Some(w) = want {
        if !w.eq_ignore_ascii_case(&have) {
            return Err(Error::invalid(
                &format!("{field}.sha256"),
                format!("upload {id} has sha256 {have}, not {w}"),
            ));
        }
    }
    Ok(Taken { row, _guard: guard })
}
