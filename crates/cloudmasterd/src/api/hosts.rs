//! `/v1/hosts`: list, show, enable/disable, and the join token.

use super::error::{ApiErr, ApiResult, Body};
use super::extract::Path;
use crate::auth::{self, Admin};
use crate::state::App;
use crate::store::now_ms;
use crate::view;
use axum::extract::State;
use axum::Json;
use cm_api::host::{Host, UpdateHost};
use std::sync::Arc;

pub const JOIN_TOKEN: &str = "join_token";

pub async fn list(State(app): State<Arc<App>>, _: Admin) -> ApiResult<Json<Vec<Host>>> {
    let rows = app.db(|s| s.list_hosts()).await?;
    let now = now_ms();
    Ok(Json(
        rows.iter()
            .map(|h| view::host(h, now, app.settings.host_down_after))
            .collect(),
    ))
}

pub async fn show(
    State(app): State<Arc<App>>,
    _: Admin,
    Path(name): Path<String>,
) -> ApiResult<Json<Host>> {
    let row = app.db(move |s| s.get_host(&name)).await?;
    Ok(Json(view::host(
        &row,
        now_ms(),
        app.settings.host_down_after,
    )))
}

pub async fn update(
    State(app): State<Arc<App>>,
    _: Admin,
    Path(name): Path<String>,
    Body(req): Body<UpdateHost>,
) -> ApiResult<Json<Host>> {
    if req.enabled.is_none() && req.memory_reserved_mib.is_none() {
        return Err(ApiErr::invalid(
            "enabled",
            "nothing to change: give enabled or memory_reserved_mib",
        ));
    }
    let row = app
        .db(move |s| s.update_host(&name, req.enabled, req.memory_reserved_mib))
        .await?;
    if let Some(e) = req.enabled {
        let what = if e {
            "enabled"
        } else {
            "disabled: no new instances"
        };
        app.event("host.state", &row.name, what).await;
    }
    Ok(Json(view::host(
        &row,
        now_ms(),
        app.settings.host_down_after,
    )))
}

pub async fn delete(
    State(app): State<Arc<App>>,
    _: Admin,
    Path(name): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let row = app.db(move |s| s.delete_host(&name)).await?;
    app.forget_host_tokens(row.id);
    app.event("host.deleted", &row.name, "removed from the cloud")
        .await;
    Ok(Json(
        serde_json::json!({ "name": row.name, "deleted": true }),
    ))
}

pub async fn join_token(
    State(app): State<Arc<App>>,
    _: Admin,
) -> ApiResult<Json<serde_json::Value>> {
    let t = app.db(|s| s.get_setting(JOIN_TOKEN)).await?;
    let t = t.ok_or_else(|| ApiErr::internal("no join token (restart the master to make one)"))?;
    Ok(Json(serde_json::json!({ "token": t })))
}

pub async fn rotate_join_token(
    State(app): State<Arc<App>>,
    _: Admin,
) -> ApiResult<Json<serde_json::Value>> {
    let t = auth::new_token("cmj");
    let t2 = t.clone();
    app.db(move |s| s.set_setting(JOIN_TOKEN, &t2)).await?;
    crate::files::write_secret(&app.settings.data_dir.join("join.token"), &t)
        .map_err(|e| ApiErr::internal(format!("writing join.token: {e}")))?;
    app.event("host.join_token", "cloud", "join token rotated")
        .await;
    Ok(Json(serde_json::json!({ "token": t })))
}
