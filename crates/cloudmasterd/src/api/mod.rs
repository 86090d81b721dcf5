//! The REST API (DESIGN.md §3). Handlers only translate: they extract the
//! request, call one function of the app layer (`crate::app`, where the
//! rules live) and turn its answer or `app::Error` into HTTP
//! (docs/architecture.md, "The master's layers").

pub mod agent;
pub mod backups;
pub mod bearer;
pub mod boot;
pub mod catalog;
pub mod configs;
#[cfg(debug_assertions)]
pub mod debug;
pub mod deployables;
pub mod encoding;
pub mod error;
pub mod evacuation;
pub mod events;
pub mod extract;
pub mod hosts;
pub mod idempotency;
pub mod instances;
pub mod limits;
pub mod openapi;
pub mod orphans;
pub mod snapshots;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_backup_refusals;
#[cfg(test)]
mod tests_backup_restore;
#[cfg(test)]
mod tests_backup_targets;
#[cfg(test)]
mod tests_backups;
#[cfg(test)]
mod tests_deployables;
#[cfg(test)]
mod tests_input;
#[cfg(test)]
mod tests_roots;
#[cfg(test)]
mod tests_snapshots;
#[cfg(test)]
mod tests_transfers;
#[cfg(test)]
mod tests_volumes;
pub mod tokens;
pub mod transfers;
pub mod uploads;
pub mod volumes;

use crate::state::App;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use cm_api::ErrorCode;
use error::ApiErr;
use openapi::Errors;
use std::sync::Arc;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Request bodies larger than this are refused with `body_too_large`.
pub const MAX_BODY: usize = 4 * 1024 * 1024;

/// The routes that take the admin token (or a host's token), without their
/// layers: `router` adds those, `openapi_document` describes these.
fn authed_routes() -> OpenApiRouter<Arc<App>> {
    OpenApiRouter::new()
        .routes(routes!(info))
        .routes(routes!(hosts::list))
        .routes(routes!(hosts::join_token, hosts::rotate_join_token))
        .routes(routes!(hosts::show, hosts::update, hosts::delete))
        .routes(routes!(evacuation::evacuate))
        .routes(routes!(orphans::list))
        .routes(routes!(orphans::purge))
        .routes(routes!(tokens::rotate_admin))
        .routes(routes!(catalog::list_images, catalog::create_image))
        .routes(routes!(catalog::show_image, catalog::delete_image))
        .routes(routes!(catalog::list_flavors, catalog::create_flavor))
        .routes(routes!(catalog::show_flavor, catalog::delete_flavor))
        .routes(routes!(instances::list, instances::create))
        .routes(routes!(instances::show, instances::delete))
        .routes(routes!(instances::start))
        .routes(routes!(instances::stop))
        .routes(routes!(instances::reboot))
        .routes(routes!(instances::console))
        .routes(routes!(volumes::list, volumes::create))
        .routes(routes!(volumes::show, volumes::delete))
        .routes(routes!(volumes::resize))
        .routes(routes!(volumes::attach))
        .routes(routes!(volumes::detach))
        .routes(routes!(transfers::move_volume))
        .routes(routes!(transfers::from_instance))
        .routes(routes!(snapshots::list, snapshots::create))
        .routes(routes!(snapshots::show, snapshots::delete))
        .routes(routes!(snapshots::restore))
        .routes(routes!(snapshots::clone))
        .routes(routes!(backups::list, backups::create))
        .routes(routes!(backups::show, backups::delete))
        .routes(routes!(backups::restore))
        .routes(routes!(backups::schedules))
        .routes(routes!(backups::unschedule))
        .routes(routes!(events::list_operations))
        .routes(routes!(events::show_operation))
        .routes(routes!(events::list_events))
        .routes(routes!(deployables::list))
        .routes(routes!(
            deployables::show,
            deployables::apply,
            deployables::delete
        ))
        .routes(routes!(deployables::spec))
        .routes(routes!(deployables::diff))
        .routes(routes!(deployables::rollback))
        .routes(routes!(deployables::repair))
        .routes(routes!(configs::list, configs::pre_register))
        .routes(routes!(configs::remove_stale))
        .routes(routes!(configs::detail, configs::remove))
        .routes(routes!(configs::set_config))
        .routes(routes!(configs::list_domains, configs::create_domain))
        .routes(routes!(configs::delete_domain))
        .routes(routes!(agent::desired))
        .routes(routes!(agent::report))
        .routes(routes!(agent::reply))
        .routes(routes!(agent::image_file))
        .routes(routes!(uploads::list, uploads::create))
}

