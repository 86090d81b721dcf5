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
            // The master out of reach (restarting, say) is no failure of
            // the volume: the next pass tries again, nothing is reported.
            let r = match r {
                Err(Failed::Transient(_)) => return,
                Err(Failed::Final(e)) => Err(e),
                Ok(()) => Ok(()),
            };
            ctx.volumes.record(d.id, r);
            ctx.volumes.wake.notify_one();
            ctx.changed.notify_one();
        });
    }
}

/// Why a volume's file was not made.
#[derive(Debug)]
enum Failed {
    /// The master could not be reached: tried again, not reported.
    Transient(String),
    Final(String),
}

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failed::Transient(e) => write!(f, "{e} (tried again)"),
            Failed::Final(e) => write!(f, "{e}"),
        }
    }
}

impl From<String> for Failed {
    fn from(e: String) -> Failed {
        Failed::Final(e)
    }
}

async fn make(ctx: &VmContext, d: &DesiredVolume) -> Result<(), Failed> {
    let file = ctx.volumes.path(d.id);
    if let Some(imp) = &d.import {
        return transfers::import(&ctx.master, imp, &file)
            .await
            .map_err(|e| {
                let why = format!("importing transfer {}: {e}", imp.transfer);
                match e {
                    transfers::ImportError::Fetch(c) if super::exports::transient(&c) => {
                        Failed::Transient(why)
                    }
                    _ => Failed::Final(why),
                }
            });
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
    .map_err(|e| Failed::Final(format!("making it on image {}: {e}", image.name)))
}
