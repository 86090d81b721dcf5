//! The scale benchmark's API load: creating instances from many clients,
//! then reads and writes side by side for a while. Every loop is bounded in
//! count and by a deadline.

use super::measure::Latencies;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The master's API as the benchmark's clients use it.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub token: String,
}

/// One request: method, path, body.
pub struct Req {
    pub method: reqwest::Method,
    pub path: String,
    pub body: Option<Value>,
}

impl Api {
    pub fn client() -> anyhow::Result<reqwest::blocking::Client> {
        Ok(reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()?)
    }

    /// Send one request; whether it succeeded, and the answer.
    pub fn send(&self, http: &reqwest::blocking::Client, r: &Req) -> (bool, Value) {
        let mut b = http
            .request(r.method.clone(), format!("{}{}", self.base, r.path))
            .bearer_auth(&self.token);
        if let Some(body) = &r.body {
            b = b.json(body);
        }
        match b.send() {
            Ok(resp) => {
                let ok = resp.status().is_success();
                let status = resp.status().as_u16();
                let v = resp.json::<Value>().unwrap_or(Value::Null);
                (
                    ok,
                    if ok {
                        v
                    } else {
                        json!({"status": status, "body": v})
                    },
                )
            }
            Err(e) => (false, Value::String(e.to_string())),
        }
    }

    pub fn get(&self, path: &str) -> anyhow::Result<Value> {
        let (ok, v) = self.send(
            &Api::client()?,
            &Req {
                method: reqwest::Method::GET,
                path: path.into(),
                body: None,
            },
        );
        if !ok {
            anyhow::bail!("GET {path}: {v}");
        }
        Ok(v)
    }
}

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
        let (api, names, next, first_error) = (
            api.clone(),
            names.clone(),
            next.clone(),
            first_error.clone(),
        );
        let image = image.to_string();
        let http = Api::client()?;
        handles.push(std::thread::spawn(move || {
            let mut lat = Latencies::default();
            while Instant::now() < deadline {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(name) = names.get(i) else { break };
                let r = Req {
                    method: reqwest::Method::POST,
                    path: "/v1/instances".into(),
                    body: Some(json!({"name": name, "image": image, "flavor": "m1.tiny"})),
                };
                let t = Instant::now();
                let (ok, v) = api.send(&http, &r);
                lat.add(t.elapsed(), ok);
                if !ok {
                    if let Ok(mut e) = first_error.lock() {
                        e.get_or_insert_with(|| v.to_string());
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
/// it, and the request a client sends as its `k`th.
pub struct Worker {
    pub name: &'static str,
    pub clients: usize,
    pub make: Arc<dyn Fn(usize, usize) -> Req + Send + Sync>,
}

/// Run every worker's clients side by side until `until`; their latencies.
pub fn mixed(api: &Api, workers: Vec<Worker>, until: Instant) -> Vec<(&'static str, Latencies)> {
    let mut handles = Vec::new();
    for w in &workers {
        for c in 0..w.clients {
            let (api, make, name) = (api.clone(), w.make.clone(), w.name);
            handles.push(std::thread::spawn(move || {
                let mut lat = Latencies::default();
                let Ok(http) = Api::client() else {
                    return (name, lat);
                };
                let mut k = 0;
                while Instant::now() < until {
                    let r = make(c, k);
                    k += 1;
                    let t = Instant::now();
                    let (ok, _) = api.send(&http, &r);
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
