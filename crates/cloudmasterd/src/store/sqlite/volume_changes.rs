//! Changes of a volume's intent (store::volume::VolumeChange), checked in
//! the transaction that writes them, and the attachments an instance's
//! create and delete make.

use super::codec::{i, u};
use super::hosts;
use super::instances;
use super::log::insert_operation;
use super::volumes::by_id;
use crate::scheduler::Unplaced;
use crate::store::volume::*;
use crate::store::*;
use cm_api::ids::VolumeId;
use rusqlite::{params, Connection};

fn next_pos(t: &Connection, instance: InstanceId) -> Result<u64> {
    let n: i64 = t.query_row(
        "SELECT COALESCE(MAX(attach_pos), 0) + 1 FROM volumes WHERE instance_id = ?1",
        [instance],
        |r| r.get(0),
    )?;
    Ok(u(n))
}

fn set_attachment(
    t: &Connection,
    v: &VolumeRow,
    to: Option<InstanceId>,
    force: bool,
    now: Millis,
) -> Result<u64> {
    let pos = match to {
        Some(i) => next_pos(t, i)?,
        None => v.attach_pos,
    };
    t.execute(
        "UPDATE volumes SET instance_id = ?2, attach_pos = ?3, attach_gen = attach_gen + 1,
            force_detach = ?4, updated_at = ?5 WHERE id = ?1",
        params![v.id, to, i(pos), force, now],
    )?;
    Ok(v.attach_gen + 1)
}

fn refused(message: String, field: &'static str) -> StoreError {
    StoreError::Refused { message, field }
}

/// Apply a change in the caller's transaction; the `want` of its operation.
fn apply(t: &Connection, v: &VolumeRow, change: VolumeChange, now: Millis) -> Result<(bool, u64)> {
    if v.deleted && change != VolumeChange::Delete {
        return Err(StoreError::Conflict(format!(
            "volume '{}' is being deleted",
            v.name
        )));
    }
    if !matches!(change, VolumeChange::Revert { .. }) {
        super::volume_moves::refuse_moving(t, v.id, &v.name)?;
    }
    match change {
        VolumeChange::Resize { size_bytes } => {
            if size_bytes < v.size_bytes {
                return Err(refused(
                    format!(
                        "volume '{}' is {} bytes: a volume is never shrunk",
                        v.name, v.size_bytes
                    ),
                    "size_bytes",
                ));
            }
            if size_bytes == v.size_bytes {
                return Ok((false, size_bytes));
            }
            let extra = (size_bytes - v.size_bytes).div_ceil(cm_api::volume::VOLUME_SIZE_UNIT);
            let space = super::volumes::spaces(t)?
                .into_iter()
                .find(|s| s.id == v.host_id);
            let room = space.as_ref().map_or(0, VolumeSpace::room_mib);
            if extra > room {
                return Err(Unplaced::NoCapacity {
                    message: format!(
                        "host {} has room for {room} MiB more of volumes, {extra} MiB asked",
                        v.host_name
                    ),
                    field: "size_bytes",
                }
                .into());
            }
            t.execute(
                "UPDATE volumes SET size_bytes = ?2, updated_at = ?3 WHERE id = ?1",
                params![v.id, i(size_bytes), now],
            )?;
            Ok((true, size_bytes))
        }
        VolumeChange::Attach { instance } => {
            if let Some((_, name)) = &v.root_of {
                return Err(refused(
                    format!("volume '{}' is the root disk of {name}", v.name),
                    "instance",
                ));
            }
            let inst = instances::by_id(t, instance)?;
            if inst.desired.deleted {
                return Err(refused(
                    format!("instance '{}' is being deleted", inst.name),
                    "instance",
                ));
            }
            if inst.host_id != v.host_id {
                return Err(refused(
                    format!(
                        "volume '{}' is on host {} and instance '{}' on host {}: a volume is \
                         attached on its own host only (cm volume move {} --host {})",
                        v.name, v.host_name, inst.name, inst.host_name, v.name, inst.host_name
                    ),
                    "instance",
                ));
            }
            match &v.instance {
                Some((i, _)) if *i == instance => return Ok((false, v.attach_gen)),
                Some((_, other)) => {
                    return Err(refused(
                        format!("volume '{}' is attached to {other}", v.name),
                        "instance",
                    ))
                }
                None => {}
            }
            if let Some((h, holder)) = &v.facts.holder {
                if *h != instance {
                    return Err(refused(
                        format!(
                            "volume '{}' is still detaching from {holder}: wait for it",
                            v.name
                        ),
                        "instance",
                    ));
                }
            }
            Ok((true, set_attachment(t, v, Some(instance), false, now)?))
        }
        VolumeChange::Detach { .. } if v.root_of.is_some() => Err(StoreError::Conflict(format!(
            "volume '{}' is the root disk of {}: delete the instance to free it",
            v.name,
            v.root_of.as_ref().map_or("", |r| r.1.as_str())
        ))),
        VolumeChange::Detach { force } => match (&v.instance, &v.facts.holder) {
            (Some(_), _) => Ok((true, set_attachment(t, v, None, force, now)?)),
            (None, Some(_)) => {
                let force = force || v.force_detach;
                t.execute(
                    "UPDATE volumes SET force_detach = ?2, updated_at = ?3 WHERE id = ?1",
                    params![v.id, force, now],
                )?;
                Ok((force != v.force_detach, v.attach_gen))
            }
            (None, None) => Err(StoreError::Conflict(format!(
                "volume '{}' is not attached",
                v.name
            ))),
        },
        VolumeChange::Delete => {
            if v.deleted {
                return Ok((false, 0));
            }
            if let Some((_, name)) = &v.root_of {
                return Err(StoreError::Conflict(format!(
                    "volume '{}' is the root disk of {name}: delete the instance first",
                    v.name
                )));
            }
            let holder = v.instance.as_ref().or(v.facts.holder.as_ref());
            if let Some((_, name)) = holder {
                return Err(StoreError::Conflict(format!(
                    "volume '{}' is attached to {name}: detach it first",
                    v.name
                )));
            }
            super::snapshot_changes::refuse_with_snapshots(
                t,
                v.id.uuid(),
                &format!("volume '{}'", v.name),
            )?;
            let g = hosts::generation(t, v.host_id)? + 1;
            t.execute(
                "UPDATE volumes SET deleted = 1, deleted_gen = ?2, updated_at = ?3 WHERE id = ?1",
                params![v.id, i(g), now],
            )?;
            Ok((true, 0))
        }
        VolumeChange::Revert { expected, to } => {
            if v.attach_gen != expected {
                return Ok((false, v.attach_gen));
            }
            Ok((true, set_attachment(t, v, to, false, now)?))
        }
    }
}

