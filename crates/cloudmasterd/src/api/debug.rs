//! Test-only routes of debug builds, served with `--debug-routes` (hidden)
//! and never in the OpenAPI document: `POST /v1/debug/deployables/{name}/panic`
//! makes that deployable's DPE panic at its next pass, so tests can watch
//! the CPE restart it. Admin token only. Absent from release builds (404).

use super::bearer::Admin;
use super::error::ApiErr;
use crate::state::App;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use std::sync::Arc;
use utoipa_axum::router::OpenApiRouter;

/// `routes` with the debug routes when the master was started with them.
pub fn add(routes: OpenApiRouter<Arc<App>>, app: &App) -> OpenApiRouter<Arc<App>> {
    if !app.settings.debug_routes {
        return routes;
    }
    routes.route("/v1/debug/deployables/{name}/panic", post(panic_engine))
}

async fn panic_engine(
    State(app): State<Arc<App>>,
    _: Admin,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiErr> {
    crate::app::owned::poison(&app, name).await?;
    Ok(StatusCode::ACCEPTED)
}
