//! Image builds (migration 0015, docs/storage.md "Images from instances"):
//! an image made from an instance's root disk, sent as a transfer.

use super::codec::uuid;
use super::hosts;
use super::log::{finish_operation, insert_operation};
use super::transfers::{building_image_of, insert_transfer, transfer, TRANSFER_SLACK, T_COLS};
use crate::store::transfer::*;
use crate::store::*;
use cm_api::agent::DiskRef;
use cm_api::image::Image;
use cm_api::snapshot::SnapshotOf;
use rusqlite::{params, Connection, OptionalExtension};

fn refused(message: String, field: &'static str) -> StoreError {
    StoreError::Refused { message, field }
}

pub fn builds(c: &Connection, filter: &str, arg: &dyn rusqlite::ToSql) -> Result<Vec<BuildRow>> {
    let sql = format!(
        "SELECT b.image_id, b.name, b.instance_id, b.operation_id, b.created_at, {T_COLS}
         FROM image_builds b JOIN transfers t ON t.id = b.transfer_id WHERE {filter}
         ORDER BY b.name"
    );
    let mut st = c.prepare(&sql)?;
    let mut rows = st.query([arg])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        out.push(BuildRow {
            image_id: uuid(&r.get::<_, String>(0)?)?,
            name: r.get(1)?,
            instance_id: r.get(2)?,
            operation_id: uuid(&r.get::<_, String>(3)?)?,
            created_at: r.get(4)?,
            transfer: transfer(r, 5)?,
        });
    }
    Ok(out)
}

pub fn start_build(
    t: &Connection,
    image_id: uuid::Uuid,
    name: &str,
    instance: InstanceId,
    transfer: uuid::Uuid,
    op: &Operation,
    now: Millis,
) -> Result<BuildRow> {
    if super::catalog::get_image(t, name).is_ok() || !builds(t, "b.name = ?1", &name)?.is_empty() {
        return Err(refused(format!("image '{name}' exists already"), "name"));
    }
    let inst = super::instances::by_id(t, instance)?;
    if let Some(other) = building_image_of(t, instance)? {
        let m = format!("image '{other}' is being made from {} already", inst.name);
        return Err(refused(m, "instance"));
    }
    // A persistent root is a volume of the instance's host: that file is
    // the disk to send.
    let root: Option<(String, i64)> = t
        .query_row(
            "SELECT id, size_bytes FROM volumes WHERE root_of = ?1",
            [instance],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let (disk, virtual_size) = match root {
        Some((id, size)) => (
            DiskRef {
                of: SnapshotOf::Volume,
                disk: uuid(&id)?,
                backup: None,
            },
            u64::try_from(size).unwrap_or(0),
        ),
        None => (
            DiskRef {
                of: SnapshotOf::InstanceRoot,
                disk: instance.uuid(),
                backup: None,
            },
            inst.spec.disk_gib.saturating_mul(1 << 30),
        ),
    };
    let max = virtual_size.max(1 << 30).saturating_add(TRANSFER_SLACK);
    insert_transfer(
        t,
        transfer,
        Purpose::ImageCreate,
        inst.host_id,
        disk,
        max,
        now,
    )?;
    t.execute(
        "INSERT INTO image_builds (image_id, name, instance_id, transfer_id, operation_id,
             created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            image_id.to_string(),
            name,
            instance,
            transfer.to_string(),
            op.id.to_string(),
            now
        ],
    )?;
    insert_operation(t, op, 0)?;
    hosts::bump_generation(t, inst.host_id)?;
    builds(t, "b.image_id = ?1", &image_id.to_string())?
        .pop()
        .ok_or_else(|| StoreError::Corrupt("the build just written is gone".into()))
}

pub fn finish_build(
    t: &Connection,
    image_id: uuid::Uuid,
    image: std::result::Result<&Image, &str>,
    now: Millis,
) -> Result<Option<cm_api::event::Event>> {
    let Some(b) = builds(t, "b.image_id = ?1", &image_id.to_string())?.pop() else {
        return Ok(None);
    };
    use cm_api::operation::OperationStatus as S;
    let mut event = None;
    match image {
        Ok(img) => {
            super::catalog::insert_image(t, img)?;
            finish_operation(t, b.operation_id, S::Succeeded, "made", None, now)?;
            // Its event commits with it.
            let from = super::instances::by_id(t, b.instance_id)
                .map(|i| i.name)
                .unwrap_or_else(|_| b.instance_id.to_string());
            let disk = img
                .file(cm_api::image::FileRole::Disk)
                .map_or(0, |f| f.size);
            let msg = format!(
                "made from instance {from}'s disk: {}",
                cm_api::volume::approx_size(disk)
            );
            let kind = cm_api::words::EventKind::ImageAdded;
            event = Some(super::log::append_event(t, kind, &img.name, &msg, now)?);
        }
        Err(e) => {
            let body = cm_api::ErrorBody {
                code: cm_api::ErrorCode::Conflict,
                message: e.to_string(),
                field: None,
            };
            finish_operation(t, b.operation_id, S::Failed, "failed", Some(&body), now)?;
        }
    }
    t.execute(
        "DELETE FROM image_builds WHERE image_id = ?1",
        [image_id.to_string()],
    )?;
    t.execute(
        "DELETE FROM transfers WHERE id = ?1",
        [b.transfer.id.to_string()],
    )?;
    hosts::bump_generation(t, b.transfer.host_id)?;
    Ok(event)
}
