//! The cloud policy engine (CPE): one DPE per deployable, in a `JoinSet`.
//! A DPE that panics or ends unexpectedly is started again after a
//! back-off of 0.5 s·2^k (at most 30 s; k goes back to 0 once a DPE has
//! run 60 s), and each death is a `deployable.engine` event. The list of
//! deployables is read again every 2 s and whenever `Handle::
//! deployables_changed` is called, so a missed wake costs 2 s at most.
//! A DPE whose deployable was deleted tears it down and ends with
//! `Exit::Done`; the CPE then forgets it.

use super::dpe::{self, Exit};
use crate::state::App;
use crate::store::now_ms;
use cm_api::event::EventDetail;
use cm_api::ids::DeployableId;
use cm_api::words::{EngineAction, EventKind};
use futures::future::BoxFuture;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::{JoinError, JoinSet};
use tokio::time::Instant;

/// Starts one DPE (the real one, or a test's).
pub type Spawn = Arc<dyn Fn(Arc<App>, DeployableId) -> BoxFuture<'static, Exit> + Send + Sync>;

const RELIST: Duration = Duration::from_secs(2);
const BACKOFF_FIRST: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A DPE that ran this long before dying starts its back-off again.
const HEALTHY_RESET: Duration = Duration::from_secs(60);

/// The CPE of the master (main.rs spawns it beside the reconciler).
pub async fn run(app: Arc<App>) {
    supervise(app, Arc::new(|app, id| Box::pin(dpe::run(app, id)))).await
}

/// One deployable's DPE as the CPE tracks it.
struct Life {
    running: Option<tokio::task::Id>,
    started: Instant,
    /// The back-off exponent.
    k: u32,
    restarts: u64,
    /// Start again at this time (after a death).
    due: Option<Instant>,
}

/// The delay before restarting a DPE that died for the k-th time in a row.
pub fn backoff(k: u32) -> Duration {
    BACKOFF_FIRST
        .saturating_mul(1u32 << k.min(16))
        .min(BACKOFF_MAX)
}

pub async fn supervise(app: Arc<App>, spawn: Spawn) {
    let mut set: JoinSet<Exit> = JoinSet::new();
    let mut lives: HashMap<DeployableId, Life> = HashMap::new();
    let mut tasks: HashMap<tokio::task::Id, DeployableId> = HashMap::new();
    let start = |set: &mut JoinSet<Exit>,
                 tasks: &mut HashMap<tokio::task::Id, DeployableId>,
                 lives: &mut HashMap<DeployableId, Life>,
                 id: DeployableId| {
        let h = set.spawn(spawn(app.clone(), id));
        tasks.insert(h.id(), id);
        let life = lives.entry(id).or_insert_with(|| Life {
            running: None,
            started: Instant::now(),
            k: 0,
            restarts: 0,
            due: None,
        });
        life.running = Some(h.id());
        life.started = Instant::now();
        life.due = None;
    };
    loop {
        match app.db(|s| s.engine_deployables()).await {
            Ok(list) => {
                let now = Instant::now();
                for (id, _) in &list {
                    let idle = lives
                        .get(id)
                        .is_none_or(|l| l.running.is_none() && l.due.is_none_or(|t| t <= now));
                    if idle {
                        start(&mut set, &mut tasks, &mut lives, *id);
                    }
                }
                lives.retain(|id, l| l.running.is_some() || list.iter().any(|(x, _)| x == id));
            }
            Err(e) => tracing::warn!("engine: cannot list deployables: {e}"),
        }
        let next_due = lives.values().filter_map(|l| l.due).min();
        tokio::select! {
            Some(res) = set.join_next_with_id(), if !set.is_empty() => {
                let (tid, how) = match res {
                    Ok((tid, Exit::Done)) => (tid, None),
                    Err(e) => (e.id(), Some(why(e))),
                };
                let Some(id) = tasks.remove(&tid) else { continue };
                let Some(life) = lives.get_mut(&id) else { continue };
                life.running = None;
                match how {
                    None => {
                        lives.remove(&id);
                    }
                    Some(reason) => {
                        if life.started.elapsed() >= HEALTHY_RESET {
                            life.k = 0;
                        }
                        let delay = backoff(life.k);
                        life.k = life.k.saturating_add(1);
                        life.restarts += 1;
                        life.due = Some(Instant::now() + delay);
                        tracing::error!("deployable {id}: engine died ({reason}); restart in {delay:?}");
                        tokio::spawn(record_death(app.clone(), id, reason, life.restarts, delay));
                    }
                }
            }
            _ = tokio::time::sleep_until(next_due.unwrap_or_else(Instant::now)), if next_due.is_some() => {
                let now = Instant::now();
                let ready: Vec<DeployableId> = lives
                    .iter()
                    .filter(|(_, l)| l.running.is_none() && l.due.is_some_and(|t| t <= now))
                    .map(|(id, _)| *id)
                    .collect();
                for id in ready {
                    start(&mut set, &mut tasks, &mut lives, id);
                }
            }
            _ = tokio::time::sleep(RELIST) => {}
            _ = app.engines.cpe_notified() => {}
        }
    }
}

/// A dead DPE's cause, from its join error.
fn why(e: JoinError) -> String {
    if e.is_panic() {
        let p = e.into_panic();
        let msg = p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".into());
        format!("panicked: {msg}")
    } else {
        "cancelled".into()
    }
}

async fn record_death(
    app: Arc<App>,
    id: DeployableId,
    reason: String,
    restarts: u64,
    delay: Duration,
) {
    let res = app
        .db(move |s| {
            let name = s.deployable_name(id)?.unwrap_or_else(|| id.to_string());
            let detail = EventDetail {
                deployable: Some(name.clone()),
                generation: None,
                object: Some("engine".into()),
                from: Some("running".into()),
                to: Some("restarting".into()),
                reason: Some(reason.clone()),
                action: Some(EngineAction::RestartEngine),
                counters: BTreeMap::from([
                    ("restarts".to_string(), restarts.to_string()),
                    ("backoff".to_string(), format!("{}ms", delay.as_millis())),
                ]),
            };
            let message = format!(
                "engine: running → restarting: {reason}; restart {restarts} in {}ms",
                delay.as_millis()
            );
            s.append_event_detail(
                EventKind::DeployableEngine,
                &name,
                &message,
                &detail,
                now_ms(),
            )
        })
        .await;
    match res {
        Ok(ev) => crate::app::owned::publish(&app, ev),
        Err(e) => tracing::error!("deployable {id}: cannot record the engine's death: {e}"),
    }
}
