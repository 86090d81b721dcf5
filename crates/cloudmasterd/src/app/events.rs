//! Operations and the event log as readers see them: long-polls on both,
//! the retention check of `since`, and the follower of the event stream
//! (backlog from the store page by page, then live, with lag notices).

use super::{Error, Result};
use crate::state::App;
use crate::store::EventFilter;
use cm_api::event::{Event, Lagged};
use cm_api::operation::Operation;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;
use tokio::time::Instant;
use uuid::Uuid;

/// Events read from the store at once by the stream.
const PAGE: u32 = 1000;

/// The newest 200.
pub async fn operations(app: &App) -> Result<Vec<Operation>> {
    app.db(|s| s.list_operations(200)).await
}

/// An operation; with `wait`, once it is done or the wait ends.
pub async fn operation(app: &App, id: &str, wait: Duration) -> Result<Operation> {
    let id = Uuid::parse_str(id).map_err(|_| {
        Error::invalid(
            "id",
            format!(
                "'{}' is not an operation id",
                cm_api::validate::printable(id)
            ),
        )
    })?;
    let deadline = Instant::now() + wait;
    let mut changed = app.ops_changed.subscribe();
    loop {
        changed.borrow_and_update();
        let row = app.db(move |s| s.get_operation(id)).await?;
        if row.op.status.is_done() || Instant::now() >= deadline {
            return Ok(row.op);
        }
        let _ = tokio::time::timeout_at(deadline, changed.changed()).await;
    }
}

/// Events after `since` that retention removed: the refusal, and the
/// oldest seq kept. `since` 0 means "all that is kept" and never expires.
pub struct Expired {
    pub error: Error,
    pub oldest: i64,
}

pub async fn check_kept(app: &App, since: i64) -> Result<Option<Expired>> {
    if since <= 0 {
        return Ok(None);
    }
    let through = app.db(|s| s.events_pruned_through()).await?;
    if since >= through {
        return Ok(None);
    }
    let r = app.settings.retention;
    let error = Error::Gone(
        format!(
            "events {} to {through} were removed by retention (kept: the last {} events, \
             {} days); the oldest kept is seq {}: ask for since={through} \
             (or since=0 for all that is kept)",
            since + 1,
            r.events_max_count,
            r.events_max_age.as_secs() / 86_400,
            through + 1,
        )
        .into(),
    )
    .field("since");
    Ok(Some(Expired {
        error,
        oldest: through + 1,
    }))
}

/// A page of events after `since` (of one type and/or one deployable, when
/// asked); with `wait`, once there is one or the wait ends.
pub async fn page(
    app: &App,
    since: i64,
    filter: EventFilter,
    limit: u32,
    wait: Duration,
) -> Result<std::result::Result<Vec<Event>, Expired>> {
    let deadline = Instant::now() + wait;
    let mut seq = app.events_seq.subscribe();
    loop {
        seq.borrow_and_update();
        let f = filter.clone();
        let events = app.db(move |s| s.events_filtered(since, &f, limit)).await?;
        // Checked after the read: retention only moves forward, so a read
        // that passes this check missed nothing.
        if let Some(e) = check_kept(app, since).await? {
            return Ok(Err(e));
        }
        if !events.is_empty() || Instant::now() >= deadline {
            return Ok(Ok(events));
        }
        let _ = tokio::time::timeout_at(deadline, seq.changed()).await;
    }
}

/// Where a follower's stream is.
pub struct Follow {
    app: Arc<App>,
    filter: EventFilter,
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

pub enum Item {
    Event(Box<Event>),
    Lagged(Lagged),
    /// A store error ends the stream (the client reconnects with `since`).
    End,
}

impl Follow {
    pub fn new(
        app: Arc<App>,
        since: i64,
        filter: EventFilter,
        live: broadcast::Receiver<Event>,
    ) -> Follow {
        Follow {
            app,
            filter,
            cursor: since,
            backlog: true,
            pending: Default::default(),
            live,
            seen: None,
            lagged: false,
        }
    }
}

/// Whether a live event passes the follower's filter (the store's rule).
fn wanted(f: &EventFilter, e: &Event) -> bool {
    f.kind.as_deref().is_none_or(|k| k == e.kind.as_str())
        && f.deployable
            .as_deref()
            .is_none_or(|d| e.detail.deployable.as_deref() == Some(d))
}

/// The follower's next item: from the store while there is a backlog, then
/// live; a gap in the live order is filled from the store.
pub async fn next_item(st: &mut Follow) -> Item {
    loop {
        if let Some(e) = st.pending.pop_front() {
            st.cursor = e.seq;
            return Item::Event(Box::new(e));
        }
        if st.backlog {
            let (since, f) = (st.cursor, st.filter.clone());
            match st.app.db(move |s| s.events_filtered(since, &f, PAGE)).await {
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
                let wanted = wanted(&st.filter, &e);
                if e.seq > st.cursor && wanted {
                    st.cursor = e.seq;
                    return Item::Event(Box::new(e));
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
