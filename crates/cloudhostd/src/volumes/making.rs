//! Volume files made in the background, so that a slow fetch never holds
//! up a volume pass: a persistent root as a qcow2 overlay on its image
//! (fetched into the image cache first), a moved volume from its transfer
//! (docs/storage.md, "Persistent roots", "Moving a volume"). A failure is
//! the volume's error; the next pass tries again.

use super::transfers;
use crate::vm::VmContext;
use cm_api::agent::DesiredVolume;
use cm_api::image::FileRole;
use std::sync::Arc;

/// Start a task for each desired volume to be made from an image or a
/// transfer that has no file yet and none under way.
pub fn start(ctx: &Arc<VmContext>) {
    let vols = &ctx.volumes;
    let todo: Vec<DesiredVolume> = {
        let s = vols.state();
        match &s.wanted {
            Some(w) => w
                .volumes
                .iter()
                .filter(|d| !w.deleted.contains(&d.id) && !s.making.contains(&d.id))
                .filter(|d| d.image.is_some() || d.import.is_some())
                .cloned()
                .collect(),
            None => Vec::new(),
        }
    };
    for d in todo {
        if vols.path(d.id).exists() {
            continue;
        }
        vols.state().making.insert(d.id);
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let r = make(&ctx, &d).await;
            match &r {
                Ok(()) => tracing::info!("volume {} ({}): made", d.name, d.id),
                Err(e) => tracing::warn!("volume {} ({}): {e}", d.name, d.id),
            }
            ctx.volumes.state().making.remove(&d.id);
            ctx.volumes.record(d.id, r);
            ctx.volumes.wake.notify_one();
            ctx.changed.notify_one();
        });
    }
}

async fn make(ctx: &VmContext, d: &DesiredVolume) -> Result<(), String> {
    let file = ctx.volumes.path(d.id);
    if let Some(imp) = &d.import {
        return transfers::import(&ctx.master, imp, &file)
            .await
            .map_err(|e| format!("importing transfer {}: {e}", imp.transfer));
    }
    let Some(image) = &d.image else {
        return Ok(());
    };
    ctx.images.ensure(&ctx.master, image).await?;
    let f = image
        .file(FileRole::Disk)
        .ok_or_else(|| format!("image {} has no disk file", image.name))?;
    let base = ctx.images.path(image.id, FileRole::Disk);
    let format = f.format.clone().unwrap_or_else(|| "qcow2".into());
    let size = d.size_bytes.max(f.virtual_size.unwrap_or(0));
    tokio::task::spawn_blocking(move || {
        crate::vm::disk::create_overlay(&base, &format, &file, size)
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| format!("making it on image {}: {e}", image.name))
}
