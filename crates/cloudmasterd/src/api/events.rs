//! `/v1/operations` and `/v1/events`, both with `?wait=` long-polling, and
//! events also as a server-sent event stream. The reads and the follower
//! are in `app::events`; this file encodes them.

use super::bearer::Admin;
use super::error::{ApiErr, ApiResult};
use super::extract::{Path, Query};
use super::openapi::Errors;
use super::wait_secs;
use crate::app::events::{self, next_item, Expired, Follow, Item};
use crate::state::App;
use crate::store::EventFilter;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use cm_api::answer::{EventQuery, WaitQuery};
use cm_api::event::{Event, LAGGED, OLDEST_SEQ_HEADER};
use cm_api::operation::Operation;
use futures::stream::{self, Stream, StreamExt};
use std::convert::Infallible;
use std::sync::Arc;
use tokio::sync::broadcast;

/// 410 with the oldest seq kept in its header.
fn expired(gone: Expired) -> Response {
    let mut resp = ApiErr::from(gone.error).into_response();
    resp.headers_mut()
        .insert(OLDEST_SEQ_HEADER, HeaderValue::from(gone.oldest));
    resp
}

#[utoipa::path(
    get,
    path = "/v1/operations",
    tag = "operations",
    responses((status = 200, description = "the newest 200", body = Vec<cm_api::operation::Operation>), Errors),
    security(("bearer" = [])),
)]
pub async fn list_operations(
    State(app): State<Arc<App>>,
    _: Admin,
) -> ApiResult<Json<Vec<Operation>>> {
    Ok(Json(events::operations(&app).await?))
}

#[utoipa::path(
    get,
    path = "/v1/operations/{id}",
    tag = "operations",
    params(("id" = String, Path, description = "operation id (a uuid)"), cm_api::answer::WaitQuery),
    responses((status = 200, description = "OK", body = cm_api::operation::Operation), Errors),
    security(("bearer" = [])),
)]
pub async fn show_operation(
    State(app): State<Arc<App>>,
    _: Admin,
    Path(id): Path<String>,
    Query(q): Query<WaitQuery>,
) -> ApiResult<Json<Operation>> {
    Ok(Json(events::operation(&app, &id, wait_secs(q.wait)).await?))
}

#[utoipa::path(
    get,
    path = "/v1/events",
    tag = "events",
    params(cm_api::answer::EventQuery),
    responses((status = 200, description = "events in order; with Accept: text/event-stream a stream of them (SSE)", body = Vec<cm_api::event::Event>), Errors),
    security(("bearer" = [])),
)]
pub async fn list_events(
    State(app): State<Arc<App>>,
    _: Admin,
    headers: HeaderMap,
    Query(q): Query<EventQuery>,
) -> ApiResult<Response> {
    let since = q.since.unwrap_or(0);
    let limit = q.limit.unwrap_or(1000).clamp(1, 10_000);
    let filter = EventFilter {
        kind: q.kind,
        deployable: q.deployable,
    };
    let wants_stream = headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.contains("text/event-stream"))
        .unwrap_or(false);
    if wants_stream {
        // Subscribe before the first read so nothing falls in between.
        let live = app.events.subscribe();
        if let Some(gone) = events::check_kept(&app, since).await? {
            return Ok(expired(gone));
        }
        return Ok(stream_events(app, since, filter, live).into_response());
    }
    let wait = wait_secs(q.wait);
    Ok(
        match events::page(&app, since, filter, limit, wait).await? {
            Ok(page) => Json(page).into_response(),
            Err(gone) => expired(gone),
        },
    )
}

/// The backlog after `since` from the store, page by page, then every new
/// event as it is appended. A follower too slow for the live buffer gets a
/// `lagged` event naming how many it missed and the seq to re-read from.
fn stream_events(
    app: Arc<App>,
    since: i64,
    filter: EventFilter,
    live: broadcast::Receiver<Event>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let start = Follow::new(app, since, filter, live);
    let items = stream::unfold(Some(start), |st| async move {
        let mut st = st?;
        let item = next_item(&mut st).await;
        match item {
            Item::End => None,
            other => Some((other, Some(st))),
        }
    });
    let all = items.map(|item| {
        Ok(match item {
            Item::Event(e) => SseEvent::default()
                .id(e.seq.to_string())
                .event(e.kind.as_str())
                .data(serde_json::to_string(&e).unwrap_or_default()),
            Item::Lagged(l) => SseEvent::default()
                .event(LAGGED)
                .data(serde_json::to_string(&l).unwrap_or_default()),
            Item::End => SseEvent::default().comment("end"),
        })
    });
    Sse::new(all).keep_alive(KeepAlive::default())
}
