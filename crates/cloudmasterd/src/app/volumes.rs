//! Volumes (docs/storage.md): create (placed on a host with room), list,
//! show, and the slow actions (resize, attach, detach, delete), each
//! recorded with its operation in one transaction; the host makes the
//! change and the reconciler completes the operation from its reports.

use super::{Error, Result};
use crate::idempotency::Keyed;
use crate::state::App;
use crate::store::volume::{NewVolume, VolumeChange, VolumeKeyed, VolumeRow};
use crate::store::{new_operation, now_ms, HostId};
use crate::{view, volume_placement};
use axum::http::StatusCode;
use cm_api::ids::VolumeId;
use cm_api::instance::CreateInstance;
use cm_api::operation::Operation;
use cm_api::validate;
use cm_api::volume::{
    AttachVolume, CreateVolume, DetachVolume, ResizeVolume, Volume, VolumeAccepted,
    MAX_VOLUME_BYTES, MIN_VOLUME_BYTES, VOLUME_SIZE_UNIT,
};
use cm_api::words::OperationKind;

/// A size is whole MiB, from 1 MiB to 64 TiB (`size_bytes`).
pub fn check_size(size_bytes: u64) -> Result<()> {
    if !size_bytes.is_multiple_of(VOLUME_SIZE_UNIT) {
        return Err(Error::invalid(
            "size_bytes",
            format!("size_bytes must be whole MiB (a multiple of {VOLUME_SIZE_UNIT})"),
        ));
    }
    if !(MIN_VOLUME_BYTES..=MAX_VOLUME_BYTES).contains(&size_bytes) {
        return Err(Error::invalid(
            "size_bytes",
            format!("size_bytes must be {MIN_VOLUME_BYTES} (1 MiB) to {MAX_VOLUME_BYTES} (64 TiB)"),
        ));
    }
    Ok(())
}

pub async fn list(app: &App) -> Result<Vec<Volume>> {
    let rows = app.db(|s| s.list_volumes()).await?;
    let mut vols: Vec<Volume> = rows.iter().map(view::volume).collect();
    super::volume_moves::decorate_all(app, &mut vols).await?;
    Ok(vols)
}

pub async fn show(app: &App, name: String) -> Result<Volume> {
    let row = app.db(move |s| s.get_volume(&name)).await?;
    let mut vol = view::volume(&row);
    super::volume_moves::decorate_all(app, std::slice::from_mut(&mut vol)).await?;
    Ok(vol)
}

/// The answer a keyed request records in its change's own transaction.
fn keyed_answer(keyed: Option<Keyed>, op: &Operation) -> Option<VolumeKeyed> {
    keyed.map(|k| {
        let op = op.clone();
        VolumeKeyed {
            record: k
                .0
                .record(StatusCode::ACCEPTED.as_u16(), Vec::new(), now_ms()),
            render: Box::new(move |row| {
                serde_json::to_vec(&VolumeAccepted {
                    volume: view::volume(row),
                    operation: op.clone(),
                })
            }),
        }
    })
}

/// The host and the operations' waiters hear of a change.
fn changed(app: &App, host: HostId) {
    app.hub.notify(host);
    app.ops_changed();
    app.kick.notify_one();
}

pub async fn create(app: &App, keyed: Option<Keyed>, req: CreateVolume) -> Result<VolumeAccepted> {
    validate::name("name", &req.name, false)?;
    check_size(req.size_bytes)?;
    if let Some(h) = &req.host {
        validate::name("host", h, false)?;
    }
    let new = NewVolume {
        id: VolumeId::new_v4(),
        name: req.name.clone(),
        size_bytes: req.size_bytes,
    };
    let place = volume_placement::Request {
        size_mib: req.size_bytes / VOLUME_SIZE_UNIT,
        host: req.host.clone(),
        now: now_ms(),
        down_after: app.settings.host_down_after,
    };
    let op = new_operation(
        OperationKind::VolumeCreate,
        &new.name,
        new.id,
        "placed; waiting for the host to make it",
    );
    let answer = keyed_answer(keyed, &op);
    let o = op.clone();
    let row = app
        .db(move |s| {
            s.create_volume(
                &new,
                &|spaces| volume_placement::place(&place, spaces),
                &o,
                answer.as_ref(),
                now_ms(),
            )
        })
        .await?;
    changed(app, row.host_id);
    Ok(VolumeAccepted {
        volume: view::volume(&row),
        operation: op,
    })
}

