//! `/v1/hosts/{name}/orphans`: VMs a host keeps that are no instance of
//! that host, and the operator's decision to delete them (docs/host.md).
//! The rules are in `app::hosts`.

use super::bearer::Admin;
use super::error::{ApiResult, Body};
use super::extract::Path;
use super::openapi::Errors;
use crate::app::hosts;
use crate::state::App;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use cm_api::host::{Orphan, PurgeOrphans};
use std::sync::Arc;

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
    Ok(Json(hosts::orphans(&app, name).await?))
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
    let rows = hosts::purge_orphans(&app, name, req).await?;
    Ok((StatusCode::ACCEPTED, Json(rows)))
}
