//! `/v1/operations` and `/v1/events`, both with `?wait=` long-polling, and
//! events also as a server-sent event stream.

use super::bearer::Admin;
use super::error::{ApiErr, ApiResult};
use super::extract::{Path, Query};
use super::openapi::Errors;
use super::wait_secs;
use crate::state::App;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use cm_api::answer::{EventQuery, WaitQuery};
use cm_api::event::{Event, Lagged, LAGGED, OLDEST_SEQ_HEADER};
use cm_api::operation::Operation;
use cm_api::ErrorCode;
use futures::stream::{self, Stream, StreamExt};
use std::convert::Infallible;
use std::sync::Arc;
use tokio::sync::broadcast;
use tokio::time::Instant;
use uuid::Uuid;

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
    Ok(Json(app.db(|s| s.list_operations(200)).await?))
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

/// Events read from the store at once by the stream.
const PAGE: u32 = 1000;

/// 410 when events after `since` were removed by retention (`since` 0
/// means "all that is kept" and never expires).
async fn check_kept(app: &App, since: i64) -> Result<(), Response> {
    if since <= 0 {
        return Ok(());
    }
    let through = app
        .db(|s| s.events_pruned_through())
        .await
        .map_err(|e| ApiErr::from(e).into_response())?;
    if since >= through {
        return Ok(());
    }
    let r = app.settings.retention;
    let mut resp = ApiErr::new(
        ErrorCode::EventsExpired,
        format!(
            "events {} to {through} were removed by retention (kept: the last {} events, \
             {} days); the oldest kept is seq {}: ask for since={through} \
             (or since=0 for all that is kept)",
            since + 1,
            r.events_max_count,
            r.events_max_age.as_secs() / 86_400,
            through + 1,
        ),
    )
    .field("since")
    .into_response();
    resp.headers_mut()
        .insert(OLDEST_SEQ_HEADER, HeaderValue::from(through + 1));
    Err(resp)
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
    let wants_stream = headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.contains("text/event-stream"))
        .unwrap_or(false);
    if wants_stream {
        // Subscribe before the first read so nothing falls in between.
        let live = app.events.subscribe();
        if let Err(resp) = check_kept(&app, since).await {
            return Ok(resp);
        }
        return Ok(stream_events(app, since, q.kind, live).into_response());
    }
    let deadline = Instant::now() + wait_secs(q.wait);
    let mut seq = app.events_seq.subscribe();
    loop {
        seq.borrow_and_update();
        let kind = q.kind.clone();
        let events = app
            .db(move |s| s.events_since(since, kind.as_deref(), limit))
            .await?;
        // Checked after the read: retention only moves forward, so a read
        // that passes this check missed nothing.
        if let Err(resp) = check_kept(&app, since).await {
            return Ok(resp);
        }
        if !events.is_empty() || Instant::now() >= deadline {
            return Ok(Json(events).into_response());
        }
        let _ = tokio::time::timeout_at(deadline, seq.changed()).await;
    }
}

/// Where a follower's stream is.
struct Follow {
    app: Arc<App>,
    kind: Option<String>,
    /// The last seq sent (or `since`).
    cursor: i64,
    /// Still reading the store, page by page.
    backlog: bool,
    pending: std::collections::VecDeque<Event>,
    live: broadcast::Receiver<Event>,
    /// The highest seq (of any type) known to be in order: every event up
    /// to it was sent or skipped. None: unknown, read the store.
    seen: Option<i64>,
    /// The last thing sent was a lag notice: the client re-reads the gap.
    lagged: bool,
}

enum Item {
    Event(Event),
    Lagged(Lagged),
    /// A store error ends the stream (the client reconnects with `since`).
    End,
}

/// The backlog after `since` from the store, page by page, then every new
/// event as it is appended. A follower too slow for the live buffer gets a
/// `lagged` event naming how many it missed and the seq to re-read from.
fn stream_events(
    app: Arc<App>,
    since: i64,
    kind: Option<String>,
    live: broadcast::Receiver<Event>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let start = Follow {
        app,
        kind,
        cursor: since,
        backlog: true,
        pending: Default::default(),
        live,
        seen: None,
        lagged: false,
    };
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

async fn next_item(st: &mut Follow) -> Item {
    loop {
        if let Some(e) = st.pending.pop_front() {
            st.cursor = e.seq;
            return Item::Event(e);
        }
        if st.backlog {
            let (since, kind) = (st.cursor, st.kind.clone());
            match st
                .app
                .db(move |s| s.events_since(since, kind.as_deref(), PAGE))
                .await
            {
                Ok(page) => {
                    st.backlog = page.len() == PAGE as usize;
                    st.pending.extend(page);
                    continue;
                }
                Err(e) => {
                    tracing::warn!("event stream: {e}");
                    return Item::End;
                }
            }
        }
        match st.live.recv().await {
            Ok(e) => {
                // Events are broadcast after their commit, by concurrent
                // tasks, so they may come out of order: a gap is filled
                // from the store, where everything up to `e` is committed.
                match st.seen {
                    Some(s) if e.seq <= s => continue,
                    Some(s) if e.seq > s + 1 && !st.lagged => {
                        st.seen = Some(e.seq);
                        st.backlog = true;
                        continue;
                    }
                    None if !st.lagged => {
                        st.seen = Some(e.seq);
                        st.backlog = true;
                        continue;
                    }
                    _ => {}
                }
                st.seen = Some(e.seq);
                st.lagged = false;
                let wanted = st
                    .kind
                    .as_deref()
                    .map(|k| k == e.kind.as_str())
                    .unwrap_or(true);
                if e.seq > st.cursor && wanted {
                    st.cursor = e.seq;
                    return Item::Event(e);
                }
            }
            Err(broadcast::error::RecvError::Lagged(n)) => {
                st.lagged = true;
                return Item::Lagged(Lagged {
                    dropped: n,
                    resume_from: st.cursor,
                });
            }
            Err(broadcast::error::RecvError::Closed) => return Item::End,
        }
    }
}
