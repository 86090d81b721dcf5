//! `POST /v1/hosts/{name}/evacuate`: rebuild a dead host's instances on
//! other hosts from their images (`app::hosts::evacuate`).

use super::bearer::Admin;
use super::error::{ApiResult, Body};
use super::extract::Path;
use super::openapi::Errors;
use crate::app::hosts;
use crate::state::App;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use cm_api::host::{EvacuateHost, Evacuation};
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
    let done = hosts::evacuate(&app, name, req).await?;
    Ok((StatusCode::ACCEPTED, Json(done)))
}