/// Record a change of a volume with its operation.
async fn act(
    app: &App,
    keyed: Option<Keyed>,
    row: VolumeRow,
    kind: OperationKind,
    change: VolumeChange,
    progress: &str,
) -> Result<VolumeAccepted> {
    let op = new_operation(kind, &row.name, row.id, progress);
    let answer = keyed_answer(keyed, &op);
    let (o, id) = (op.clone(), row.id);
    let row = app
        .db(move |s| s.change_volume(id, change, Some(&o), answer.as_ref(), now_ms()))
        .await?;
    changed(app, row.host_id);
    Ok(VolumeAccepted {
        volume: view::volume(&row),
        operation: op,
    })
}

async fn get(app: &App, name: String) -> Result<VolumeRow> {
    app.db(move |s| s.get_volume(&name)).await
}

pub async fn resize(
    app: &App,
    keyed: Option<Keyed>,
    name: String,
    req: ResizeVolume,
) -> Result<VolumeAccepted> {
    check_size(req.size_bytes)?;
    let row = get(app, name).await?;
    if req.size_bytes < row.size_bytes {
        return Err(Error::invalid(
            "size_bytes",
            format!(
                "volume '{}' is {}: a volume is never shrunk",
                row.name,
                cm_api::volume::human_size(row.size_bytes)
            ),
        ));
    }
    let change = VolumeChange::Resize {
        size_bytes: req.size_bytes,
    };
    let kind = OperationKind::VolumeResize;
    act(
        app,
        keyed,
        row,
        kind,
        change,
        "waiting for the host to grow it",
    )
    .await
}

pub async fn attach(
    app: &App,
    keyed: Option<Keyed>,
    name: String,
    req: AttachVolume,
) -> Result<VolumeAccepted> {
    let row = get(app, name).await?;
    let inst = req.instance.clone();
    let instance = app
        .db(move |s| s.get_instance(&inst))
        .await
        .map_err(|e| e.field("instance"))?;
    let change = VolumeChange::Attach {
        instance: instance.id,
    };
    let kind = OperationKind::VolumeAttach;
    let progress = format!("waiting for {} to hold it", instance.name);
    act(app, keyed, row, kind, change, &progress).await
}

pub async fn detach(
    app: &App,
    keyed: Option<Keyed>,
    name: String,
    req: DetachVolume,
) -> Result<VolumeAccepted> {
    let row = get(app, name).await?;
    let change = VolumeChange::Detach { force: req.force };
    let kind = OperationKind::VolumeDetach;
    act(
        app,
        keyed,
        row,
        kind,
        change,
        "waiting for the guest to release it",
    )
    .await
}

pub async fn delete(app: &App, keyed: Option<Keyed>, name: String) -> Result<VolumeAccepted> {
    let row = get(app, name).await?;
    let kind = OperationKind::VolumeDelete;
    let progress = "waiting for the host to remove its file";
    act(app, keyed, row, kind, VolumeChange::Delete, progress).await
}

/// The volumes an instance is created with (`CreateInstance.volumes`):
/// their ids in order, and the host they put it on. Refused (field
/// `volumes`) when they are on two hosts, one is attached (or attaching,
/// or detaching), or `--host` names another host.
pub(super) async fn for_new_instance(
    app: &App,
    req: &CreateInstance,
) -> Result<(Vec<VolumeId>, Option<String>)> {
    if req.volumes.is_empty() {
        return Ok((Vec::new(), req.host.clone()));
    }
    if req.volumes.len() > 64 {
        return Err(Error::invalid("volumes", "at most 64 volumes"));
    }
    let names = req.volumes.clone();
    let rows = app
        .db(move |s| names.iter().map(|n| s.get_volume(n)).collect())
        .await
        .map_err(|e| e.field("volumes"))?;
    let rows: Vec<VolumeRow> = rows;
    let mut ids = Vec::new();
    for v in &rows {
        if ids.contains(&v.id) {
            return Err(Error::invalid(
                "volumes",
                format!("volume '{}' is given twice", v.name),
            ));
        }
        ids.push(v.id);
        let busy = v.user().or(v.facts.holder.as_ref());
        let refuse = |m: String| Err(Error::conflict(m).field("volumes"));
        if v.deleted {
            return refuse(format!("volume '{}' is being deleted", v.name));
        }
        if let Some((_, holder)) = busy {
            return refuse(format!("volume '{}' is attached to {holder}", v.name));
        }
        if v.host_id != rows[0].host_id {
            return refuse(format!(
                "volumes '{}' and '{}' are on two hosts ({} and {}): an instance runs where \
                 its volumes are",
                rows[0].name, v.name, rows[0].host_name, v.host_name
            ));
        }
    }
    let host = rows[0].host_name.clone();
    if let Some(asked) = &req.host {
        if *asked != host {
            return Err(Error::conflict(format!(
                "the volumes are on host {host}, not {asked}: an instance runs where its \
                 volumes are"
            ))
            .field("volumes"));
        }
    }
    Ok((ids, Some(host)))
}
