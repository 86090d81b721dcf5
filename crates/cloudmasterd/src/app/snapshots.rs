//! Snapshots (docs/storage.md, "Snapshots"): create (of a volume or of an
//! instance's root disk), list, show, restore, clone, delete, each slow
//! action recorded with its operation in one transaction; the host takes,
//! reverts or removes it, and the reconciler completes the operation from
//! its reports.

use super::{Error, Result};
use crate::idempotency::Keyed;
use crate::state::App;
use crate::store::snapshot::{NewSnapshot, SnapshotKeyed, SnapshotRow};
use crate::store::volume::{NewVolume, VolumeKeyed};
use crate::store::{new_operation, now_ms, to_ts, HostId};
use crate::{view, volume_placement};
use axum::http::StatusCode;
use cm_api::ids::VolumeId;
use cm_api::image::ImageKind;
use cm_api::operation::Operation;
use cm_api::snapshot::{
    CloneSnapshot, CreateSnapshot, Snapshot, SnapshotAccepted, SnapshotOf, SnapshotState,
};
use cm_api::validate;
use cm_api::volume::{VolumeAccepted, VOLUME_SIZE_UNIT};
use cm_api::words::OperationKind;
use uuid::Uuid;

pub fn state(s: &SnapshotRow) -> SnapshotState {
    if s.deleted {
        SnapshotState::Deleting
    } else if s.restoring {
        SnapshotState::Restoring
    } else if s.facts.consistency.is_some() {
        SnapshotState::Ready
    } else if s.facts.error.is_some() {
        SnapshotState::Error
    } else {
        SnapshotState::Creating
    }
}

pub fn state_word(s: SnapshotState) -> &'static str {
    match s {
        SnapshotState::Creating => "creating",
        SnapshotState::Ready => "ready",
        SnapshotState::Restoring => "restoring",
        SnapshotState::Deleting => "deleting",
        SnapshotState::Error => "error",
    }
}

pub fn view(s: &SnapshotRow) -> Snapshot {
    Snapshot {
        id: s.id,
        name: s.name.clone(),
        state: state(s),
        of: s.of,
        source: s.source_name.clone(),
        source_id: s.disk_id,
        host: s.host_name.clone(),
        consistency: s.facts.consistency,
        size_bytes: s.facts.size_bytes,
        error: s.facts.error.clone(),
        created_at: to_ts(s.created_at),
    }
}

/// The disk a `--volume` or `--instance` names (its id).
async fn disk_of(
    app: &App,
    volume: Option<String>,
    instance: Option<String>,
) -> Result<Option<(SnapshotOf, Uuid)>> {
    match (volume, instance) {
        (Some(_), Some(_)) => Err(Error::invalid(
            "volume",
            "give a volume or an instance, not both",
        )),
        (None, None) => Ok(None),
        (Some(v), None) => {
            validate::name("volume", &v, false)?;
            let row = app
                .db(move |s| s.get_volume(&v))
                .await
                .map_err(|e| e.field("volume"))?;
            Ok(Some((SnapshotOf::Volume, row.id.uuid())))
        }
        (None, Some(i)) => {
            validate::name("instance", &i, false)?;
            let row = app
                .db(move |s| s.get_instance(&i))
                .await
                .map_err(|e| e.field("instance"))?;
            // A persistent root is a volume: its snapshots stay with it.
            if let Some(root) = row.root_volume {
                let v = app
                    .db(move |s| s.get_volume(&root))
                    .await
                    .map_err(|e| e.field("instance"))?;
                return Ok(Some((SnapshotOf::Volume, v.id.uuid())));
            }
            Ok(Some((SnapshotOf::InstanceRoot, row.id.uuid())))
        }
    }
}

pub async fn list(
    app: &App,
    volume: Option<String>,
    instance: Option<String>,
) -> Result<Vec<Snapshot>> {
    let disk = disk_of(app, volume, instance).await?;
    let rows = app.db(|s| s.list_snapshots()).await?;
    Ok(rows
        .iter()
        .filter(|s| disk.is_none_or(|(_, d)| s.disk_id == d))
        .map(view)
        .collect())
}

async fn get(app: &App, name: String) -> Result<SnapshotRow> {
    app.db(move |s| s.get_snapshot(&name)).await
}

pub async fn show(app: &App, name: String) -> Result<Snapshot> {
    Ok(view(&get(app, name).await?))
}

fn keyed_answer(keyed: Option<Keyed>, op: &Operation) -> Option<SnapshotKeyed> {
    keyed.map(|k| {
        let op = op.clone();
        SnapshotKeyed {
            record: k
                .0
                .record(StatusCode::ACCEPTED.as_u16(), Vec::new(), now_ms()),
            render: Box::new(move |row| {
                serde_json::to_vec(&SnapshotAccepted {
                    snapshot: view(row),
                    operation: op.clone(),
                })
            }),
        }
    })
}

fn changed(app: &App, host: HostId) {
    app.hub.notify(host);
    app.ops_changed();
    app.kick.notify_one();
}

