//! `/v1/agent/*`: the host agents' side of the API (see `cm_api::agent`).

use super::bearer::HostAgent;
use super::error::{ApiErr, ApiResult, Body};
use super::extract::{Path, Query};
use super::openapi::Errors;
use super::wait_secs;
use crate::app;
use crate::auth::{self, Principal};
use crate::images;
use crate::state::App;
use crate::store::{now_ms, InstanceRow};
use crate::view;
use axum::body::Body as RespBody;
use axum::extract::State;
use axum::http::header;
use axum::response::Response;
use axum::Json;
use cm_api::agent::{
    AgentReply, BootInfo, DesiredInstance, DesiredState, HostReport, ImageRef, RegisterHost,
    Registered,
};
use cm_api::answer::{Ack, AfterQuery, Delivered};
use cm_api::image::{FileRole, Image};
use cm_api::words::EventKind;
use cm_api::{validate, ErrorCode};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::time::Instant;
use uuid::Uuid;

#[utoipa::path(
    post,
    path = "/v1/agent/register",
    tag = "agent",
    request_body = cm_api::agent::RegisterHost,
    responses((status = 200, description = "registered; the body carries the host token", body = cm_api::agent::Registered), Errors),
)]
pub async fn register(
    State(app): State<Arc<App>>,
    Body(req): Body<RegisterHost>,
) -> ApiResult<Json<Registered>> {
    let presented = req.join_token.clone();
    let ok = app
        .db(move |s| auth::join_token_matches(s, &presented))
        .await?;
    if !ok {
        return Err(ApiErr::new(ErrorCode::Unauthorized, "wrong join token").field("join_token"));
    }
    validate::name("name", &req.name, false)?;
    let token = auth::new_token("cmh");
    let hash = auth::hash(&token);
    let (name, facts, h) = (req.name.clone(), req.facts.clone(), hash.clone());
    let reserved = app.settings.host_reserved_mib;
    let host_id = app
        .db(move |s| s.register_host(&name, &h, &facts, reserved))
        .await
        .map_err(|e| match e {
            app::Error::Conflict(_) => e.field("name"),
            _ => e,
        })?;
    app.remember_token(hash, Principal::Host(host_id));
    app.hub.notify(host_id);
    app.event(
        EventKind::HostRegistered,
        &req.name,
        &format!(
            "{} MiB, {} vCPUs, accel {}",
            req.facts.memory_total_mib, req.facts.vcpus, req.facts.accel
        ),
    )
    .await;
    Ok(Json(Registered {
        host_id: host_id.uuid(),
        host_token: token,
        cloud_id: app.cloud_id,
    }))
}

fn desired_instance(
    app: &App,
    row: &InstanceRow,
    images: &HashMap<Uuid, Image>,
) -> Option<DesiredInstance> {
    let img = images.get(&row.spec.image_id.uuid())?;
    // Secrets are derived again for every answer; they are never stored.
    // The NoCloud, re-key and dynamic-instance credentials are those of the
    // launch `boot_gen`: a new start makes new ones (docs/security.md).
    let boot = if row.config.is_some() {
        Some(BootInfo {
            who: row.id.to_string(),
            secret: app.keys.record_secret(row.id.uuid(), 1),
            nocloud: Some(app.keys.nocloud_secret(row.id.uuid(), row.desired.boot_gen)),
            rekey: Some(app.keys.rekey_secret(row.id.uuid(), row.desired.boot_gen)),
        })
    } else {
        row.spec.dynamic_domain.as_ref().map(|d| BootInfo {
            who: format!("@{d}/{}", row.id),
            secret: app
                .keys
                .instance_secret(d, row.id.uuid(), row.desired.boot_gen),
            nocloud: None,
            rekey: Some(app.keys.rekey_secret(row.id.uuid(), row.desired.boot_gen)),
        })
    };
    Some(DesiredInstance {
        id: row.id.uuid(),
        name: row.name.clone(),
        power: row.desired.power,
        boot_gen: row.desired.boot_gen,
        reboot_gen: row.desired.reboot_gen,
        stop_timeout_secs: row
            .desired
            .stop_timeout_now
            .unwrap_or(row.spec.stop_timeout_secs),
        memory_mib: row.spec.memory_mib,
        vcpus: row.spec.vcpus,
        accel: row.spec.accel,
        image: ImageRef {
            id: img.id,
            name: img.name.clone(),
            kind: img.kind,
            files: img.files.clone(),
            cmdline: img.cmdline.clone(),
        },
        ports: row.spec.ports.clone(),
        disk_gib: row.spec.disk_gib,
        boot,
    })
}

/// The long-poll: answers at once when the host's generation is past
/// `after` or requests wait for it, else when either happens or `wait` ends.
#[utoipa::path(
    get,
    path = "/v1/agent/desired",
    tag = "agent",
    params(cm_api::answer::AfterQuery),
    responses((status = 200, description = "OK", body = cm_api::agent::DesiredState), Errors),
    security(("bearer" = [])),
)]
pub async fn desired(
    State(app): State<Arc<App>>,
    HostAgent(host): HostAgent,
    Query(q): Query<AfterQuery>,
) -> ApiResult<Json<DesiredState>> {
    let after = q.after.unwrap_or(0);
    let deadline = Instant::now() + wait_secs(q.wait);
    let mut wake = app.hub.subscribe(host);
    loop {
        wake.borrow_and_update();
        let (generation, rows, imgs, deleted) = app
            .db(move |s| {
                let (g, rows) = s.host_desired(host)?;
                Ok((g, rows, s.list_images()?, s.host_deletions(host)?))
            })
            .await
            .map_err(removed_while_waiting)?;
        if generation > after || app.hub.has_requests(host) || Instant::now() >= deadline {
            let images: HashMap<Uuid, Image> = imgs.into_iter().map(|i| (i.id, i)).collect();
            let instances = rows
                .iter()
                .filter_map(|r| desired_instance(&app, r, &images))
                .collect();
            return Ok(Json(DesiredState {
                cloud_id: app.cloud_id,
                generation,
                instances,
                requests: app.hub.take_requests(host),
                report_interval_secs: app.settings.report_interval.as_secs() as u32,
                deleted,
            }));
        }
        let _ = tokio::time::timeout_at(deadline, wake.changed()).await;
    }
}

