//! The scale benchmark's API load: creating instances from many clients,
//! then reads and writes side by side for a while, every request through the
//! typed client (cm_client) as `cm` sends it. Every loop is bounded in count
//! and by a deadline.

use super::measure::Latencies;
use cm_api::instance::CreateInstance;
use cm_client::api;
use cm_client::blocking::Client;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long one request may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// The master's API as the benchmark's clients reach it: each thread makes
/// its own [`Client`] (its own connections).
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub token: String,
}

impl Api {
    /// A typed client with one attempt per call (a refusal or a failure is
    /// counted, never hidden by a retry).
    pub fn client(&self) -> anyhow::Result<Client> {
        Ok(Client::builder(&self.base, &self.token)
            .timeout(CALL_TIMEOUT)
            .build()?)
    }
}

/// One request of the mixed load: a client's `k`th call, through the typed
/// client; what it refused or failed with.
pub type Call = dyn Fn(&Client, usize, usize) -> Result<(), cm_client::Error> + Send + Sync;

/// What the create phase did.
pub struct Created {
    pub latencies: Latencies,
    pub took: Duration,
    pub first_error: Option<String>,
}

/// Create instances `names` from `clients` threads, each taking the next
/// name, until all are sent or `deadline`.
pub fn create_all(
    api: &Api,
    names: Arc<Vec<String>>,
    image: &str,
    clients: usize,
    deadline: Instant,
) -> anyhow::Result<Created> {
    let next = Arc::new(AtomicUsize::new(0));
    let first_error = Arc::new(Mutex::new(None::<String>));
    let began = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..clients {
        let (names, next, first_error) = (names.clone(), next.clone(), first_error.clone());
        let image = image.to_string();
        let client = api.client()?;
        handles.push(std::thread::spawn(move || {
            let mut lat = Latencies::default();
            while Instant::now() < deadline {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(name) = names.get(i) else { break };
                let req = CreateInstance {
                    name: name.clone(),
                    image: image.clone(),
                    flavor: Some("m1.tiny".into()),
                    ..Default::default()
                };
                let t = Instant::now();
                let got = client.call(api::instances::create(&req));
                lat.add(t.elapsed(), got.is_ok());
                if let Err(e) = got {
                    if let Ok(mut first) = first_error.lock() {
                        first.get_or_insert_with(|| e.to_string());
                    }
                }
            }
            lat
        }));
    }
    let mut latencies = Latencies::default();
    for h in handles {
        if let Ok(l) = h.join() {
            latencies.merge(l);
        }
    }
    let first_error = first_error.lock().ok().and_then(|e| e.clone());
    Ok(Created {
        latencies,
        took: began.elapsed(),
        first_error,
    })
}

/// One kind of request in the mixed load: its name, how many clients send
/// it, and the call a client makes as its `k`th.
pub struct Worker {
    pub name: &'static str,
    pub clients: usize,
    pub call: Arc<Call>,
}

/// Run every worker's clients side by side until `until`; their latencies.
pub fn mixed(api: &Api, workers: Vec<Worker>, until: Instant) -> Vec<(&'static str, Latencies)> {
    let mut handles = Vec::new();
    for w in &workers {
        for c in 0..w.clients {
            let (api, call, name) = (api.clone(), w.call.clone(), w.name);
            handles.push(std::thread::spawn(move || {
                let mut lat = Latencies::default();
                let Ok(client) = api.client() else {
                    return (name, lat);
                };
                let mut k = 0;
                while Instant::now() < until {
                    let t = Instant::now();
                    let ok = call(&client, c, k).is_ok();
                    k += 1;
                    lat.add(t.elapsed(), ok);
                }
                (name, lat)
            }));
        }
    }
    let mut out: Vec<(&'static str, Latencies)> = workers
        .iter()
        .map(|w| (w.name, Latencies::default()))
        .collect();
    for h in handles {
        if let Ok((name, l)) = h.join() {
            if let Some((_, all)) = out.iter_mut().find(|(n, _)| *n == name) {
                all.merge(l);
            }
        }
    }
    out
}
