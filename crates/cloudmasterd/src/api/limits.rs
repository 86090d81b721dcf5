//! Limits on what unauthenticated and guest clients may cost the master
//! (docs/security.md, "The master under hostile clients"):
//! - token buckets per record on `update_cache` and guest heartbeats, and
//!   per source address on failed guest authentication, answered with 429,
//!   `Retry-After` and the JSON error;
//! - the bounded maps that hold them (idle buckets are dropped first).
//!
//! The body limit of the unauthenticated routes is a layer in `api::router`.

use super::error::ApiErr;
use crate::state::App;
use axum::extract::{ConnectInfo, RawPathParams, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use cm_api::ErrorCode;
use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// A token bucket's shape: `burst` requests at once, then one every `every`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub burst: u32,
    pub every: Duration,
}

impl Rate {
    fn full_after(&self) -> Duration {
        self.every.saturating_mul(self.burst)
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Tokens at `at`.
    tokens: f64,
    at: Instant,
}

/// Token buckets by key, at most `max_keys` of them.
pub struct Buckets<K> {
    rate: Rate,
    max_keys: usize,
    map: Mutex<HashMap<K, Bucket>>,
}

impl<K: Hash + Eq + Clone> Buckets<K> {
    pub fn new(rate: Rate, max_keys: usize) -> Buckets<K> {
        Buckets {
            rate,
            max_keys: max_keys.max(1),
            map: Mutex::new(HashMap::new()),
        }
    }

    fn level(&self, b: &Bucket, now: Instant) -> f64 {
        let per = self.rate.every.as_secs_f64().max(1e-9);
        let refill = now.saturating_duration_since(b.at).as_secs_f64() / per;
        (b.tokens + refill).min(f64::from(self.rate.burst))
    }

    /// How long until a token is there (zero: now).
    fn wait_for(&self, tokens: f64) -> Duration {
        let missing = (1.0 - tokens).max(0.0);
        self.rate.every.mul_f64(missing)
    }

    /// Whether a token is there, without taking it.
    pub fn check(&self, key: &K, now: Instant) -> Result<(), Duration> {
        let Ok(map) = self.map.lock() else {
            return Ok(());
        };
        match map.get(key) {
            Some(b) => {
                let t = self.level(b, now);
                if t >= 1.0 {
                    Ok(())
                } else {
                    Err(self.wait_for(t))
                }
            }
            None => Ok(()),
        }
    }

    /// Take a token, or say how long until there is one.
    pub fn take(&self, key: &K, now: Instant) -> Result<(), Duration> {
        let Ok(mut map) = self.map.lock() else {
            return Ok(());
        };
        if !map.contains_key(key) && map.len() >= self.max_keys {
            self.evict(&mut map, now);
        }
        let full = f64::from(self.rate.burst);
        let b = map.entry(key.clone()).or_insert(Bucket {
            tokens: full,
            at: now,
        });
        let t = self.level(b, now);
        if t >= 1.0 {
            *b = Bucket {
                tokens: t - 1.0,
                at: now,
            };
            Ok(())
        } else {
            *b = Bucket { tokens: t, at: now };
            Err(self.wait_for(t))
        }
    }

    /// Give back a token taken for a request that turned out not to count.
    pub fn refund(&self, key: &K, now: Instant) {
        if let Ok(mut map) = self.map.lock() {
            if let Some(b) = map.get_mut(key) {
                let t = self.level(b, now);
                *b = Bucket {
                    tokens: (t + 1.0).min(f64::from(self.rate.burst)),
                    at: now,
                };
            }
        }
    }

