//! `GET /v1/instances`, rendered once and served many times: the list as
//! JSON bytes (and gzip-compressed, made the first time a client asks for
//! it) is kept while the store's generation says nothing was written since
//! and for at most [`FRESH_MS`], because some fields derive from the clock
//! (a host is down once it has been silent long enough, "silent for 12s").
//! Concurrent misses render once: the others wait for that render.
//!
//! A list is never older than the last committed write; its clock-derived
//! fields are at most a second old.

use super::Result;
use crate::state::App;
use crate::store::{now_ms, HostId, Millis};
use crate::view;
use bytes::Bytes;
use cm_api::host::HostState;
use cm_api::instance::Instance;
use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

/// How long a rendered list may stand for the clock-derived fields.
pub const FRESH_MS: Millis = 1_000;

/// One rendering of the list.
#[derive(Debug)]
pub struct Rendered {
    /// The JSON array of `cm_api::instance::Instance`.
    pub json: Bytes,
    gzip: OnceLock<Bytes>,
}

impl Rendered {
    /// The same bytes gzip-compressed (fast level: the list compresses
    /// ~15x anyway), made once.
    pub fn gzip(&self) -> Bytes {
        self.gzip
            .get_or_init(|| {
                let mut z = flate2::write::GzEncoder::new(
                    Vec::with_capacity(self.json.len() / 8),
                    flate2::Compression::fast(),
                );
                // Writing to a Vec cannot fail.
                match z.write_all(&self.json).and_then(|()| z.finish()) {
                    Ok(v) => Bytes::from(v),
                    Err(_) => Bytes::new(),
                }
            })
            .clone()
    }

    /// `gzip`, made off the async threads the first time (a list of 20,000
    /// is 9 MB to compress).
    pub async fn gzipped(self: &Arc<Self>) -> Result<Bytes> {
        if let Some(z) = self.gzip.get() {
            return Ok(z.clone());
        }
        let me = self.clone();
        tokio::task::spawn_blocking(move || me.gzip())
            .await
            .map_err(|e| super::Error::internal(format!("compress task: {e}")))
    }
}

struct Entry {
    generation: u64,
    until: Millis,
    list: Arc<Rendered>,
}

/// The kept rendering, and the lock one render holds.
#[derive(Default)]
pub struct ListCache {
    entry: Mutex<Option<Entry>>,
    rendering: tokio::sync::Mutex<()>,
}

impl ListCache {
    fn current(&self, generation: u64, now: Millis) -> Option<Arc<Rendered>> {
        let e = self.entry.lock().ok()?;
        e.as_ref()
            .filter(|e| e.generation == generation && now < e.until)
            .map(|e| e.list.clone())
    }
}

/// The list as the store holds it now (see the module's note).
pub async fn list(app: &App) -> Result<Arc<Rendered>> {
    let cache = &app.instance_list;
    if let Some(l) = cache.current(app.store.generation(), now_ms()) {
        return Ok(l);
    }
    let _one = cache.rendering.lock().await;
    // Read before rendering: a write during the render makes it stale.
    let generation = app.store.generation();
    let now = now_ms();
    if let Some(l) = cache.current(generation, now) {
        return Ok(l);
    }
    let down_after = app.settings.host_down_after;
    let (json, until) = app
        .db(move |s| {
            let rows = s.list_instances()?;
            let hosts = s.all_host_liveness()?;
            let down_ms = cm_api::time::duration_millis(down_after);
            // Kept until a host that is up now would be declared down.
            let mut until = now + FRESH_MS;
            let up: HashMap<HostId, bool> = hosts
                .iter()
                .map(|(id, h)| {
                    let up = view::liveness_state(h, now, down_after) != HostState::Down;
                    if let (true, Some(seen)) = (up, h.last_seen) {
                        until = until.min(seen + down_ms + 1);
                    }
                    (*id, up)
                })
                .collect();
            let list: Vec<Instance> = rows
                .iter()
                .map(|r| view::instance(r, up.get(&r.host_id).copied().unwrap_or(false)))
                .collect();
            let json = serde_json::to_vec(&list)
                .map_err(|e| crate::store::StoreError::Corrupt(format!("instance list: {e}")))?;
            Ok((json, until))
        })
        .await?;
    let list = Arc::new(Rendered {
        json: Bytes::from(json),
        gzip: OnceLock::new(),
    });
    if let Ok(mut e) = cache.entry.lock() {
        *e = Some(Entry {
            generation,
            until,
            list: list.clone(),
        });
    }
    Ok(list)
}
