//! The master's shared state: the store, settings, and the in-memory
//! channels that wake waiters (hosts' long-polls, operation waits, events).

use crate::app;
use crate::auth::{self, Principal};
use crate::hub::Hub;
use crate::store::{now_ms, Store, StoreError};
use cm_api::event::Event;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::{broadcast, watch, Notify};
use uuid::Uuid;

/// Settings the running master needs (from flags, env or the config file).
#[derive(Debug, Clone)]
pub struct Settings {
    pub data_dir: PathBuf,
    /// How often hosts report.
    pub report_interval: Duration,
    /// A host silent this long is `down`.
    pub host_down_after: Duration,
    /// Memory kept back on each new host.
    pub host_reserved_mib: u64,
    /// Default ACPI shutdown timeout of new instances.
    pub stop_timeout_secs: u32,
    /// `HOST:PORT` as guests reach the master (config_hosts, boot strings).
    pub guest_addr: String,
    /// Remove config records not updated for this long (None: never).
    pub remove_stale_after: Option<Duration>,
    /// Body limit and rate limits of the guest routes.
    pub limits: crate::app::limits::LimitSettings,
    /// How long events and finished operations are kept.
    pub retention: crate::retention::Retention,
    /// Events an SSE follower may fall behind before it is told it lagged.
    pub event_stream_buffer: usize,
    /// An operation whose host is down fails after this long.
    pub down_host_op_timeout: Duration,
    /// Uploads, imports and their limits.
    pub images: ImageSettings,
    /// Debug builds with `--debug-routes`: serve `/v1/debug/...` (tests).
    pub debug_routes: bool,
    /// HAProxy runtime sockets by the name a deployable's pool gives
    /// (`--balancer NAME=unix:PATH`): a spec names one, never a path.
    pub balancers: std::collections::BTreeMap<String, PathBuf>,
}

/// How image files come in (issue 9 point 3, docs/api.md "Uploads").
#[derive(Debug, Clone)]
pub struct ImageSettings {
    /// The one directory master-side paths may name (`--image-import-dir`).
    pub import_dir: Option<PathBuf>,
    /// An extra CA (PEM) trusted for `https://` imports (`--image-import-ca`).
    pub import_ca: Option<PathBuf>,
    /// The longest a URL fetch may take.
    pub import_timeout: Duration,
    /// The largest file accepted, uploaded, fetched or imported.
    pub max_bytes: u64,
    /// An upload nothing happened to for this long is removed.
    pub upload_expire_after: Duration,
}

impl Settings {
    pub fn images_dir(&self) -> PathBuf {
        self.data_dir.join("images")
    }

    pub fn uploads_dir(&self) -> PathBuf {
        self.data_dir.join("uploads")
    }
}

pub struct App {
    pub store: Arc<dyn Store>,
    pub settings: Settings,
    pub cloud_id: Uuid,
    pub hub: Hub,
    tokens: RwLock<HashMap<String, Principal>>,
    /// The store's `token_epoch` when `tokens` was last loaded.
    token_epoch: AtomicI64,
    /// Bumped when any operation changes; `?wait=` on operations waits on it.
    pub ops_changed: watch::Sender<u64>,
    /// The last event's sequence number; `?wait=` on events waits on it.
    pub events_seq: watch::Sender<i64>,
    pub events: broadcast::Sender<Event>,
    /// Wakes the reconciler early (after a report).
    pub kick: Notify,
    /// Derives and checks boot-config secrets.
    pub keys: crate::bootcfg::Keyring,
    /// Bumped when a config body changes; guests' long-polls wait on it.
    pub configs_changed: watch::Sender<u64>,
    /// Rate limits of the guest routes.
    pub limiters: crate::app::limits::Limiters,
    /// Image files on their way in.
    pub uploads: crate::uploads::Uploads,
    /// The rendered `GET /v1/instances`, kept while nothing changes.
    pub instance_list: crate::app::instance_list::ListCache,
    /// Wakes the policy engine's DPEs and CPE (crate::engine).
    pub engines: crate::engine::Handle,
}

