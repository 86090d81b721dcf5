//! When to try a call again, how long to wait, and what to tell the user when
//! cm gives up (docs/cli.md).
//!
//! A call is tried again when the master could not be reached (connection
//! refused or cut, no answer in time), when a proxy or the master said
//! 502, 503 or 504, or when the master is still running the first attempt of
//! the same keyed request (409 `in_progress`). Calls that change something
//! carry an `Idempotency-Key`, the same on every attempt, so the master runs
//! them once (docs/api.md). cm tries for a bounded time (`--retry-for`,
//! 30 s by default), with back-off.

use reqwest::blocking::Response;
use reqwest::{Method, StatusCode};
use std::io::Read;
use std::time::{Duration, Instant};

/// The most of an answer cm reads (a console tail is at most 4 MiB of text).
pub const MAX_ANSWER: u64 = 64 * 1024 * 1024;
const FIRST_DELAY: Duration = Duration::from_millis(200);
const MAX_DELAY: Duration = Duration::from_secs(2);
/// The longest a Retry-After is honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(10);

/// What one attempt came to.
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

/// Classify the result of sending one request, reading its answer.
pub fn attempt(sent: reqwest::Result<Response>) -> Attempt {
    let resp = match sent {
        Ok(r) => r,
        Err(e) if e.is_builder() => return Attempt::Fatal(e.to_string()),
        // The connection was never made: nothing reached the master.
        Err(e) if e.is_connect() => {
            return Attempt::Again {
                why: chain(&e),
                maybe_applied: false,
                after: None,
            }
        }
        Err(e) => {
            return Attempt::Again {
                why: chain(&e),
                maybe_applied: true,
                after: None,
            }
        }
    };
    let status = resp.status();
    let after = retry_after(&resp);
    let mut body = Vec::new();
    if let Err(e) = resp.take(MAX_ANSWER).read_to_end(&mut body) {
        return Attempt::Again {
            why: format!("reading the answer: {e}"),
            maybe_applied: true,
            after: None,
        };
    }
    let code = serde_json::from_slice::<cm_api::ApiError>(&body)
        .ok()
        .map(|e| e.code());
    let again = match (status.as_u16(), code) {
        // The master itself says the host that must answer is down: waiting
        // here will not change that.
        (503, Some(cm_api::ErrorCode::HostUnavailable)) => false,
        (502..=504, _) => true,
        (409, Some(cm_api::ErrorCode::InProgress)) => true,
        _ => false,
    };
    if again {
        let why = match code {
            Some(_) => format!("HTTP {status}: {}", String::from_utf8_lossy(&body)),
            None => format!("HTTP {status}"),
        };
        return Attempt::Again {
            why,
            maybe_applied: true,
            after,
        };
    }
    Attempt::Answer { status, body }
}

/// The error and its causes ("error sending request: connection refused").
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let c_s = c.to_string();
        if !s.contains(&c_s) {
            s.push_str(": ");
            s.push_str(&c_s);
        }
        cur = c.source();
    }
    s
}

fn retry_after(resp: &Response) -> Option<Duration> {
    let v = resp.headers().get(reqwest::header::RETRY_AFTER)?;
    let secs: u64 = v.to_str().ok()?.trim().parse().ok()?;
    Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER))
}

/// Doubling delays with jitter, within a total budget from the first try.
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
        let jitter = (uuid::Uuid::new_v4().as_u128() % 500) as u32;
        let mine = self.next.mul_f64(0.75) + self.next / 1000 * jitter;
        self.next = (self.next * 2).min(MAX_DELAY);
        // The last try comes when the budget ends.
        (!left.is_zero()).then(|| asked.unwrap_or(mine).min(left))
    }
}

/// The command that shows whether a call that may have been applied was,
/// from its method, path and body.
pub fn check_hint(method: &Method, path: &str, body: Option<&[u8]>) -> String {
    let path = path.split('?').next().unwrap_or(path);
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let body_name = || {
        body.and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok())
            .and_then(|v| v.get("name")?.as_str().map(str::to_string))
    };
    let hint = match segs.as_slice() {
        ["v1", "instances"] => body_name().map(|n| format!("cm instance show {n}")),
        ["v1", "instances", name, ..] => Some(format!("cm instance show {name}")),
        ["v1", "images"] => body_name().map(|n| format!("cm image show {n}")),
        ["v1", "images", ..] => Some("cm image list".to_string()),
        ["v1", "flavors", ..] => Some("cm flavor list".to_string()),
        ["v1", "hosts", "join-token"] => Some("cm host join-token".to_string()),
        ["v1", "hosts", name] => Some(format!("cm host show {name}")),
        ["v1", "configs", ..] | ["boot", ..] => Some("cm config list".to_string()),
        ["v1", "config-domains", ..] => Some("cm config domain list".to_string()),
        _ => None,
    };
    hint.unwrap_or_else(|| {
        if *method == Method::DELETE || *method == Method::POST {
            "cm event list".to_string()
        } else {
            "cm operation list".to_string()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_name_what_to_check() {
        let body = br#"{"name": "web-1", "image": "cm-test"}"#;
        assert_eq!(
            check_hint(&Method::POST, "/v1/instances", Some(body)),
            "cm instance show web-1"
        );
        assert_eq!(
            check_hint(&Method::DELETE, "/v1/instances/db-2", None),
            "cm instance show db-2"
        );
        assert_eq!(
            check_hint(&Method::POST, "/v1/instances/db-2/stop?x=1", None),
            "cm instance show db-2"
        );
        assert_eq!(
            check_hint(&Method::POST, "/v1/hosts/join-token", None),
            "cm host join-token"
        );
        assert_eq!(
            check_hint(&Method::POST, "/v1/other", None),
            "cm event list"
        );
    }

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
}
