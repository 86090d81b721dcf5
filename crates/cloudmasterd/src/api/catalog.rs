//! `/v1/images` and `/v1/flavors`.

use super::error::{ApiErr, ApiResult, Body};
use super::extract::Path;
use crate::auth::Admin;
use crate::images::{self, ImportError};
use crate::state::App;
use crate::store::{now_ms, to_ts};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use cm_api::image::{CreateFlavor, CreateImage, Flavor, Image};
use cm_api::validate;
use std::sync::Arc;
use uuid::Uuid;

pub async fn list_images(State(app): State<Arc<App>>, _: Admin) -> ApiResult<Json<Vec<Image>>> {
    Ok(Json(app.db(|s| s.list_images()).await?))
}

pub async fn show_image(
    State(app): State<Arc<App>>,
    _: Admin,
    Path(name): Path<String>,
) -> ApiResult<Json<Image>> {
    Ok(Json(app.db(move |s| s.get_image(&name)).await?))
}

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
    let (kind, files) = images::plan(&req)?;
    let name = req.name.clone();
    if app.db(move |s| s.get_image(&name)).await.is_ok() {
        return Err(ApiErr::new(
            cm_api::ErrorCode::AlreadyExists,
            format!("image '{}' exists already", req.name),
        )
        .field("name"));
    }
    let id = Uuid::new_v4();
    let dir = app.settings.images_dir();
    let imported = tokio::task::spawn_blocking(move || images::import(&dir, id, &files))
        .await
        .map_err(|e| ApiErr::internal(format!("import task: {e}")))?;
    let files = match imported {
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
    if let Err(e) = app.db(move |s| s.insert_image(&rec)).await {
        let _ = std::fs::remove_dir_all(app.settings.images_dir().join(id.to_string()));
        return Err(e);
    }
    app.event(
        "image.added",
        &image.name,
        &format!("{} image, {} bytes", kind.as_str(), image.total_size()),
    )
    .await;
    Ok((StatusCode::CREATED, Json(image)))
}

pub async fn delete_image(
    State(app): State<Arc<App>>,
    _: Admin,
    Path(name): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let image = app.db(move |s| s.delete_image(&name)).await?;
    let dir = app.settings.images_dir().join(image.id.to_string());
    if let Err(e) = std::fs::remove_dir_all(&dir) {
        tracing::warn!("removing {}: {e}", dir.display());
    }
    app.event("image.deleted", &image.name, "deleted").await;
    Ok(Json(
        serde_json::json!({ "name": image.name, "deleted": true }),
    ))
}

pub async fn list_flavors(State(app): State<Arc<App>>, _: Admin) -> ApiResult<Json<Vec<Flavor>>> {
    Ok(Json(app.db(|s| s.list_flavors()).await?))
}

pub async fn show_flavor(
    State(app): State<Arc<App>>,
    _: Admin,
    Path(name): Path<String>,
) -> ApiResult<Json<Flavor>> {
    Ok(Json(app.db(move |s| s.get_flavor(&name)).await?))
}

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
        "flavor.created",
        &f.name,
        &format!("{} MiB, {} vCPUs", f.memory_mib, f.vcpus),
    )
    .await;
    Ok((StatusCode::CREATED, Json(f)))
}

pub async fn delete_flavor(
    State(app): State<Arc<App>>,
    _: Admin,
    Path(name): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let f = app.db(move |s| s.delete_flavor(&name)).await?;
    app.event("flavor.deleted", &f.name, "deleted").await;
    Ok(Json(serde_json::json!({ "name": f.name, "deleted": true })))
}