    /// Make room: drop the buckets that have refilled (the same as absent),
    /// and if every one is still in use, the fullest half.
    fn evict(&self, map: &mut HashMap<K, Bucket>, now: Instant) {
        let idle = self.rate.full_after();
        map.retain(|_, b| now.saturating_duration_since(b.at) < idle);
        if map.len() >= self.max_keys {
            let mut levels: Vec<(K, f64)> = map
                .iter()
                .map(|(k, b)| (k.clone(), self.level(b, now)))
                .collect();
            levels.sort_by(|a, b| b.1.total_cmp(&a.1));
            for (k, _) in levels.into_iter().take(self.max_keys / 2 + 1) {
                map.remove(&k);
            }
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.map.lock().map(|m| m.len()).unwrap_or(0)
    }
}

/// The settings of the limits (flags or the config file).
#[derive(Debug, Clone, Copy)]
pub struct LimitSettings {
    /// Request bodies of the unauthenticated routes, bytes.
    pub open_body_max: usize,
    /// Per record and route: `update_cache`, heartbeats.
    pub guest_rate: Rate,
    /// Per source address: failed guest authentication.
    pub auth_fail_rate: Rate,
    /// Buckets kept at most, per kind.
    pub max_buckets: usize,
}

impl Default for LimitSettings {
    fn default() -> Self {
        LimitSettings {
            open_body_max: 64 * 1024,
            guest_rate: Rate {
                burst: 10,
                every: Duration::from_secs(1),
            },
            auth_fail_rate: Rate {
                burst: 30,
                every: Duration::from_millis(500),
            },
            max_buckets: 16_384,
        }
    }
}

/// The master's buckets.
pub struct Limiters {
    pub records: Buckets<(String, Uuid)>,
    pub auth_failures: Buckets<IpAddr>,
}

impl Limiters {
    pub fn new(s: &LimitSettings) -> Limiters {
        Limiters {
            records: Buckets::new(s.guest_rate, s.max_buckets),
            auth_failures: Buckets::new(s.auth_fail_rate, s.max_buckets),
        }
    }
}

fn too_many(what: &str, wait: Duration) -> Response {
    let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
    let mut resp = ApiErr::new(
        ErrorCode::RateLimited,
        format!("too many requests {what}: try again in {secs}s"),
    )
    .into_response();
    resp.headers_mut()
        .insert(axum::http::header::RETRY_AFTER, HeaderValue::from(secs));
    resp
}

fn refused_auth(status: StatusCode) -> bool {
    status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN
}

/// Middleware on the guest routes: a source address whose failed
/// authentications emptied its bucket is refused until it refills.
pub async fn guest_auth_failures(
    State(app): State<Arc<App>>,
    req: Request,
    next: Next,
) -> Response {
    let ip = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let limiter = &app.limiters.auth_failures;
    if let Some(ip) = ip {
        if let Err(wait) = limiter.check(&ip, Instant::now()) {
            return too_many("that failed authentication from this address", wait);
        }
    }
    let resp = next.run(req).await;
    if let (Some(ip), true) = (ip, refused_auth(resp.status())) {
        let _ = limiter.take(&ip, Instant::now());
    }
    resp
}

/// Middleware on `update_cache` and heartbeats: one bucket per record and
/// route. A request that fails authentication gives its token back (it is
/// counted as a failure instead), so nobody can spend a record's bucket
/// without its secret.
pub async fn per_record(
    State(app): State<Arc<App>>,
    params: RawPathParams,
    req: Request,
    next: Next,
) -> Response {
    let uuid = params
        .iter()
        .find(|(k, _)| *k == "uuid")
        .and_then(|(_, v)| Uuid::parse_str(v).ok());
    let Some(uuid) = uuid else {
        return next.run(req).await;
    };
    let route = req
        .uri()
        .path()
        .rsplit('/')
        .next()
        .unwrap_or("")
        .to_string();
    let key = (route, uuid);
    let limiter = &app.limiters.records;
    if let Err(wait) = limiter.take(&key, Instant::now()) {
        return too_many("for this record", wait);
    }
    let resp = next.run(req).await;
    if refused_auth(resp.status()) {
        limiter.refund(&key, Instant::now());
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(burst: u32, ms: u64) -> Rate {
        Rate {
            burst,
            every: Duration::from_millis(ms),
        }
    }

    #[test]
    fn a_burst_is_refused_then_refills() {
        let b: Buckets<u8> = Buckets::new(rate(3, 1000), 10);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(b.take(&1, t0).is_ok());
        }
        let wait = b.take(&1, t0).unwrap_err();
        assert!(wait > Duration::from_millis(900) && wait <= Duration::from_secs(1));
        assert!(b.take(&2, t0).is_ok(), "another key has its own bucket");
        assert!(b.take(&1, t0 + Duration::from_millis(1100)).is_ok());
        assert!(b.take(&1, t0 + Duration::from_millis(1100)).is_err());
        b.refund(&1, t0 + Duration::from_millis(1100));
        assert!(b.check(&1, t0 + Duration::from_millis(1100)).is_ok());
    }

    #[test]
    fn memory_is_bounded() {
        let b: Buckets<u32> = Buckets::new(rate(2, 1000), 100);
        let t0 = Instant::now();
        for k in 0..10_000u32 {
            let _ = b.take(&k, t0);
            assert!(b.len() <= 100);
        }
        // A limited key keeps its bucket while others come and go under the cap.
        let b: Buckets<u32> = Buckets::new(rate(1, 60_000), 100);
        assert!(b.take(&7, t0).is_ok());
        for k in 0..50u32 {
            let _ = b.take(&k, t0);
        }
        assert!(b.take(&7, t0).is_err());
    }
}