fn load_tokens(store: &dyn Store) -> Result<HashMap<String, Principal>, StoreError> {
    let mut tokens = HashMap::new();
    for (hash, row) in store.all_tokens()? {
        if let Some(p) = auth::principal(&row) {
            tokens.insert(hash, p);
        }
    }
    Ok(tokens)
}

impl App {
    pub fn new(
        store: Arc<dyn Store>,
        settings: Settings,
        cloud_id: Uuid,
        keys: crate::bootcfg::Keyring,
        uploads: crate::uploads::Uploads,
    ) -> Result<App, StoreError> {
        let epoch = store.token_epoch()?;
        let tokens = load_tokens(store.as_ref())?;
        let last = store.last_event_seq()?;
        Ok(App {
            store,
            cloud_id,
            hub: Hub::default(),
            tokens: RwLock::new(tokens),
            token_epoch: AtomicI64::new(epoch),
            ops_changed: watch::channel(0).0,
            events_seq: watch::channel(last).0,
            events: broadcast::channel(settings.event_stream_buffer.max(1)).0,
            limiters: crate::app::limits::Limiters::new(&settings.limits),
            kick: Notify::new(),
            keys,
            configs_changed: watch::channel(0).0,
            settings,
            uploads,
            instance_list: Default::default(),
            engines: Default::default(),
        })
    }

    /// Run a store call off the async threads.
    pub async fn db<T, F>(&self, f: F) -> app::Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
    {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(store.as_ref()))
            .await
            .map_err(|e| app::Error::internal(format!("store task: {e}")))?
            .map_err(app::Error::from)
    }

    /// `db` for calls whose error is not a store error (tokens and their files).
    pub async fn db_with<T, E, F>(&self, f: F) -> app::Result<T>
    where
        T: Send + 'static,
        E: Into<app::Error> + Send + 'static,
        F: FnOnce(&dyn Store) -> Result<T, E> + Send + 'static,
    {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(store.as_ref()))
            .await
            .map_err(|e| app::Error::internal(format!("store task: {e}")))?
            .map_err(Into::into)
    }

    pub fn principal_for(&self, hash: &str) -> Option<Principal> {
        self.tokens.read().ok()?.get(hash).copied()
    }

    /// Remember a token the store just recorded; drop the host's old ones.
    pub fn remember_token(&self, hash: String, who: Principal) {
        if let Ok(mut t) = self.tokens.write() {
            if let Principal::Host(h) = who {
                t.retain(|_, p| *p != Principal::Host(h));
            }
            t.insert(hash, who);
        }
    }

    /// Reload the tokens when the store says they changed (another process
    /// may have written them: `cloudmasterd --reset-admin-token`).
    pub async fn refresh_tokens(&self) -> app::Result<()> {
        let known = self.token_epoch.load(Ordering::SeqCst);
        let loaded = self
            .db(move |s| {
                // The epoch first: a change after it is seen at the next look.
                let epoch = s.token_epoch()?;
                if epoch == known {
                    return Ok(None);
                }
                Ok(Some((epoch, load_tokens(s)?)))
            })
            .await?;
        if let Some((epoch, tokens)) = loaded {
            if let Ok(mut t) = self.tokens.write() {
                *t = tokens;
                self.token_epoch.store(epoch, Ordering::SeqCst);
            }
        }
        Ok(())
    }

    pub fn forget_host_tokens(&self, host: crate::store::HostId) {
        if let Ok(mut t) = self.tokens.write() {
            t.retain(|_, p| *p != Principal::Host(host));
        }
    }

    /// Append to the event log and tell followers. Failures are logged, not
    /// returned: the change the event describes has already happened.
    pub async fn event(&self, kind: cm_api::words::EventKind, target: &str, message: &str) {
        let (t, m) = (target.to_string(), message.to_string());
        match self
            .db(move |s| s.append_event(kind, &t, &m, now_ms()))
            .await
        {
            Ok(ev) => {
                tracing::info!(target: "events", "{} {}: {}", ev.kind, ev.target, ev.message);
                self.events_seq.send_replace(ev.seq);
                let _ = self.events.send(ev);
            }
            Err(e) => tracing::error!("cannot record event {kind} {target}: {e}"),
        }
    }

    pub fn ops_changed(&self) {
        self.ops_changed.send_modify(|v| *v += 1);
    }
}
