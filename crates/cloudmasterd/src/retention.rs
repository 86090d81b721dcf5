//! Retention of the event log and finished operations: by age and by
//! count, on a schedule, in small batches so the store's one writer is
//! never held for long. Running operations are never removed; the newest
//! event never is either, so sequence numbers keep increasing.
//! `GET /v1/events?since=SEQ` below what was removed answers 410.

use crate::app;
use crate::state::App;
use crate::store::{now_ms, Millis};
use std::sync::Arc;
use std::time::Duration;

/// Rows removed per transaction.
const BATCH: u64 = 5_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub events_max_age: Duration,
    pub events_max_count: u64,
    pub operations_max_age: Duration,
    pub operations_max_count: u64,
    /// How often retention runs.
    pub every: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        let days = |d: u64| Duration::from_secs(d * 86_400);
        Retention {
            events_max_age: days(30),
            events_max_count: 100_000,
            operations_max_age: days(30),
            operations_max_count: 10_000,
            every: Duration::from_secs(60),
        }
    }
}

fn before(now: Millis, age: Duration) -> Millis {
    now.saturating_sub(i64::try_from(age.as_millis()).unwrap_or(i64::MAX))
}

/// One pass: remove what is past the limits. Returns (events, operations).
pub async fn prune(app: &App) -> app::Result<(u64, u64)> {
    let r = app.settings.retention;
    let now = now_ms();
    let (ev_before, op_before) = (
        before(now, r.events_max_age),
        before(now, r.operations_max_age),
    );
    let (mut events, mut ops) = (0, 0);
    loop {
        let n = app
            .db(move |s| s.prune_events(ev_before, r.events_max_count, BATCH))
            .await?;
        events += n;
        if n < BATCH {
            break;
        }
    }
    loop {
        let n = app
            .db(move |s| s.prune_operations(op_before, r.operations_max_count, BATCH))
            .await?;
        ops += n;
        if n < BATCH {
            break;
        }
    }
    Ok((events, ops))
}

/// Run retention for ever, every `every`.
pub async fn run(app: Arc<App>) {
    let every = app.settings.retention.every.max(Duration::from_secs(1));
    loop {
        match prune(&app).await {
            Ok((0, 0)) => {}
            Ok((e, o)) => tracing::info!("retention: removed {e} events and {o} operations"),
            Err(e) => tracing::error!("retention: {e}"),
        }
        tokio::time::sleep(every).await;
    }
}