/// A host removed while its long-poll waited: its token is gone too.
fn removed_while_waiting(e: app::Error) -> ApiErr {
    match e {
        app::Error::NotFound(_) => ApiErr::new(
            ErrorCode::Unauthorized,
            "this host was removed from the cloud",
        ),
        e => e.into(),
    }
}

#[utoipa::path(
    post,
    path = "/v1/agent/report",
    tag = "agent",
    request_body = cm_api::agent::HostReport,
    responses((status = 200, description = "taken", body = cm_api::answer::Ack), Errors),
    security(("bearer" = [])),
)]
pub async fn report(
    State(app): State<Arc<App>>,
    HostAgent(host): HostAgent,
    Body(rep): Body<HostReport>,
) -> ApiResult<Json<Ack>> {
    let now = now_ms();
    let was = app
        .db(move |s| s.get_host(&host.to_string()))
        .await
        .map_err(removed_while_waiting)?;
    let was_down =
        view::host_state(&was, now, app.settings.host_down_after) == cm_api::host::HostState::Down;
    // The guests' heartbeats, relayed: seen `age_ms` ago by the host.
    let beats: Vec<_> = rep
        .instances
        .iter()
        .filter_map(|o| {
            o.guest.as_ref().map(|g| {
                (
                    o.id.into(),
                    g.beat.seq,
                    now - g.age_ms.min(86_400_000) as i64,
                    g.beat.services.clone(),
                )
            })
        })
        .collect();
    let host_name = was.name.clone();
    let (out, new_orphans) = app
        .db(move |s| {
            let out = s.record_report(host, &rep.facts, rep.generation, &rep.instances, now)?;
            s.record_guest_beats(host, &beats)?;
            let orphans = s.record_orphans(host, &rep.orphans, now)?;
            Ok((out, orphans))
        })
        .await?;
    for o in &new_orphans {
        app.event(
            EventKind::HostOrphan,
            &host_name,
            &format!(
                "VM {} ({}) is in no desired state of this host: stopped and kept \
                 (cm host orphans {host_name})",
                o.name, o.vm_id
            ),
        )
        .await;
    }
    for ch in &out.changed {
        let (a, ra) = view::instance_state(&ch.before, !was_down);
        let (b, rb) = view::instance_state(&ch.after, true);
        if a != b || ra != rb {
            let msg = match rb {
                Some(r) => format!("{b} ({r})"),
                None => b.to_string(),
            };
            app.event(EventKind::InstanceState, &ch.after.name, &msg)
                .await;
        }
    }
    for gone in &out.purged {
        app.event(
            EventKind::InstanceDeleted,
            &gone.name,
            &format!("removed from {}", gone.host_name),
        )
        .await;
    }
    if !out.changed.is_empty() || !out.purged.is_empty() {
        app.ops_changed();
    }
    app.kick.notify_one();
    Ok(Json(Ack {}))
}

#[utoipa::path(
    post,
    path = "/v1/agent/replies/{id}",
    tag = "agent",
    params(("id" = String, Path, description = "request id (a uuid)")),
    request_body = cm_api::agent::AgentReply,
    responses((status = 200, description = "OK", body = cm_api::answer::Delivered), Errors),
    security(("bearer" = [])),
)]
pub async fn reply(
    State(app): State<Arc<App>>,
    HostAgent(host): HostAgent,
    Path(id): Path<Uuid>,
    Body(reply): Body<AgentReply>,
) -> ApiResult<Json<Delivered>> {
    let delivered = app.hub.reply(host, id, reply);
    Ok(Json(Delivered { delivered }))
}

/// Stream an image file to a host.
#[utoipa::path(
    get,
    path = "/v1/agent/images/{id}/{role}",
    tag = "agent",
    params(("id" = String, Path, description = "image id (a uuid)"), ("role" = String, Path, description = "kernel, initrd or disk")),
    responses((status = 200, description = "the file", body = Vec<u8>, content_type = "application/octet-stream"), Errors),
    security(("bearer" = [])),
)]
pub async fn image_file(
    State(app): State<Arc<App>>,
    HostAgent(_): HostAgent,
    Path((id, role)): Path<(Uuid, String)>,
) -> ApiResult<Response> {
    let role = FileRole::parse(&role)
        .ok_or_else(|| ApiErr::invalid("role", "role must be kernel, initrd or disk"))?;
    let image = app.db(move |s| s.get_image(&id.to_string())).await?;
    let file = image.file(role).ok_or_else(|| {
        ApiErr::new(
            ErrorCode::NotFound,
            format!("image {} has no {} file", image.name, role.as_str()),
        )
    })?;
    let path = images::file_path(&app.settings.images_dir(), id, role);
    let f = tokio::fs::File::open(&path)
        .await
        .map_err(|e| ApiErr::internal(format!("image file {}: {e}", path.display())))?;
    let body = RespBody::from_stream(tokio_util::io::ReaderStream::with_capacity(f, 1 << 20));
    Response::builder()
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, file.size)
        .header("x-sha256", file.sha256.clone())
        .body(body)
        .map_err(|e| ApiErr::internal(e.to_string()))
}
