//! `cm image create NAME --from-instance I` (docs/storage.md, "Images from
//! instances"): the instance's host flattens its stopped root disk and
//! sends it as a transfer; the master checks it (`qemu-img info`: a qcow2
//! without a backing file) and keeps it as any image.

use super::{Error, Result};
use crate::images::{self, Staged};
use crate::state::App;
use crate::store::transfer::{BuildRow, TransferRow};
use crate::store::{new_operation, now_ms, to_ts};
use cm_api::agent::{ObservedState, Power};
use cm_api::image::{FileRole, Image, ImageAccepted, ImageFromInstance, ImageKind};
use cm_api::validate;
use cm_api::words::OperationKind;
use uuid::Uuid;

pub async fn create(app: &App, req: ImageFromInstance) -> Result<ImageAccepted> {
    validate::name("name", &req.name, false)?;
    let name = req.name.clone();
    if app.db(move |s| s.get_image(&name)).await.is_ok() {
        let m = format!("image '{}' exists already", req.name);
        return Err(Error::AlreadyExists(m.into()).field("name"));
    }
    let i = req.instance.clone();
    let inst = app
        .db(move |s| s.get_instance(&i))
        .await
        .map_err(|e| e.field("instance"))?;
    let i = inst.spec.image_id.to_string();
    let img = app.db(move |s| s.get_image(&i)).await?;
    if img.kind == ImageKind::Kernel {
        let m = format!(
            "instance '{}' boots kernel image {}: it has no root disk to make an image of",
            inst.name, img.name
        );
        return Err(Error::conflict(m).field("instance"));
    }
    let stopped = inst.desired.power == Power::Stopped
        && matches!(inst.observed.state, Some(ObservedState::Stopped) | None);
    if !stopped || inst.desired.deleted {
        let m = format!(
            "instance '{}' must be stopped (cm instance stop {}) for a consistent disk",
            inst.name, inst.name
        );
        return Err(Error::conflict(m).field("instance"));
    }
    let image_id = Uuid::new_v4();
    let op = new_operation(
        OperationKind::ImageCreate,
        &req.name,
        image_id,
        &format!(
            "waiting for {} to send the disk of {}",
            inst.host_name, inst.name
        ),
    );
    let (o, n, id, tr) = (op.clone(), req.name.clone(), inst.id, Uuid::new_v4());
    app.db(move |s| s.start_image_build(image_id, &n, id, tr, &o, now_ms()))
        .await?;
    app.hub.notify(inst.host_id);
    app.ops_changed();
    Ok(ImageAccepted { operation: op })
}

/// After a restart: builds whose disk the master holds are checked again
/// (a crash between receipt and install left them waiting).
pub async fn resume(app: std::sync::Arc<App>) {
    let Ok(builds) = app.db(|s| s.list_builds()).await else {
        return;
    };
    for b in builds.iter().filter(|b| b.transfer.received.is_some()) {
        received(&app, &b.transfer).await;
    }
}

/// The start of an instance an image is being made of is refused.
pub async fn refuse_start(app: &App, instance: &str) -> Result<()> {
    let i = instance.to_string();
    let Ok(inst) = app.db(move |s| s.get_instance(&i)).await else {
        return Ok(());
    };
    let builds = app.db(|s| s.list_builds()).await?;
    match builds.iter().find(|b| b.instance_id == inst.id) {
        Some(b) => Err(Error::conflict(format!(
            "image '{}' is being made from instance '{}': start it when the image exists",
            b.name, inst.name
        ))
        .field("name")),
        None => Ok(()),
    }
}

/// The disk arrived: check it and install it as the image's disk file.
pub async fn received(app: &App, tr: &TransferRow) {
    let builds = match app.db(|s| s.list_builds()).await {
        Ok(b) => b,
        Err(e) => return tracing::error!("image builds: {e}"),
    };
    let Some(b) = builds.into_iter().find(|b| b.transfer.id == tr.id) else {
        return;
    };
    let Some((size, sha256)) = tr.received.clone() else {
        return;
    };
    let path = super::transfers::file_path(app, tr.id);
    let dir = app.settings.images_dir();
    let id = b.image_id;
    let staged = vec![(FileRole::Disk, Staged::Upload { path, size, sha256 })];
    let installed = tokio::task::spawn_blocking(move || images::install(&dir, id, staged, size))
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| e.to_string()));
    let files = match installed {
        Ok(files) if files.iter().all(|f| f.format.as_deref() == Some("qcow2")) => files,
        Ok(_) => {
            let _ = std::fs::remove_dir_all(app.settings.images_dir().join(id.to_string()));
            return failed(app, &b, "the disk sent is not a qcow2").await;
        }
        Err(e) => return failed(app, &b, &format!("the disk sent is refused: {e}")).await,
    };
    let image = Image {
        id,
        name: b.name.clone(),
        kind: ImageKind::Disk,
        files,
        cmdline: None,
        created_at: to_ts(now_ms()),
    };
    let rec = image.clone();
    let done = app
        .db(move |s| s.finish_image_build(id, Ok(&rec), now_ms()))
        .await;
    let _ = std::fs::remove_file(super::transfers::file_path(app, tr.id));
    match done {
        Ok(Some(ev)) => super::owned::publish(app, ev),
        Ok(None) => {}
        Err(e) => {
            let _ = std::fs::remove_dir_all(app.settings.images_dir().join(id.to_string()));
            return tracing::error!("recording image {}: {e}", b.name);
        }
    }
    app.ops_changed();
}

/// The build failed: its operation says why, its transfer's file goes.
pub async fn failed(app: &App, b: &BuildRow, why: &str) {
    let (id, w) = (b.image_id, why.to_string());
    if let Err(e) = app
        .db(move |s| s.finish_image_build(id, Err(&w), now_ms()))
        .await
    {
        tracing::error!("failing image build {}: {e}", b.name);
    }
    let _ = std::fs::remove_file(super::transfers::file_path(app, b.transfer.id));
    app.ops_changed();
}
