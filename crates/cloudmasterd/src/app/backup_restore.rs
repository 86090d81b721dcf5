//! A restore (docs/storage.md, "Backups (point 6)"): a new volume `as`
//! from a made backup, placed as a create is on `host` (default: the
//! chain's host); the chain's host sends the backup flattened and the
//! volume's host imports it (the move's machinery, app::transfers).

use super::backups::{changed, state, state_word};
use super::{Error, Result};
use crate::idempotency::Keyed;
use crate::state::App;
use crate::store::volume::{NewVolume, VolumeKeyed};
use crate::store::{new_operation, now_ms};
use crate::volume_placement;
use axum::http::StatusCode;
use cm_api::backup::RestoreBackup;
use cm_api::ids::VolumeId;
use cm_api::validate;
use cm_api::volume::{VolumeAccepted, VOLUME_SIZE_UNIT};
use cm_api::words::OperationKind;
use uuid::Uuid;

/// A new volume `as` from a made backup, on `host` (default: the chain's
/// host): a transfer from the chain's host, imported on the volume's.
pub async fn restore(
    app: &App,
    keyed: Option<Keyed>,
    name: String,
    req: RestoreBackup,
) -> Result<VolumeAccepted> {
    validate::name("as", &req.as_name, false)?;
    if let Some(h) = &req.host {
        validate::name("host", h, false)?;
    }
    let row = app.db(move |s| s.get_backup(&name)).await?;
    let Some(size) = row.facts.size_bytes.filter(|_| !row.deleted) else {
        return Err(Error::conflict(format!(
            "backup '{}' is {}: only a made backup is restored",
            row.name,
            state_word(state(&row))
        )));
    };
    let size_bytes = size.div_ceil(VOLUME_SIZE_UNIT) * VOLUME_SIZE_UNIT;
    let new = NewVolume {
        id: VolumeId::new_v4(),
        name: req.as_name.clone(),
        size_bytes,
    };
    let place = volume_placement::Request {
        size_mib: size_bytes / VOLUME_SIZE_UNIT,
        host: Some(req.host.clone().unwrap_or_else(|| row.host_name.clone())),
        now: now_ms(),
        down_after: app.settings.host_down_after,
    };
    let op = new_operation(
        OperationKind::BackupRestore,
        &new.name,
        new.id,
        &format!(
            "restoring backup {}: waiting for host {} to send it",
            row.name, row.host_name
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
                    volume: crate::view::volume(v),
                    operation: op.clone(),
                })
            }),
        }
    });
    let (o, id, chain_host) = (op.clone(), row.id, row.host_id);
    let vol = app
        .db(move |s| {
            s.restore_backup(
                id,
                &new,
                &|spaces| volume_placement::place(&place, spaces),
                Uuid::new_v4(),
                &o,
                answer.as_ref(),
                now_ms(),
            )
        })
        .await
        .map_err(|e| match e {
            Error::AlreadyExists(_) => e.field("as"),
            e => e,
        })?;
    changed(app, chain_host);
    changed(app, vol.host_id);
    Ok(VolumeAccepted {
        volume: crate::view::volume(&vol),
        operation: op,
    })
}
