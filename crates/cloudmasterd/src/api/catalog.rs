//! `/v1/images` and `/v1/flavors`.

use super::bearer::Admin;
use super::error::{ApiErr, ApiResult, Body};
use super::extract::Path;
use super::openapi::Errors;
use super::uploads;
use crate::images::{self, ImportError, Staged};
use crate::state::App;
use crate::store::{now_ms, to_ts};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use cm_api::answer::NameDeleted;
use cm_api::image::{CreateFlavor, CreateImage, Flavor, Image};
use cm_api::validate;
use cm_api::words::EventKind;
use std::sync::Arc;
use uuid::Uuid;

#[utoipa::path(
    get,
    path = "/v1/images",
    tag = "images",
    responses((status = 200, description = "OK", body = Vec<cm_api::image::Image>), Errors),
    security(("bearer" = [])),
)]
pub async fn list_images(State(app): State<Arc<App>>, _: Admin) -> ApiResult<Json<Vec<Image>>> {
    Ok(Json(app.db(|s| s.list_images()).await?))
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
    Ok(Json(app.db(move |s| s.get_image(&name)).await?))
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
    validate::name("name", &req.name, true)?;
    if let Some(c) = &req.cmdline {
        if c.len() > 2048 || c.chars().any(|ch| ch.is_control()) {
            return Err(ApiErr::invalid(
                "cmdline",
                "cmdline must be one line of at most 2048 characters",
            ));
        }
    }
    let (kind, sources) = images::plan(&req)?;
    let name = req.name.clone();
    if app.db(move |s| s.get_image(&name)).await.is_ok() {
        return Err(ApiErr::new(
            cm_api::ErrorCode::AlreadyExists,
            format!("image '{}' exists already", req.name),
        )
        .field("name"));
    }
    // Every source is checked (and uploads locked) before anything is written.
    let mut staged = Vec::new();
    let mut taken = Vec::new();
    for (role, src) in sources {
        let field = role.as_str();
        if let Some(id) = src.upload {
            let t = uploads::take(&app, field, id, src.sha256.as_deref()).await?;
            staged.push((
                role,
                Staged::Upload {
                    path: app.uploads.file(id),
                    size: t.row.size.unwrap_or(0),
                    sha256: t.row.sha256.clone().unwrap_or_default(),
                },
            ));
            taken.push(t);
        } else if let Some(path) = src.path {
            staged.push((
                role,
                open_in_import_dir(&app, field, &path, src.sha256).await?,
            ));
        }
    }
    let id = Uuid::new_v4();
    let dir = app.settings.images_dir();
    let max = app.uploads.settings.max_bytes;
    let installed = tokio::task::spawn_blocking(move || images::install(&dir, id, staged, max))
        .await
        .map_err(|e| ApiErr::internal(format!("import task: {e}")))?;
    let files = match installed {
        Ok(f) => f,
        Err(ImportError::Input(e)) => return Err(ApiErr(e)),
        Err(ImportError::Io(m)) => return Err(ApiErr::internal(m)),
    };
    let image = Image {
        id,
        name: req.name.clone(),
        kind,
        files,
        cmdline: req.cmdline.clone(),
        created_at: to_ts(now_ms()),
    };
    let rec = image.clone();
    let used: Vec<Uuid> = taken.iter().map(|t| t.row.id).collect();
    // The image and the end of its uploads in one transaction; the uploads'
    // own files go after (a crash in between leaves files the next start
    // removes, the image whole).
    let recorded = if used.is_empty() {
        app.db(move |s| s.insert_image(&rec)).await
    } else {
        app.db(move |s| s.insert_image_from_uploads(&rec, &used))
            .await
    };
    if let Err(e) = recorded {
        let _ = std::fs::remove_dir_all(app.settings.images_dir().join(id.to_string()));
        return Err(e.into());
    }
    for t in taken {
        app.uploads.discard(t.row.id);
    }
    app.event(
        EventKind::ImageAdded,
        &image.name,
        &format!("{} image, {} bytes", kind.as_str(), image.total_size()),
    )
    .await;
    Ok((StatusCode::CREATED, Json(image)))
}

/// A master-side path: only from the operator's import directory.
async fn open_in_import_dir(
    app: &Arc<App>,
    field: &str,
    path: &str,
    expect: Option<String>,
) -> ApiResult<Staged> {
    let shown = cm_api::validate::printable(&path.chars().take(200).collect::<String>());
    let Some(dir) = app.uploads.import_dir.clone() else {
        return Err(ApiErr::invalid(
            field,
            format!(
                "{field}: master-side paths are refused: this master has no --image-import-dir. \
                 Upload the file instead (cm image add uploads the files it is given)"
            ),
        ));
    };
    let p = path.to_string();
    let opened = tokio::task::spawn_blocking(move || dir.open(&p))
        .await
        .map_err(|e| ApiErr::internal(format!("import task: {e}")))?;
    match opened {
        Ok((file, _size)) => Ok(Staged::Opened {
            file,
            shown,
            expect,
        }),
        Err(e) => Err(ApiErr::invalid(field, format!("{field} '{shown}': {e}"))),
    }
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
    let image = app.db(move |s| s.delete_image(&name)).await?;
    let dir = app.settings.images_dir().join(image.id.to_string());
    if let Err(e) = std::fs::remove_dir_all(&dir) {
        tracing::warn!("removing {}: {e}", dir.display());
    }
    app.event(EventKind::ImageDeleted, &image.name, "deleted")
        .await;
    Ok(Json(NameDeleted {
        name: image.name,
        deleted: true,
    }))
}

#[utoipa::path(
    get,
    path = "/v1/flavors",
    tag = "flavors",
    responses((status = 200, description = "OK", body = Vec<cm_api::image::Flavor>), Errors),
    security(("bearer" = [])),
)]
pub async fn list_flavors(State(app): State<Arc<App>>, _: Admin) -> ApiResult<Json<Vec<Flavor>>> {
    Ok(Json(app.db(|s| s.list_flavors()).await?))
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
    Ok(Json(app.db(move |s| s.get_flavor(&name)).await?))
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
    validate::name("name", &req.name, true)?;
    validate::memory_mib("memory_mib", req.memory_mib)?;
    validate::vcpus("vcpus", req.vcpus)?;
    if req.disk_gib > 64 * 1024 {
        return Err(ApiErr::invalid(
            "disk_gib",
            "disk_gib must be at most 65536",
        ));
    }
    let f = Flavor {
        name: req.name,
        memory_mib: req.memory_mib,
        vcpus: req.vcpus,
        disk_gib: req.disk_gib,
        builtin: false,
    };
    let rec = f.clone();
    app.db(move |s| s.insert_flavor(&rec)).await?;
    app.event(
        EventKind::FlavorCreated,
        &f.name,
        &format!("{} MiB, {} vCPUs", f.memory_mib, f.vcpus),
    )
    .await;
    Ok((StatusCode::CREATED, Json(f)))
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
    let f = app.db(move |s| s.delete_flavor(&name)).await?;
    app.event(EventKind::FlavorDeleted, &f.name, "deleted")
        .await;
    Ok(Json(NameDeleted {
        name: f.name,
        deleted: true,
    }))
}
