//! The catalog: images (from uploads or the operator's import directory,
//! checked and installed before they are recorded) and flavors.

use super::uploads;
use super::{Error, Result};
use crate::images::{self, Staged};
use crate::state::App;
use crate::store::{now_ms, to_ts};
use cm_api::answer::NameDeleted;
use cm_api::image::{CreateFlavor, CreateImage, FileRole, FileSource, Flavor, Image};
use cm_api::validate;
use cm_api::words::EventKind;
use std::sync::Arc;
use uuid::Uuid;

pub async fn list_images(app: &App) -> Result<Vec<Image>> {
    app.db(|s| s.list_images()).await
}

pub async fn show_image(app: &App, name: String) -> Result<Image> {
    app.db(move |s| s.get_image(&name)).await
}

/// Every source checked (and its upload locked) before anything is written.
async fn stage(
    app: &Arc<App>,
    sources: Vec<(FileRole, FileSource)>,
) -> Result<(Vec<(FileRole, Staged)>, Vec<uploads::Taken>)> {
    let mut staged = Vec::new();
    let mut taken = Vec::new();
    for (role, src) in sources {
        let field = role.as_str();
        if let Some(id) = src.upload {
            let t = uploads::take(app, field, id, src.sha256.as_deref()).await?;
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
                open_in_import_dir(app, field, &path, src.sha256).await?,
            ));
        }
    }
    Ok((staged, taken))
}

/// Add an image: its files staged, installed under the images directory,
/// then recorded (with the end of its uploads in the same transaction).
pub async fn create_image(app: &Arc<App>, req: CreateImage) -> Result<Image> {
    validate::name("name", &req.name, true)?;
    if let Some(c) = &req.cmdline {
        if c.len() > 2048 || c.chars().any(|ch| ch.is_control()) {
            return Err(Error::invalid(
                "cmdline",
                "cmdline must be one line of at most 2048 characters",
            ));
        }
    }
    let (kind, sources) = images::plan(&req)?;
    let name = req.name.clone();
    if app.db(move |s| s.get_image(&name)).await.is_ok() {
        return Err(
            Error::AlreadyExists(format!("image '{}' exists already", req.name).into())
                .field("name"),
        );
    }
    let (staged, taken) = stage(app, sources).await?;
    let id = Uuid::new_v4();
    let dir = app.settings.images_dir();
    let max = app.uploads.settings.max_bytes;
    let installed = tokio::task::spawn_blocking(move || images::install(&dir, id, staged, max))
        .await
        .map_err(|e| Error::internal(format!("import task: {e}")))?;
    let files = match installed {
        Ok(f) => f,
        Err(e) => return Err(e.into()),
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
        return Err(e);
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
    Ok(image)
}

/// A master-side path: only from the operator's import directory.
async fn open_in_import_dir(
    app: &Arc<App>,
    field: &str,
    path: &str,
    expect: Option<String>,
) -> Result<Staged> {
    let shown = cm_api::validate::printable(&path.chars().take(200).collect::<String>());
    let Some(dir) = app.uploads.import_dir.clone() else {
        return Err(Error::invalid(
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
        .map_err(|e| Error::internal(format!("import task: {e}")))?;
    match opened {
        Ok((file, _size)) => Ok(Staged::Opened {
            file,
            shown,
            expect,
        }),
        Err(e) => Err(Error::invalid(field, format!("{field} '{shown}': {e}"))),
    }
}

pub async fn delete_image(app: &App, name: String) -> Result<NameDeleted> {
    let image = app.db(move |s| s.delete_image(&name)).await?;
    let dir = app.settings.images_dir().join(image.id.to_string());
    if let Err(e) = std::fs::remove_dir_all(&dir) {
        tracing::warn!("removing {}: {e}", dir.display());
    }
    app.event(EventKind::ImageDeleted, &image.name, "deleted")
        .await;
    Ok(NameDeleted {
        name: image.name,
        deleted: true,
    })
}

pub async fn list_flavors(app: &App) -> Result<Vec<Flavor>> {
    app.db(|s| s.list_flavors()).await
}

pub async fn show_flavor(app: &App, name: String) -> Result<Flavor> {
    app.db(move |s| s.get_flavor(&name)).await
}

pub async fn create_flavor(app: &App, req: CreateFlavor) -> Result<Flavor> {
    validate::name("name", &req.name, true)?;
    validate::memory_mib("memory_mib", req.memory_mib)?;
    validate::vcpus("vcpus", req.vcpus)?;
    if req.disk_gib > 64 * 1024 {
        return Err(Error::invalid("disk_gib", "disk_gib must be at most 65536"));
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
    Ok(f)
}

pub async fn delete_flavor(app: &App, name: String) -> Result<NameDeleted> {
    let f = app.db(move |s| s.delete_flavor(&name)).await?;
    app.event(EventKind::FlavorDeleted, &f.name, "deleted")
        .await;
    Ok(NameDeleted {
        name: f.name,
        deleted: true,
    })
}
