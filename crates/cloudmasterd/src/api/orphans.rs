//! `/v1/hosts/{name}/orphans`: VMs a host keeps that are no instance of
//! that host, and the operator's decision to delete them (docs/host.md).

use super::bearer::Admin;
use super::error::{ApiResult, Body};
use super::extract::Path;
use super::openapi::Errors;
use crate::state::App;
use crate::store::{to_ts, OrphanRow};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use cm_api::host::{Orphan, PurgeOrphans};
use cm_api::words::EventKind;
use std::sync::Arc;

fn view(o: &OrphanRow) -> Orphan {
    Orphan {
        id: o.vm_id,
        name: o.name.clone(),
        state: o.state,
        disk_bytes: o.disk_bytes,
        purge_requested: o.purge,
        now_on_host: o.now_on_host.clone(),
        first_seen: to_ts(o.first_seen),
        last_seen: to_ts(o.last_seen),
    }
}

#[utoipa::path(
    get,
    path = "/v1/hosts/{name}/orphans",
    tag = "hosts",
    params(("name" = String, Path, description = "host name")),
    responses((status = 200, description = "OK", body = Vec<cm_api::host::Orphan>), Errors),
    security(("bearer" = [])),
)]
pub async fn list(
    State(app): State<Arc<App>>,
    _: Admin,
    Path(name): Path<String>,
) -> ApiResult<Json<Vec<Orphan>>> {
    let rows = app
        .db(move |s| {
            let h = s.get_host(&name)?;
            s.list_orphans(h.id)
        })
        .await?;
    Ok(Json(rows.iter().map(view).collect()))
}

/// Record the decision; the host removes their files when it next applies
/// its desired state (they leave the list once it reports them gone).
#[utoipa::path(
    post,
    path = "/v1/hosts/{name}/orphans/purge",
    tag = "hosts",
    params(("name" = String, Path, description = "host name")),
    request_body = cm_api::host::PurgeOrphans,
    responses((status = 202, description = "purge requested", body = Vec<cm_api::host::Orphan>), Errors),
    security(("bearer" = [])),
)]
pub async fn purge(
    State(app): State<Arc<App>>,
    _: Admin,
    Path(name): Path<String>,
    Body(req): Body<PurgeOrphans>,
) -> ApiResult<(StatusCode, Json<Vec<Orphan>>)> {
    let (host, rows) = app
        .db(move |s| {
            let h = s.get_host(&name)?;
            let rows = s.purge_orphans(h.id, &req.ids)?;
            Ok((h, rows))
        })
        .await?;
    app.hub.notify(host.id);
    for o in &rows {
        app.event(
            EventKind::HostOrphan,
            &host.name,
            &format!("VM {} ({}): purge requested", o.name, o.vm_id),
        )
        .await;
    }
    Ok((StatusCode::ACCEPTED, Json(rows.iter().map(view).collect())))
}
