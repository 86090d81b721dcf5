//! A token bucket: how much a guest may make the agent do per second
//! (heartbeat lines and bytes in vm/guest.rs, requests in vm/bootproxy.rs).
//! Small enough that a crate (governor) would not earn its place.

use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct TokenBucket {
    /// Tokens added per second.
    rate: f64,
    /// The most tokens kept (what may be spent at once).
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: f64, burst: f64) -> TokenBucket {
        TokenBucket {
            rate,
            burst,
            tokens: burst,
            last: Instant::now(),
        }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        self.last = now;
    }

    /// Take `n` tokens if there are that many; otherwise take none.
    pub fn try_take(&mut self, n: f64) -> bool {
        self.try_take_at(n, Instant::now())
    }

    fn try_take_at(&mut self, n: f64, now: Instant) -> bool {
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

    fn take_at(&mut self, n: f64, now: Instant) -> Duration {
        self.refill(now);
        self.tokens -= n;
        if self.tokens >= 0.0 || self.rate <= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(2.0, 3.0);
        b.last = t0;
        assert!(b.try_take_at(1.0, t0));
        assert!(b.try_take_at(1.0, t0));
        assert!(b.try_take_at(1.0, t0));
        assert!(!b.try_take_at(1.0, t0), "the burst is spent");
        assert!(b.try_take_at(1.0, t0 + Duration::from_millis(500)));
        assert!(!b.try_take_at(1.0, t0 + Duration::from_millis(600)));
        // Idle for long: never more than the burst.
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..3 {
            assert!(b.try_take_at(1.0, later));
        }
        assert!(!b.try_take_at(1.0, later));
    }

    #[test]
    fn debt_is_paid_by_waiting() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(100.0, 100.0);
        b.last = t0;
        assert_eq!(b.take_at(100.0, t0), Duration::ZERO);
        let wait = b.take_at(50.0, t0);
        assert!(
            (wait.as_secs_f64() - 0.5).abs() < 1e-9,
            "50 tokens over the burst at 100/s: {wait:?}"
        );
    }
}
