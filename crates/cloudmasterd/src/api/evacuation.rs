//! `POST /v1/hosts/{name}/evacuate`: rebuild a dead host's instances on
//! other hosts from their images (their disks on the dead host are lost to
//! them; if the host returns, its VMs are orphans: stopped and kept).

use super::bearer::Admin;
use super::error::{ApiResult, Body};
use super::extract::Path;
use super::openapi::Errors;
use crate::scheduler;
use crate::state::App;
use crate::store::now_ms;
use crate::view;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use cm_api::host::{EvacuateHost, Evacuated, Evacuation, HostState};
use cm_api::words::EventKind;
use std::sync::Arc;

#[utoipa::path(
    post,
    path = "/v1/hosts/{name}/evacuate",
    tag = "hosts",
    params(("name" = String, Path, description = "host name")),
    request_body = cm_api::host::EvacuateHost,
    responses((status = 202, description = "the instances are being rebuilt elsewhere", body = cm_api::host::Evacuation), Errors),
    security(("bearer" = [])),
)]
pub async fn evacuate(
    State(app): State<Arc<App>>,
    _: Admin,
    Path(name): Path<String>,
    Body(req): Body<EvacuateHost>,
) -> ApiResult<(StatusCode, Json<Evacuation>)> {
    let down_after = app.settings.host_down_after;
    let (host, moved) = app
        .db(move |s| {
            let now = now_ms();
            s.evacuate_host(
                &name,
                req.force,
                &|h| view::host_state(h, now, down_after) == HostState::Down,
                &|row, caps| {
                    let sched = scheduler::Request {
                        memory_mib: row.spec.memory_mib,
                        ports: row.spec.ports.clone(),
                        accel: row.spec.accel,
                        host: None,
                        now,
                        down_after,
                    };
                    scheduler::place(&sched, caps)
                },
                now,
            )
        })
        .await?;
    let mut out = Vec::new();
    for m in &moved {
        app.hub.notify(m.row.host_id);
        app.event(
            EventKind::InstanceEvacuated,
            &m.row.name,
            &format!(
                "rebuilt on {} from image {} (its disk on {} is lost to it)",
                m.row.host_name, m.row.spec.image_name, host.name
            ),
        )
        .await;
        out.push(Evacuated {
            instance: m.row.name.clone(),
            id: m.row.id.uuid(),
            to_host: m.row.host_name.clone(),
            operation: m.op.clone(),
        });
    }
    app.hub.notify(host.id);
    app.event(
        EventKind::HostEvacuated,
        &host.name,
        &format!("{} instance(s) moved to other hosts", moved.len()),
    )
    .await;
    app.ops_changed();
    app.kick.notify_one();
    Ok((
        StatusCode::ACCEPTED,
        Json(Evacuation {
            host: host.name,
            instances: out,
        }),
    ))
}
