//! Persistent roots at an instance's create (docs/storage.md, "Persistent
//! roots"): `persistent` makes the volume `NAME-root` from the image,
//! `root_volume` boots an existing bootable volume. Checked here; the
//! store checks again in the create's transaction.

use super::{Error, Result};
use crate::state::App;
use crate::store::root::unbootable;
use crate::store::NewRoot;
use crate::store::VolumeRow;
use cm_api::agent::{DesiredInstance, DesiredVolume, ImageRef};
use cm_api::ids::VolumeId;
use cm_api::image::{FileRole, Image, ImageKind};
use cm_api::instance::CreateInstance;
use cm_api::volume::{MAX_VOLUME_BYTES, MIN_VOLUME_BYTES, VOLUME_SIZE_UNIT};
use std::collections::HashMap;

const GIB: u64 = 1 << 30;

/// The name of the root volume `--persistent` makes.
pub fn root_name(instance: &str) -> String {
    format!("{instance}-root")
}

/// A persistent root's size: the image's virtual size or `disk_gib`,
/// whichever is larger, in whole MiB.
pub fn root_size(image: &Image, disk_gib: u64) -> Result<u64> {
    let virt = image
        .file(FileRole::Disk)
        .and_then(|f| f.virtual_size)
        .unwrap_or(0);
    let size = virt
        .max(disk_gib.saturating_mul(GIB))
        .max(MIN_VOLUME_BYTES)
        .div_ceil(VOLUME_SIZE_UNIT)
        .saturating_mul(VOLUME_SIZE_UNIT);
    if size > MAX_VOLUME_BYTES {
        return Err(Error::invalid(
            "disk_gib",
            format!("a root volume is at most {MAX_VOLUME_BYTES} bytes (64 TiB)"),
        ));
    }
    Ok(size)
}

/// What a create with `root_volume` boots: the image to use (the
/// volume's origin) and the host it must run on. `None` without one.
pub async fn existing_root(
    app: &App,
    req: &CreateInstance,
) -> Result<Option<(VolumeId, String, String)>> {
    let Some(name) = &req.root_volume else {
        return Ok(None);
    };
    if req.persistent {
        return Err(Error::invalid(
            "root_volume",
            "give persistent (make a new root volume) or root_volume (boot an existing one), \
             not both",
        ));
    }
    if !req.image.is_empty() {
        return Err(Error::invalid(
            "image",
            "an instance booting a root volume runs that volume's image: leave image out",
        ));
    }
    let n = name.clone();
    let v = app
        .db(move |s| s.get_volume(&n))
        .await
        .map_err(|e| e.field("root_volume"))?;
    if let Some(why) = unbootable(&v) {
        return Err(Error::conflict(why).field("root_volume"));
    }
    if let Some(h) = req.host.as_ref().filter(|h| **h != v.host_name) {
        return Err(Error::conflict(format!(
            "volume '{}' is on host {}, not {h}: an instance runs where its root volume is",
            v.name, v.host_name
        ))
        .field("host"));
    }
    let image = match &v.image {
        Some((id, _)) => id.to_string(),
        None => return Err(Error::conflict("volume has no image").field("root_volume")),
    };
    Ok(Some((v.id, image, v.host_name.clone())))
}

/// The root a create asks for, given the image it boots and its disk size.
pub fn new_root(
    req: &CreateInstance,
    existing: Option<VolumeId>,
    image: &Image,
    disk_gib: u64,
) -> Result<Option<NewRoot>> {
    if let Some(id) = existing {
        return Ok(Some(NewRoot::Existing(id)));
    }
    if !req.persistent {
        return Ok(None);
    }
    if image.kind == ImageKind::Kernel {
        return Err(Error::conflict(format!(
            "image '{}' is a kernel image: it has no root disk to keep",
            image.name
        ))
        .field("image"));
    }
    let name = root_name(&req.name);
    cm_api::validate::name("name", &name, false)?;
    Ok(Some(NewRoot::Make {
        id: VolumeId::new_v4(),
        name,
        size_bytes: root_size(image, disk_gib)?,
    }))
}

/// The persistent-root part of a host's desired state: each instance
/// boots its root volume (`root_volume`), and a root volume whose file the
/// host never reported is made as an overlay on its image (`image`).
pub fn desired_roots(
    rows: &[VolumeRow],
    images: &HashMap<uuid::Uuid, Image>,
    volumes: &mut [DesiredVolume],
    instances: &mut [DesiredInstance],
) {
    let by_id: HashMap<uuid::Uuid, &VolumeRow> = rows.iter().map(|v| (v.id.uuid(), v)).collect();
    for d in volumes.iter_mut() {
        let Some(v) = by_id.get(&d.id) else { continue };
        let fresh = v.facts.size_bytes.is_none() && d.clone_from.is_none() && d.import.is_none();
        let img = v.image.as_ref().and_then(|(id, _)| images.get(&id.uuid()));
        if let (true, Some(img)) = (fresh, img) {
            d.image = Some(ImageRef {
                id: img.id,
                name: img.name.clone(),
                kind: img.kind,
                files: img.files.clone(),
                cmdline: img.cmdline.clone(),
            });
        }
    }
    let roots: HashMap<uuid::Uuid, uuid::Uuid> = rows
        .iter()
        .filter(|v| !v.deleted)
        .filter_map(|v| v.root_of.as_ref().map(|(i, _)| (i.uuid(), v.id.uuid())))
        .collect();
    for i in instances.iter_mut() {
        i.root_volume = roots.get(&i.id).copied();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cm_api::image::ImageFile;

    fn image(virtual_size: u64) -> Image {
        Image {
            id: uuid::Uuid::new_v4(),
            name: "img".into(),
            kind: ImageKind::Disk,
            files: vec![ImageFile {
                role: FileRole::Disk,
                size: 1,
                sha256: String::new(),
                format: Some("qcow2".into()),
                virtual_size: Some(virtual_size),
            }],
            cmdline: None,
            created_at: cm_api::time::to_timestamp(0),
        }
    }

    #[test]
    fn a_root_is_the_larger_of_image_and_disk_in_whole_mib() {
        assert_eq!(root_size(&image(3 << 20), 0).unwrap(), 3 << 20);
        assert_eq!(root_size(&image((3 << 20) + 1), 0).unwrap(), 4 << 20);
        assert_eq!(root_size(&image(3 << 20), 2).unwrap(), 2 << 30);
        assert_eq!(root_size(&image(0), 0).unwrap(), MIN_VOLUME_BYTES);
        let e = root_size(&image(1), 1 << 40).unwrap_err();
        assert_eq!(e.detail().field.as_deref(), Some("disk_gib"));
    }
}
