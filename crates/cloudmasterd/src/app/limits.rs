//! Token buckets that bound what unauthenticated and guest clients may
//! cost the master (docs/security.md, "The master under hostile clients"):
//! per record on `update_cache` and guest heartbeats, per source address on
//! failed guest authentication; the maps that hold them are bounded (idle
//! buckets are dropped first). `api::limits` answers with 429.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
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
            b.take(&1, t0).unwrap();
        }
        let wait = b.take(&1, t0).unwrap_err();
        assert!(wait > Duration::from_millis(900) && wait <= Duration::from_secs(1));
        assert!(b.take(&2, t0).is_ok(), "another key has its own bucket");
        b.take(&1, t0 + Duration::from_millis(1100)).unwrap();
        assert!(b.take(&1, t0 + Duration::from_millis(1100)).is_err());
        b.refund(&1, t0 + Duration::from_millis(1100));
        b.check(&1, t0 + Duration::from_millis(1100)).unwrap();
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
        b.take(&7, t0).unwrap();
        for k in 0..50u32 {
            let _ = b.take(&k, t0);
        }
        assert!(b.take(&7, t0).is_err());
    }
}
