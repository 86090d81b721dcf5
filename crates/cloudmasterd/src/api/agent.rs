//! `/v1/agent/*`: what hosts call with their host token (registration
//! takes the join token in its body). The rules are in `app::agent`.

use super::bearer::HostAgent;
use super::error::{ApiErr, ApiResult, Body};
use super::extract::{Path, Query};
use super::openapi::Errors;
use super::wait_secs;
use crate::app::agent;
use crate::state::App;
use axum::body::Body as RespBody;
use axum::extract::State;
use axum::http::header;
use axum::response::Response;
use axum::Json;
use cm_api::agent::{AgentReply, DesiredState, HostReport, RegisterHost, Registered};
use cm_api::answer::{Ack, AfterQuery, Delivered};
use std::sync::Arc;
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
    Ok(Json(agent::register(&app, req).await?))
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
    Ok(Json(
        agent::desired(&app, host, q.after, wait_secs(q.wait)).await?,
    ))
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
    agent::report(&app, host, rep).await?;
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
    let (path, file) = agent::image_file(&app, id, &role).await?;
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
