//! A token bucket: `rate` tokens a second, at most `burst` kept. The host
//! agent shapes what a guest may make it do with one (heartbeat lines and
//! bytes, boot-proxy requests, going into debt and waiting); the master
//! keeps one per guest record and per source address and refuses with 429
//! (`app::limits`). Small enough that a crate such as governor, which has no
//! refund and no debt, would not earn its place.
//!
//! Every method takes the time it acts at (`*_at`), so tests need no clock.

use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
pub struct TokenBucket {
    /// Tokens added per second.
    rate: f64,
    /// The most tokens kept (what may be spent at once).
    burst: f64,
    /// Tokens at `last` (negative: a debt).
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: f64, burst: f64) -> TokenBucket {
        TokenBucket::full_at(rate, burst, Instant::now())
    }

    /// A full bucket at `now`.
    pub fn full_at(rate: f64, burst: f64, now: Instant) -> TokenBucket {
        TokenBucket {
            rate,
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// `burst` tokens, then one every `every`.
    pub fn every(every: Duration, burst: u32, now: Instant) -> TokenBucket {
        let rate = 1.0 / every.as_secs_f64().max(1e-9);
        TokenBucket::full_at(rate, f64::from(burst), now)
    }

    /// The tokens there are at `now`.
    pub fn level(&self, now: Instant) -> f64 {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        (self.tokens + dt * self.rate).min(self.burst)
    }

    /// Has it refilled (the same as a bucket never used)?
    pub fn is_full(&self, now: Instant) -> bool {
        self.level(now) >= self.burst
    }

    fn refill(&mut self, now: Instant) {
        self.tokens = self.level(now);
        self.last = self.last.max(now);
    }

    /// How long from `now` until there are `n` tokens (zero: now).
    pub fn wait_for(&self, n: f64, now: Instant) -> Duration {
        let missing = (n - self.level(now)).max(0.0);
        if missing == 0.0 || self.rate <= 0.0 {
            return Duration::ZERO;
        }
        Duration::from_secs_f64(missing / self.rate)
    }

    /// Take `n` tokens if there are that many; otherwise take none.
    pub fn try_take(&mut self, n: f64) -> bool {
        self.try_take_at(n, Instant::now())
    }

    pub fn try_take_at(&mut self, n: f64, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }

    /// Take `n` tokens now, going into debt if need be; returns how long
    /// to wait before acting so that the rate holds.
    pub fn take(&mut self, n: f64) -> Duration {
        self.take_at(n, Instant::now())
    }

    pub fn take_at(&mut self, n: f64, now: Instant) -> Duration {
        self.refill(now);
        self.tokens -= n;
        if self.tokens >= 0.0 || self.rate <= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }

    /// Give back `n` tokens taken for what turned out not to count.
    pub fn give_back(&mut self, n: f64, now: Instant) {
        self.refill(now);
        self.tokens = (self.tokens + n).min(self.burst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::full_at(2.0, 3.0, t0);
        assert!(b.try_take_at(1.0, t0));
        assert!(b.try_take_at(1.0, t0));
        assert!(b.try_take_at(1.0, t0));
        assert!(!b.try_take_at(1.0, t0), "the burst is spent");
        assert_eq!(b.wait_for(1.0, t0), Duration::from_millis(500));
        assert!(b.try_take_at(1.0, t0 + Duration::from_millis(500)));
        assert!(!b.try_take_at(1.0, t0 + Duration::from_millis(600)));
        // Idle for long: never more than the burst.
        let later = t0 + Duration::from_secs(3600);
        assert!(b.is_full(later));
        for _ in 0..3 {
            assert!(b.try_take_at(1.0, later));
        }
        assert!(!b.try_take_at(1.0, later));
        b.give_back(1.0, later);
        assert!(b.try_take_at(1.0, later), "a token given back is there");
    }

    #[test]
    fn debt_is_paid_by_waiting() {
        let t0 = Instant::now();
        let mut b = TokenBucket::full_at(100.0, 100.0, t0);
        assert_eq!(b.take_at(100.0, t0), Duration::ZERO);
        let wait = b.take_at(50.0, t0);
        assert!(
            (wait.as_secs_f64() - 0.5).abs() < 1e-9,
            "50 tokens over the burst at 100/s: {wait:?}"
        );
        assert!(!b.try_take_at(1.0, t0 + Duration::from_millis(400)));
    }

    #[test]
    fn one_every_interval() {
        let t0 = Instant::now();
        let mut b = TokenBucket::every(Duration::from_millis(250), 1, t0);
        assert!(b.try_take_at(1.0, t0));
        assert!(!b.try_take_at(1.0, t0 + Duration::from_millis(200)));
        assert!(b.try_take_at(1.0, t0 + Duration::from_millis(250)));
    }
}
