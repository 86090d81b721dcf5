//! Persistent roots (docs/storage.md, "Persistent roots"): the volume an
//! instance boots from, made or taken in the instance's create transaction
//! and let go when it is deleted; the origin image that makes a volume
//! bootable and keeps that image from being deleted.

use super::codec::i;
use super::volumes::{by_id, spaces};
use crate::scheduler::Unplaced;
use crate::store::root::unbootable;
use crate::store::*;
use cm_api::ids::VolumeId;
use rusqlite::{params, Connection};

fn refused(message: String, field: &'static str) -> StoreError {
    StoreError::Refused { message, field }
}

/// Make or take the root volume of `instance`, placed on `host`, in the
/// create's transaction (the host's generation is raised by the caller).
pub fn create_root(
    t: &Connection,
    instance: InstanceId,
    image: ImageId,
    host: HostId,
    root: &NewRoot,
    now: Millis,
) -> Result<()> {
    match root {
        NewRoot::Make {
            id,
            name,
            size_bytes,
        } => {
            if super::volumes::get(t, name).is_ok() {
                return Err(refused(
                    format!(
                        "volume '{name}' exists already: name the instance otherwise, or boot \
                         that volume with --root-volume"
                    ),
                    "name",
                ));
            }
            let need = size_bytes.div_ceil(cm_api::volume::VOLUME_SIZE_UNIT);
            let space = spaces(t)?.into_iter().find(|s| s.id == host);
            let room = space.as_ref().map_or(0, |s| s.room_mib());
            if need > room {
                let host_name = space.map(|s| s.name).unwrap_or_default();
                return Err(Unplaced::NoCapacity {
                    message: format!(
                        "host {host_name} has room for {room} MiB more of volumes, the root \
                         volume needs {need} MiB"
                    ),
                    field: "host",
                }
                .into());
            }
            let g = super::hosts::generation(t, host)? + 1;
            t.execute(
                "INSERT INTO volumes (id, name, host_id, size_bytes, intent_gen, image_id, root_of,
                    created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)",
                params![id, name, host, i(*size_bytes), i(g), image, instance, now],
            )?;
        }
        NewRoot::Existing(id) => {
            let v = by_id(t, *id)?;
            if let Some(why) = unbootable(&v) {
                return Err(refused(why, "root_volume"));
            }
            if v.host_id != host {
                return Err(refused(
                    format!(
                        "volume '{}' is on host {}: an instance runs where its root volume is",
                        v.name, v.host_name
                    ),
                    "host",
                ));
            }
            t.execute(
                "UPDATE volumes SET root_of = ?2, attach_gen = attach_gen + 1, updated_at = ?3
                 WHERE id = ?1",
                params![id, instance, now],
            )?;
        }
    }
    Ok(())
}

/// A deleted instance lets go of its root volume: it stays, `available`
/// once the host no longer runs the VM.
pub fn release_root(t: &Connection, instance: InstanceId, now: Millis) -> Result<()> {
    t.execute(
        "UPDATE volumes SET root_of = NULL, attach_gen = attach_gen + 1, updated_at = ?2
         WHERE root_of = ?1",
        params![instance, now],
    )?;
    Ok(())
}

/// A clone gets the origin image of the disk its snapshot is of: that
/// volume's, or the instance's image for an ephemeral root.
pub fn inherit_origin(t: &Connection, volume: VolumeId, disk: uuid::Uuid) -> Result<()> {
    let disk = disk.to_string();
    t.execute(
        "UPDATE volumes SET image_id = COALESCE(
            (SELECT image_id FROM volumes WHERE id = ?2),
            (SELECT i.image_id FROM instances i JOIN images m ON m.id = i.image_id
             WHERE i.id = ?2 AND m.kind = 'disk'))
         WHERE id = ?1",
        params![volume, disk],
    )?;
    Ok(())
}

/// Names of volumes (at most 5) whose origin is this image.
pub fn volumes_of_image(c: &Connection, image: &str) -> Result<Vec<String>> {
    let mut st =
        c.prepare_cached("SELECT name FROM volumes WHERE image_id = ?1 ORDER BY name LIMIT 5")?;
    let rows = st.query_map([image], |r| r.get(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

#[cfg(test)]
#[path = "roots_tests.rs"]
mod tests;