pub fn change(
    t: &Connection,
    id: VolumeId,
    change: VolumeChange,
    op: Option<&Operation>,
    now: Millis,
) -> Result<VolumeRow> {
    let v = by_id(t, id)?;
    let (effective, want) = apply(t, &v, change, now)?;
    if effective {
        let g = hosts::bump_generation(t, v.host_id)?;
        // What the host reported before it saw this change is old news.
        t.execute(
            "UPDATE volumes SET intent_gen = ?2, obs_error = NULL, obs_attach_error = NULL
             WHERE id = ?1",
            params![id, i(g)],
        )?;
    }
    if let Some(op) = op {
        insert_operation(t, op, want)?;
    }
    by_id(t, id)
}

pub fn attach_at_create(
    t: &Connection,
    instance: InstanceId,
    host: HostId,
    volumes: &[VolumeId],
    now: Millis,
) -> Result<()> {
    for id in volumes {
        let v = by_id(t, *id)?;
        let busy =
            v.deleted || v.instance.is_some() || v.root_of.is_some() || v.facts.holder.is_some();
        if busy || v.host_id != host {
            return Err(refused(
                format!(
                    "volume '{}' is no longer free on host {}",
                    v.name, v.host_name
                ),
                "volumes",
            ));
        }
        set_attachment(t, &v, Some(instance), false, now)?;
    }
    Ok(())
}

/// A deleted instance lets go of its volumes (they are `detaching` until
/// its host removed the VM, then `available`).
pub fn release_instance(t: &Connection, instance: InstanceId, now: Millis) -> Result<()> {
    t.execute(
        "UPDATE volumes SET instance_id = NULL, attach_gen = attach_gen + 1, force_detach = 0,
            updated_at = ?2 WHERE instance_id = ?1",
        params![instance, now],
    )?;
    Ok(())
}
