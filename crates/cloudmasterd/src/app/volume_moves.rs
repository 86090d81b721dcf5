//! `cm volume move` (docs/storage.md, "Moving a volume"): the volume's host
//! exports it as a transfer, the new host imports it; the report that shows
//! the new file ends the move (store::sqlite::transfers).

use super::{Error, Result};
use crate::idempotency::Keyed;
use crate::state::App;
use crate::store::transfer::MoveRow;
use crate::store::{new_operation, now_ms};
use crate::view;
use axum::http::StatusCode;
use cm_api::host::HostState;
use cm_api::validate;
use cm_api::volume::{MoveVolume, Volume, VolumeAccepted, VolumeState};
use cm_api::words::OperationKind;
use uuid::Uuid;

/// A volume being moved is shown `moving`, with where to.
pub fn decorate(v: &mut Volume, moves: &[MoveRow]) {
    if let Some(m) = moves.iter().find(|m| m.volume_id.uuid() == v.id) {
        v.state = VolumeState::Moving;
        v.moving_to = Some(m.to.1.clone());
    }
}

pub async fn decorate_all(app: &App, vols: &mut [Volume]) -> Result<()> {
    let moves = app.db(|s| s.list_moves()).await?;
    for v in vols {
        decorate(v, &moves);
    }
    Ok(())
}

pub async fn move_volume(
    app: &App,
    keyed: Option<Keyed>,
    name: String,
    req: MoveVolume,
) -> Result<VolumeAccepted> {
    validate::name("host", &req.host, false)?;
    let n = name.clone();
    let row = app.db(move |s| s.get_volume(&n)).await?;
    let h = req.host.clone();
    let host = app
        .db(move |s| s.get_host(&h))
        .await
        .map_err(|e| match e {
            Error::NotFound(_) => Error::conflict(format!("no host '{}'", req.host)),
            e => e,
        })
        .map_err(|e| e.field("host"))?;
    let now = now_ms();
    if view::host_state(&host, now, app.settings.host_down_after) == HostState::Down {
        let m = format!("host {} is down", host.name);
        return Err(Error::conflict(m).field("host"));
    }
    if !host.enabled {
        let m = format!("host {} is disabled", host.name);
        return Err(Error::conflict(m).field("host"));
    }
    let op = new_operation(
        OperationKind::VolumeMove,
        &row.name,
        row.id,
        &format!("waiting for {} to send it", row.host_name),
    );
    let (o, id, to, transfer) = (op.clone(), row.id, host.id, Uuid::new_v4());
    app.db(move |s| s.start_move(id, to, transfer, &o, now_ms()))
        .await?;
    app.hub.notify(row.host_id);
    app.ops_changed();
    let n = row.name.clone();
    let after = app.db(move |s| s.get_volume(&n)).await?;
    let mut volume = view::volume(&after);
    decorate_all(app, std::slice::from_mut(&mut volume)).await?;
    let answer = VolumeAccepted {
        volume,
        operation: op,
    };
    if let Some(k) = keyed {
        remember(app, k, &answer).await;
    }
    Ok(answer)
}

/// Record a keyed request's answer (after the change: a retry within the
/// instant between them is refused as a second move, which is safe).
async fn remember(app: &App, k: Keyed, answer: &VolumeAccepted) {
    let Ok(body) = serde_json::to_vec(answer) else {
        return;
    };
    let rec = k.0.record(StatusCode::ACCEPTED.as_u16(), body, now_ms());
    let _ = app.db(move |s| s.idempotency_put(&rec)).await;
}