/// The one route whose body is not read whole: it streams to disk, bounded
/// by the upload's declared size.
fn upload_routes() -> OpenApiRouter<Arc<App>> {
    OpenApiRouter::new()
        .routes(routes!(uploads::show, uploads::delete, uploads::write))
        .routes(routes!(transfers::put, transfers::get))
        .layer(DefaultBodyLimit::disable())
}

/// Guest routes limited per record (`limits::per_record`).
fn per_record_routes() -> OpenApiRouter<Arc<App>> {
    OpenApiRouter::new()
        .routes(routes!(boot::update_cache))
        .routes(routes!(boot::heartbeat))
}

/// Guests prove themselves with their record's secret (HTTP Basic).
fn guest_routes() -> OpenApiRouter<Arc<App>> {
    OpenApiRouter::new()
        .routes(routes!(boot::fetch))
        .routes(routes!(boot::assign))
        .routes(routes!(boot::nocloud))
}

/// Registration carries its own proof (the join token) in the body; the
/// document is public.
fn open_routes() -> OpenApiRouter<Arc<App>> {
    OpenApiRouter::new()
        .routes(routes!(agent::register))
        .routes(routes!(openapi::serve))
}

/// The OpenAPI document of every route (`GET /v1/openapi.json`).
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    let all = authed_routes()
        .merge(upload_routes())
        .merge(per_record_routes())
        .merge(guest_routes())
        .merge(open_routes());
    openapi::document(all.split_for_parts().1)
}

pub fn router(app: Arc<App>) -> Router {
    let authed = authed_routes();
    #[cfg(debug_assertions)]
    let authed = debug::add(authed, &app);
    let (authed, _) = authed
        .merge(upload_routes())
        // Inside the token check: keys are per principal.
        .route_layer(middleware::from_fn_with_state(
            Arc::new(crate::idempotency::Keys::new(app.clone())),
            idempotency::layer,
        ))
        .route_layer(middleware::from_fn_with_state(
            app.clone(),
            bearer::require_token,
        ))
        .split_for_parts();
    let per_record = middleware::from_fn_with_state(app.clone(), limits::per_record);
    let (guest, _) = per_record_routes()
        .route_layer(per_record)
        .merge(guest_routes())
        .route_layer(middleware::from_fn_with_state(
            app.clone(),
            limits::guest_auth_failures,
        ))
        .split_for_parts();
    let open_body = app.settings.limits.open_body_max;
    let (open, _) = open_routes().split_for_parts();
    let open = open
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
        .layer(middleware::from_fn(run_to_completion))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(middleware::map_response(error::json_errors))
        .with_state(app)
}

/// A request's work runs to its end even when its client goes away: hyper
/// drops the future of a request whose connection closed, which would cut
/// a handler between the change it committed and what follows (its
/// events). A host agent killed while its report was being recorded lost
/// the report's `volume.resized` event that way (e2e `storage_crash.rs`).
/// Reads (`GET`) are not run on: a long poll whose agent was killed would
/// otherwise wait on, take the requests queued for the host (a console
/// read) and answer them to no one (e2e `host_hostile_guest.rs`, the
/// console flood across an agent restart).
async fn run_to_completion(req: axum::extract::Request, next: middleware::Next) -> Response {
    if req.method() == axum::http::Method::GET {
        return next.run(req).await;
    }
    match tokio::spawn(next.run(req)).await {
        Ok(resp) => resp,
        Err(e) => match e.try_into_panic() {
            Ok(panic) => panic_response(panic),
            Err(e) => ApiErr::internal(format!("request cancelled: {e}")).into_response(),
        },
    }
}

#[utoipa::path(
    get,
    path = "/v1/info",
    tag = "meta",
    responses((status = 200, description = "OK", body = cm_api::answer::Info), Errors),
    security(("bearer" = [])),
)]
async fn info(
    axum::extract::State(app): axum::extract::State<Arc<App>>,
    _: bearer::Admin,
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
