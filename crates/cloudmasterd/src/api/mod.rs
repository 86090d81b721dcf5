//! The REST API (DESIGN.md §3). Handlers only translate HTTP into store
//! calls and typed changes; the rules live in `scheduler`, `reconciler`
//! and `store`.

pub mod agent;
pub mod boot;
pub mod catalog;
pub mod configs;
pub mod error;
pub mod events;
pub mod guest_trust;
pub mod hosts;
pub mod instances;

use crate::auth;
use crate::state::App;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use cm_api::ErrorCode;
use error::ApiErr;
use std::sync::Arc;
use tower_http::catch_panic::CatchPanicLayer;

/// Request bodies larger than this are refused with `body_too_large`.
pub const MAX_BODY: usize = 4 * 1024 * 1024;

pub fn router(app: Arc<App>) -> Router {
    let authed = Router::new()
        .route("/v1/info", get(info))
        .route("/v1/hosts", get(hosts::list))
        .route(
            "/v1/hosts/join-token",
            get(hosts::join_token).post(hosts::rotate_join_token),
        )
        .route(
            "/v1/hosts/{name}",
            get(hosts::show).patch(hosts::update).delete(hosts::delete),
        )
        .route(
            "/v1/images",
            get(catalog::list_images).post(catalog::create_image),
        )
        .route(
            "/v1/images/{name}",
            get(catalog::show_image).delete(catalog::delete_image),
        )
        .route(
            "/v1/flavors",
            get(catalog::list_flavors).post(catalog::create_flavor),
        )
        .route(
            "/v1/flavors/{name}",
            get(catalog::show_flavor).delete(catalog::delete_flavor),
        )
        .route(
            "/v1/instances",
            get(instances::list).post(instances::create),
        )
        .route(
            "/v1/instances/{name}",
            get(instances::show).delete(instances::delete),
        )
        .route("/v1/instances/{name}/start", post(instances::start))
        .route("/v1/instances/{name}/stop", post(instances::stop))
        .route("/v1/instances/{name}/reboot", post(instances::reboot))
        .route("/v1/instances/{name}/console", get(instances::console))
        .route("/v1/operations", get(events::list_operations))
        .route("/v1/operations/{id}", get(events::show_operation))
        .route("/v1/events", get(events::list_events))
        .route(
            "/v1/configs",
            get(configs::list).post(configs::pre_register),
        )
        .route("/v1/configs/remove-stale", post(configs::remove_stale))
        .route(
            "/v1/configs/{uuid}",
            get(configs::detail).delete(configs::remove),
        )
        .route(
            "/v1/configs/{uuid}/config",
            axum::routing::put(configs::set_config),
        )
        .route(
            "/v1/config-domains",
            get(configs::list_domains).post(configs::create_domain),
        )
        .route(
            "/v1/config-domains/{name}",
            axum::routing::delete(configs::delete_domain),
        )
        .route("/v1/agent/desired", get(agent::desired))
        .route("/v1/agent/report", post(agent::report))
        .route("/v1/agent/replies/{id}", post(agent::reply))
        .route("/v1/agent/images/{id}/{role}", get(agent::image_file))
        .route_layer(middleware::from_fn_with_state(
            app.clone(),
            auth::require_token,
        ));
    // Registration carries its own proof (the join token) in the body;
    // guests prove themselves with their record's secret (HTTP Basic).
    let open = Router::new()
        .route("/v1/agent/register", post(agent::register))
        .route("/boot/v1/configs/{uuid}", get(boot::fetch))
        .route(
            "/boot/v1/configs/{uuid}/status",
            axum::routing::put(boot::update_cache),
        )
        .route("/boot/v1/configs/{uuid}/heartbeat", post(boot::heartbeat))
        .route("/boot/v1/assign", post(boot::assign))
        .route("/nocloud/{uuid}/{file}", get(boot::nocloud));
    authed
        .merge(open)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(CatchPanicLayer::custom(panic_response))
        .with_state(app)
}

async fn info(
    axum::extract::State(app): axum::extract::State<Arc<App>>,
    _: auth::Admin,
) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "cloud_id": app.cloud_id,
        "version": env!("CARGO_PKG_VERSION"),
        "report_interval_secs": app.settings.report_interval.as_secs(),
        "host_down_after_secs": app.settings.host_down_after.as_secs(),
    }))
}

async fn not_found(uri: axum::http::Uri) -> ApiErr {
    ApiErr::new(
        ErrorCode::NotFound,
        format!("no such endpoint: {}", uri.path()),
    )
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiErr {
    ApiErr::new(
        ErrorCode::MethodNotAllowed,
        format!("{method} is not allowed on {}", uri.path()),
    )
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked");
    ApiErr::internal("internal error (the master logged it)").into_response()
}

/// Query parameter `wait` (seconds), capped.
pub fn wait_secs(v: Option<u64>) -> std::time::Duration {
    std::time::Duration::from_secs(v.unwrap_or(0).min(60))
}
