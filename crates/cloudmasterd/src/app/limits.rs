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
use token_bucket::TokenBucket;
use uuid::Uuid;

/// A token bucket's shape: `burst` requests at once, then one every `every`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub burst: u32,
    pub every: Duration,
}

impl Rate {
    fn bucket(&self, now: Instant) -> TokenBucket {
        TokenBucket::every(self.every, self.burst, now)
    }
}

/// Token buckets by key, at most `max_keys` of them.
pub struct Buckets<K> {
    rate: Rate,
    max_keys: usize,
    map: Mutex<HashMap<K, TokenBucket>>,
}

impl<K: Hash + Eq + Clone> Buckets<K> {
    pub fn new(rate: Rate, max_keys: usize) -> Buckets<K> {
        Buckets {
            rate,
            max_keys: max_keys.max(1),
            map: Mutex::new(HashMap::new()),
        }
    }

    /// Whether a token is there, without taking it.
    pub fn check(&self, key: &K, now: Instant) -> Result<(), Duration> {
        let Ok(map) = self.map.lock() else {
            return Ok(());
        };
        match map.get(key) {
            Some(b) if b.level(now) < 1.0 => Err(b.wait_for(1.0, now)),
            _ => Ok(()),
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
        let b = map
            .entry(key.clone())
            .or_insert_with(|| self.rate.bucket(now));
        match b.try_take_at(1.0, now) {
            true => Ok(()),
            false => Err(b.wait_for(1.0, now)),
        }
    }

    /// Give back a token taken for a request that turned out not to count.
    pub fn refund(&self, key: &K, now: Instant) {
        if let Ok(mut map) = self.map.lock() {
            if let Some(b) = map.get_mut(key) {
                b.give_back(1.0, now);
            }
        }
    }

    /// Make room: drop the buckets that have refilled (the same as absent),
    /// and if every one is still in use, the fullest half.
    fn evict(&self, map: &mut HashMap<K, TokenBucket>, now: Instant) {
        map.retain(|_, b| !b.is_full(now));
        if map.len() >= self.max_keys {
            let mut levels: Vec<(K, f64)> =
                map.iter().map(|(k, b)| (k.clone(), b.level(now))).collect();
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
