//! `POST /v1/tokens/admin/rotate`: a new admin token; the old one stops
//! working at once.

use super::bearer::Admin;
use super::error::ApiResult;
use super::openapi::Errors;
use crate::auth;
use crate::state::App;
use axum::extract::State;
use axum::Json;
use cm_api::answer::TokenFile;
use cm_api::words::EventKind;
use std::sync::Arc;

#[utoipa::path(
    post,
    path = "/v1/tokens/admin/rotate",
    tag = "tokens",
    responses((status = 200, description = "the new admin token", body = cm_api::answer::TokenFile), Errors),
    security(("bearer" = [])),
)]
pub async fn rotate_admin(State(app): State<Arc<App>>, _: Admin) -> ApiResult<Json<TokenFile>> {
    let dir = app.settings.data_dir.clone();
    let token = app
        .db_with(move |s| auth::rotate_admin_token(s, &dir))
        .await?;
    // Take the change up now rather than at the next refresh.
    app.refresh_tokens().await?;
    app.event(
        EventKind::TokenRotated,
        "admin",
        "admin token rotated: the old one no longer works",
    )
    .await;
    Ok(Json(TokenFile {
        token,
        file: super::hosts::token_file(&app, auth::ADMIN_TOKEN_FILE),
    }))
}
