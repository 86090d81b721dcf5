//! `POST /v1/tokens/admin/rotate`: a new admin token; the old one stops
//! working at once (`app::hosts::rotate_admin`).

use super::bearer::Admin;
use super::error::ApiResult;
use super::openapi::Errors;
use crate::app::hosts;
use crate::state::App;
use axum::extract::State;
use axum::Json;
use cm_api::answer::TokenFile;
use std::sync::Arc;

#[utoipa::path(
    post,
    path = "/v1/tokens/admin/rotate",
    tag = "tokens",
    responses((status = 200, description = "the new admin token", body = cm_api::answer::TokenFile), Errors),
    security(("bearer" = [])),
)]
pub async fn rotate_admin(State(app): State<Arc<App>>, _: Admin) -> ApiResult<Json<TokenFile>> {
    Ok(Json(hosts::rotate_admin(&app).await?))
}
