//! The REST API (DESIGN.md §3). Handlers only translate HTTP into store
//! calls and typed changes; the rules live in `scheduler`, `reconciler`
//! and `store`.

pub mod agent;
pub mod boot;
pub mod catalog;
pub mod configs;
pub mod error;
pub mod evacuation;
pub mod events;
pub mod extract;
pub mod guest_trust;
pub mod hosts;
pub mod instances;
pub mod limits;
pub mod orphans;
#[cfg(test)]
mod tests;
pub mod tokens;
pub mod uploads;

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
use tower_http::limit::RequestBodyLimitLayer;

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
        .route("/v1/hosts/{name}/evacuate", post(evacuation::evacuate))
        .route("/v1/hosts/{name}/orphans", get(orphans::list))
        .route("/v1/hosts/{name}/orphans/purge", post(orphans::purge))
        .route("/v1/tokens/admin/rotate", post(tokens::rotate_admin))
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
        .route("/v1/uploads", get(uploads::list).post(uploads::create))
        .route(
            "/v1/uploads/{id}",
            get(uploads::show)
                .delete(uploads::delete)
                .patch(uploads::write)
                // The one route whose body is not read whole: it streams to
                // disk, bounded by the upload's declared size.
                .layer(DefaultBodyLimit::disable()),
        )
        // Inside the token check: keys are per principal.
        .route_layer(middleware::from_fn_with_state(
            Arc::new(crate::idempotency::Keys::new(app.clone())),
            crate::idempotency::layer,
        ))
        .route_layer(middleware::from_fn_with_state(
            app.clone(),
            auth::require_token,
        ));
    // Registration carries its own proof (the join token) in the body;
    // guests prove themselves with their record's secret (HTTP Basic).
    let per_record = || middleware::from_fn_with_state(app.clone(), limits::per_record);
    let guest = Router::new()
        .route("/boot/v1/configs/{uuid}", get(boot::fetch))
        .route(
            "/boot/v1/configs/{uuid}/status",
            axum::routing::put(boot::update_cache).route_layer(per_record()),
        )
        .route(
            "/boot/v1/configs/{uuid}/heartbeat",
            post(boot::heartbeat).route_layer(per_record()),
        )
        .route("/boot/v1/assign", post(boot::assign))
        .route("/nocloud/{uuid}/{file}", get(boot::nocloud))
        .route_layer(middleware::from_fn_with_state(
            app.clone(),
            limits::guest_auth_failures,
        ));
    let open_body = app.settings.limits.open_body_max;
    let open = Router::new()
        .route("/v1/agent/register", post(agent::register))
        .merge(guest)
        // Small bodies: a Content-Length over the limit is refused before
        // anything is read, a chunked body is cut at the limit.
        .layer(RequestBodyLimitLayer::new(open_body))
        .layer(DefaultBodyLimit::max(open_body));
    authed
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .merge(open)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(middleware::map_response(error::json_errors))
        .with_state(app)
}

async fn info(
    axum::extract::State(app): axum::extract::State<Arc<App>>,
    _: auth::Admin,
) -> Json<cm_api::answer::Info> {
    Json(cm_api::answer::Info {
        cloud_id: app.cloud_id,
        version: env!("CARGO_PKG_VERSION").to_string(),
        report_interval_secs: app.settings.report_interval.as_secs(),
        host_down_after_secs: app.settings.host_down_after.as_secs(),
    })
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
