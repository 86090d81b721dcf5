//! When a call is worth another try, and how long to wait (docs/cli.md).
//!
//! A call is tried again when the master could not be reached (connection
//! refused or cut, no answer in time), when a proxy or the master said 502,
//! 503 or 504, or when the master is still running the first attempt of the
//! same keyed request (409 `in_progress`). Calls that change something carry
//! an `Idempotency-Key`, the same on every attempt, so the master runs them
//! once (docs/api.md). The blocking client tries for a bounded time, with
//! back-off; the async client makes one attempt and leaves retries to its
//! caller's loop.

use crate::error::chain;
use cm_api::{ApiError, ErrorCode};
use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::StatusCode;
use std::time::{Duration, Instant};

/// The most of an answer a client reads (a console tail is at most 4 MiB of text).
pub const MAX_ANSWER: u64 = 64 * 1024 * 1024;
const FIRST_DELAY: Duration = Duration::from_millis(200);
const MAX_DELAY: Duration = Duration::from_secs(2);
/// The longest a Retry-After is honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(10);

/// What one attempt came to.
#[derive(Debug)]
pub enum Attempt {
    /// The master's answer (success or a definitive error).
    Answer { status: StatusCode, body: Vec<u8> },
    /// Worth another try.
    Again {
        why: String,
        /// The request may have reached the master and been applied.
        maybe_applied: bool,
        /// What the master asked us to wait (Retry-After).
        after: Option<Duration>,
    },
    /// Never worth another try (a malformed request, a bad URL).
    Fatal(String),
}

/// A request that got no answer.
pub fn failed(e: &reqwest::Error) -> Attempt {
    if e.is_builder() {
        return Attempt::Fatal(e.to_string());
    }
    Attempt::Again {
        why: chain(e),
        // The connection was never made: nothing reached the master.
        maybe_applied: !e.is_connect(),
        after: None,
    }
}

/// An answer whose body could not be read whole.
pub fn unread(why: String) -> Attempt {
    Attempt::Again {
        why: format!("reading the answer: {why}"),
        maybe_applied: true,
        after: None,
    }
}

/// A complete answer: final, or worth another try.
pub fn answered(status: StatusCode, headers: &HeaderMap, body: Vec<u8>) -> Attempt {
    let code = serde_json::from_slice::<ApiError>(&body)
        .ok()
        .map(|e| e.code());
    let again = match (status.as_u16(), code) {
        // The master itself says the host that must answer is down: waiting
        // here will not change that.
        (503, Some(ErrorCode::HostUnavailable)) => false,
        (502..=504, _) => true,
        (409, Some(ErrorCode::InProgress)) => true,
        _ => false,
    };
    if !again {
        return Attempt::Answer { status, body };
    }
    let why = match code {
        Some(_) => format!("HTTP {status}: {}", String::from_utf8_lossy(&body)),
        None => format!("HTTP {status}"),
    };
    Attempt::Again {
        why,
        maybe_applied: true,
        after: retry_after(headers),
    }
}

fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(RETRY_AFTER)?;
    let secs: u64 = v.to_str().ok()?.trim().parse().ok()?;
    Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER))
}

/// Doubling delays with jitter, within a total budget from the first try.
#[derive(Debug)]
pub struct Backoff {
    start: Instant,
    budget: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(budget: Duration) -> Backoff {
        Backoff {
            start: Instant::now(),
            budget,
            next: FIRST_DELAY,
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// How long to sleep before the next try, or None when the budget is spent.
    pub fn delay(&mut self, asked: Option<Duration>) -> Option<Duration> {
        let left = self.budget.checked_sub(self.start.elapsed())?;
        // ±25 % so that many clients do not come back in step.
        let jitter = u32::try_from(uuid::Uuid::new_v4().as_u128() % 500).unwrap_or(250);
        let mine = self.next.mul_f64(0.75) + self.next / 1000 * jitter;
        self.next = (self.next * 2).min(MAX_DELAY);
        // The last try comes when the budget ends.
        (!left.is_zero()).then(|| asked.unwrap_or(mine).min(left))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_stops_at_the_budget() {
        let mut b = Backoff::new(Duration::from_secs(3600));
        let first = b.delay(None).unwrap();
        assert!(first >= Duration::from_millis(150) && first <= Duration::from_millis(250));
        for _ in 0..10 {
            let d = b.delay(None).unwrap();
            assert!(d <= MAX_DELAY + MAX_DELAY / 4, "{d:?}");
        }
        assert_eq!(
            b.delay(Some(Duration::from_secs(5))),
            Some(Duration::from_secs(5))
        );
        let mut short = Backoff::new(Duration::from_millis(100));
        assert!(short.delay(Some(Duration::from_secs(5))).unwrap() <= Duration::from_millis(100));
        let mut spent = Backoff::new(Duration::ZERO);
        assert_eq!(spent.delay(None), None);
    }

    #[test]
    fn which_answers_are_tried_again() {
        let h = HeaderMap::new();
        let doc = |c: ErrorCode| serde_json::to_vec(&ApiError::new(c, "x")).unwrap();
        let again = |s: u16, body: Vec<u8>| {
            matches!(
                answered(StatusCode::from_u16(s).unwrap(), &h, body),
                Attempt::Again { .. }
            )
        };
        assert!(again(502, b"bad gateway".to_vec()));
        assert!(again(503, b"".to_vec()));
        assert!(!again(503, doc(ErrorCode::HostUnavailable)));
        assert!(again(409, doc(ErrorCode::InProgress)));
        assert!(!again(409, doc(ErrorCode::Conflict)));
        assert!(!again(404, doc(ErrorCode::NotFound)));
        assert!(!again(200, b"{}".to_vec()));
    }
}
