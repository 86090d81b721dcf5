//! `/v1/operations` and `/v1/events`, both with `?wait=` long-polling, and
//! events also as a server-sent event stream.

use super::error::{ApiErr, ApiResult};
use super::wait_secs;
use crate::auth::Admin;
use crate::state::App;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use cm_api::event::Event;
use cm_api::operation::Operation;
use futures::stream::{self, Stream, StreamExt};
use serde::Deserialize;
use std::convert::Infallible;
use std::sync::Arc;
use tokio::time::Instant;
use uuid::Uuid;

pub async fn list_operations(
    State(app): State<Arc<App>>,
    _: Admin,
) -> ApiResult<Json<Vec<Operation>>> {
    Ok(Json(app.db(|s| s.list_operations(200)).await?))
}

#[derive(Deserialize)]
pub struct WaitQuery {
    wait: Option<u64>,
}

pub async fn show_operation(
    State(app): State<Arc<App>>,
    _: Admin,
    Path(id): Path<String>,
    Query(q): Query<WaitQuery>,
) -> ApiResult<Json<Operation>> {
    let id = Uuid::parse_str(&id).map_err(|_| {
        ApiErr::invalid(
            "id",
            format!(
                "'{}' is not an operation id",
                cm_api::validate::printable(&id)
            ),
        )
    })?;
    let deadline = Instant::now() + wait_secs(q.wait);
    let mut changed = app.ops_changed.subscribe();
    loop {
        changed.borrow_and_update();
        let row = app.db(move |s| s.get_operation(id)).await?;
        if row.op.status.is_done() || Instant::now() >= deadline {
            return Ok(Json(row.op));
        }
        let _ = tokio::time::timeout_at(deadline, changed.changed()).await;
    }
}

#[derive(Deserialize)]
pub struct EventQuery {
    since: Option<i64>,
    #[serde(rename = "type")]
    kind: Option<String>,
    limit: Option<u32>,
    wait: Option<u64>,
}

pub async fn list_events(
    State(app): State<Arc<App>>,
    _: Admin,
    headers: HeaderMap,
    Query(q): Query<EventQuery>,
) -> ApiResult<Response> {
    let since = q.since.unwrap_or(0);
    let limit = q.limit.unwrap_or(1000).clamp(1, 10_000);
    let wants_stream = headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.contains("text/event-stream"))
        .unwrap_or(false);
    if wants_stream {
        return Ok(stream_events(app, since, q.kind).await?.into_response());
    }
    let deadline = Instant::now() + wait_secs(q.wait);
    let mut seq = app.events_seq.subscribe();
    loop {
        seq.borrow_and_update();
        let kind = q.kind.clone();
        let events = app
            .db(move |s| s.events_since(since, kind.as_deref(), limit))
            .await?;
        if !events.is_empty() || Instant::now() >= deadline {
            return Ok(Json(events).into_response());
        }
        let _ = tokio::time::timeout_at(deadline, seq.changed()).await;
    }
}

/// The backlog after `since`, then every new event as it is appended.
async fn stream_events(
    app: Arc<App>,
    since: i64,
    kind: Option<String>,
) -> ApiResult<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
    // Subscribe before reading the backlog so nothing falls in between.
    let live = app.events.subscribe();
    let k = kind.clone();
    let backlog = app
        .db(move |s| s.events_since(since, k.as_deref(), 10_000))
        .await?;
    let last = backlog.last().map(|e| e.seq).unwrap_or(since);
    let live = tokio_stream::wrappers::BroadcastStream::new(live).filter_map(move |r| {
        let keep = match &r {
            Ok(e) => e.seq > last && kind.as_deref().map(|k| k == e.kind).unwrap_or(true),
            Err(_) => false,
        };
        futures::future::ready(if keep { r.ok() } else { None })
    });
    let all = stream::iter(backlog).chain(live).map(|e: Event| {
        Ok(SseEvent::default()
            .id(e.seq.to_string())
            .event(e.kind.clone())
            .data(serde_json::to_string(&e).unwrap_or_default()))
    });
    Ok(Sse::new(all).keep_alive(KeepAlive::default()))
}