pub async fn create(
    app: &App,
    keyed: Option<Keyed>,
    req: CreateSnapshot,
) -> Result<SnapshotAccepted> {
    validate::name("name", &req.name, false)?;
    let instance = req.instance.clone();
    let Some((of, disk_id)) = disk_of(app, req.volume, req.instance).await? else {
        return Err(Error::invalid(
            "volume",
            "give the volume (--volume) or the instance (--instance) to snapshot",
        ));
    };
    if of == SnapshotOf::InstanceRoot {
        let id = disk_id.to_string();
        let img = app
            .db(move |s| {
                let row = s.get_instance(&id)?;
                s.get_image(&row.spec.image_id.to_string())
            })
            .await?;
        if img.kind == ImageKind::Kernel {
            return Err(Error::conflict(format!(
                "instance '{}' boots kernel image {}: it has no root disk to snapshot",
                instance.unwrap_or_default(),
                img.name
            ))
            .field("instance"));
        }
    }
    let new = NewSnapshot {
        id: Uuid::new_v4(),
        name: req.name.clone(),
        of,
        disk_id,
    };
    let op = new_operation(
        OperationKind::SnapshotCreate,
        &new.name,
        new.id,
        "recorded; waiting for the host to take it",
    );
    let answer = keyed_answer(keyed, &op);
    let o = op.clone();
    let row = app
        .db(move |s| s.create_snapshot(&new, &o, answer.as_ref(), now_ms()))
        .await
        .map_err(|e| match e {
            Error::AlreadyExists(_) => e.field("name"),
            e => e,
        })?;
    changed(app, row.host_id);
    Ok(SnapshotAccepted {
        snapshot: view(&row),
        operation: op,
    })
}

pub async fn restore(app: &App, keyed: Option<Keyed>, name: String) -> Result<SnapshotAccepted> {
    let row = get(app, name).await?;
    let op = new_operation(
        OperationKind::SnapshotRestore,
        &row.name,
        row.id,
        "waiting for the host to revert the disk",
    );
    let answer = keyed_answer(keyed, &op);
    let (o, id) = (op.clone(), row.id);
    let row = app
        .db(move |s| s.restore_snapshot(id, &o, answer.as_ref(), now_ms()))
        .await?;
    changed(app, row.host_id);
    Ok(SnapshotAccepted {
        snapshot: view(&row),
        operation: op,
    })
}

pub async fn delete(app: &App, keyed: Option<Keyed>, name: String) -> Result<SnapshotAccepted> {
    let row = get(app, name).await?;
    let op = new_operation(
        OperationKind::SnapshotDelete,
        &row.name,
        row.id,
        "waiting for the host to remove it",
    );
    let answer = keyed_answer(keyed, &op);
    let (o, id) = (op.clone(), row.id);
    let row = app
        .db(move |s| s.delete_snapshot(id, &o, answer.as_ref(), now_ms()))
        .await?;
    changed(app, row.host_id);
    Ok(SnapshotAccepted {
        snapshot: view(&row),
        operation: op,
    })
}

/// A new volume from the snapshot, on its host (a `volume.create`).
pub async fn clone(
    app: &App,
    keyed: Option<Keyed>,
    name: String,
    req: CloneSnapshot,
) -> Result<VolumeAccepted> {
    validate::name("volume", &req.volume, false)?;
    let row = get(app, name).await?;
    let size = match (row.facts.size_bytes, row.deleted) {
        (Some(size), false) => size,
        _ => {
            return Err(Error::conflict(format!(
                "snapshot '{}' is {}: only a taken snapshot is cloned",
                row.name,
                state_word(state(&row))
            )))
        }
    };
    // A disk's virtual size is whole MiB when cloudmaster made it; a
    // clone is of at least the snapshot's size.
    let size_bytes = size.div_ceil(VOLUME_SIZE_UNIT) * VOLUME_SIZE_UNIT;
    let new = NewVolume {
        id: VolumeId::new_v4(),
        name: req.volume.clone(),
        size_bytes,
    };
    let place = volume_placement::Request {
        size_mib: size_bytes / VOLUME_SIZE_UNIT,
        host: Some(row.host_name.clone()),
        now: now_ms(),
        down_after: app.settings.host_down_after,
    };
    let op = new_operation(
        OperationKind::VolumeCreate,
        &new.name,
        new.id,
        &format!(
            "cloning snapshot {}; waiting for the host to make it",
            row.name
        ),
    );
    let answer = keyed.map(|k| {
        let op = op.clone();
        VolumeKeyed {
            record: k
                .0
                .record(StatusCode::ACCEPTED.as_u16(), Vec::new(), now_ms()),
            render: Box::new(move |v| {
                serde_json::to_vec(&VolumeAccepted {
                    volume: view::volume(v),
                    operation: op.clone(),
                })
            }),
        }
    });
    let (o, id) = (op.clone(), row.id);
    let vol = app
        .db(move |s| {
            s.clone_snapshot(
                id,
                &new,
                &|spaces| volume_placement::place(&place, spaces),
                &o,
                answer.as_ref(),
                now_ms(),
            )
        })
        .await
        .map_err(|e| match e {
            Error::AlreadyExists(_) => e.field("volume"),
            e => e,
        })?;
    changed(app, vol.host_id);
    Ok(VolumeAccepted {
        volume: view::volume(&vol),
        operation: op,
    })
}
