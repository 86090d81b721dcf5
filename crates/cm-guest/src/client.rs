//! The guest's side of `/boot/v1` (docs/boot-protocol.md): HTTP with the
//! record's uuid and secret as Basic credentials.

use base64::Engine;
use cm_api::boot::{AssignDynamic, Assigned, Heartbeat, UpdateCache};
use cm_api::{ApiError, ErrorCode};
use std::time::Duration;
use uuid::Uuid;

/// The largest config body read (the master accepts 2 MiB).
const MAX_BODY: u64 = 4 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The master could not be reached, or answered 5xx or 429: try again.
    #[error("{0}")]
    Unavailable(String),
    /// 403: unknown record or wrong secret (or trust key).
    #[error("refused: {0}")]
    Refused(String),
    /// `assign_dynamic` found no free record.
    #[error("{0}")]
    NoneLeft(String),
    /// Any other answer the guest cannot act on.
    #[error("{0}")]
    Other(String),
}

impl ClientError {
    pub fn retryable(&self) -> bool {
        matches!(self, ClientError::Unavailable(_))
    }
}

pub enum Fetched {
    Config { version: u64, body: Vec<u8> },
    NotModified,
}

pub struct Client {
    base: String,
    /// The master as in the boot string, for `netinfo::address_towards`.
    host: String,
    port: u16,
    agent: ureq::Agent,
}

fn basic(user: &str, secret: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{secret}"))
    )
}

/// What a non-2xx answer means.
fn error_of(mut resp: ureq::http::Response<ureq::Body>) -> ClientError {
    let status = resp.status().as_u16();
    let text = resp
        .body_mut()
        .with_config()
        .limit(64 * 1024)
        .read_to_string()
        .unwrap_or_default();
    let (code, message) = match serde_json::from_str::<ApiError>(&text) {
        Ok(e) => (Some(e.error.code), e.error.message),
        Err(_) => (None, format!("HTTP {status}")),
    };
    match status {
        403 | 401 => ClientError::Refused(message),
        409 if code == Some(ErrorCode::NoneLeft) => ClientError::NoneLeft(message),
        // 429: the master's rate limit (Retry-After); try again later.
        s if s >= 500 || s == 429 => ClientError::Unavailable(message),
        _ => ClientError::Other(message),
    }
}

fn transport(e: ureq::Error) -> ClientError {
    ClientError::Unavailable(format!("cannot reach the master: {e}"))
}

impl Client {
    /// `host` as in the boot string (`10.0.2.2`, `[fd00::1]`).
    pub fn new(host: &str, port: u16) -> Client {
        let config = ureq::Agent::config_builder()
            .timeout_connect(Some(Duration::from_secs(5)))
            .timeout_global(Some(Duration::from_secs(60)))
            .http_status_as_error(false)
            .build();
        Client {
            base: format!("http://{host}:{port}"),
            host: host.to_string(),
            port,
            agent: config.into(),
        }
    }

    /// This guest's address on the way to the master.
    pub fn my_address(&self) -> Option<String> {
        crate::netinfo::address_towards(&self.host, self.port).or_else(crate::netinfo::my_address)
    }

    /// The config; with `after`, wait up to `wait` seconds for a newer one.
    pub fn fetch(
        &self,
        uuid: Uuid,
        secret: &str,
        after: Option<u64>,
        wait: u64,
    ) -> Result<Fetched, ClientError> {
        let url = match after {
            Some(v) => format!("{}/boot/v1/configs/{uuid}?after={v}&wait={wait}", self.base),
            None => format!("{}/boot/v1/configs/{uuid}", self.base),
        };
        let mut resp = self
            .agent
            .get(&url)
            .header("Authorization", basic(&uuid.to_string(), secret))
            .call()
            .map_err(transport)?;
        match resp.status().as_u16() {
            200 => {
                let version = resp
                    .headers()
                    .get("x-config-version")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| ClientError::Other("no X-Config-Version header".into()))?;
                let body = resp
                    .body_mut()
                    .with_config()
                    .limit(MAX_BODY)
                    .read_to_vec()
                    .map_err(|e| ClientError::Unavailable(format!("reading the config: {e}")))?;
                Ok(Fetched::Config { version, body })
            }
            304 => Ok(Fetched::NotModified),
            _ => Err(error_of(resp)),
        }
    }

    /// The seed's `update_cache`.
    pub fn update_cache(
        &self,
        uuid: Uuid,
        secret: &str,
        upd: &UpdateCache,
    ) -> Result<(), ClientError> {
        let resp = self
            .agent
            .put(&format!("{}/boot/v1/configs/{uuid}/status", self.base))
            .header("Authorization", basic(&uuid.to_string(), secret))
            .send_json(upd)
            .map_err(transport)?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(error_of(resp))
        }
    }

    /// The seed's `assign_dynamic`, with the domain's secret, or with an
    /// instance's own credential (then `instance` is that instance).
    pub fn assign(
        &self,
        domain: &str,
        instance: Option<Uuid>,
        secret: &str,
    ) -> Result<Assigned, ClientError> {
        let mut resp = self
            .agent
            .post(&format!("{}/boot/v1/assign", self.base))
            .header("Authorization", basic(domain, secret))
            .send_json(AssignDynamic {
                domain: domain.to_string(),
                instance,
            })
            .map_err(transport)?;
        if !resp.status().is_success() {
            return Err(error_of(resp));
        }
        resp.body_mut()
            .read_json()
            .map_err(|e| ClientError::Other(format!("assign_dynamic answered: {e}")))
    }

    /// A heartbeat over HTTP, for a guest without our virtio-serial port.
    pub fn heartbeat(&self, uuid: Uuid, secret: &str, hb: &Heartbeat) -> Result<(), ClientError> {
        let resp = self
            .agent
            .post(&format!("{}/boot/v1/configs/{uuid}/heartbeat", self.base))
            .header("Authorization", basic(&uuid.to_string(), secret))
            .send_json(hb)
            .map_err(transport)?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(error_of(resp))
        }
    }
}

/// Exponential back-off with jitter: 200 ms doubling to `cap`.
pub struct Backoff {
    next: Duration,
    cap: Duration,
}

impl Backoff {
    pub fn new(cap: Duration) -> Backoff {
        Backoff {
            next: Duration::from_millis(200),
            cap,
        }
    }

    /// How long to wait now; the next wait is longer (up to the cap).
    pub fn step(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.cap);
        // Up to a quarter more, so racing guests spread out.
        let jitter =
            cm_api::time::duration_ms(base).saturating_mul(crate::trust::random_u64() % 26) / 100;
        base + Duration::from_millis(jitter)
    }

    pub fn reset(&mut self) {
        self.next = Duration::from_millis(200);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &str) -> ClientError {
        let resp = ureq::http::Response::builder()
            .status(status)
            .body(ureq::Body::builder().data(body.to_string()))
            .unwrap();
        error_of(resp)
    }

    /// `none_left` is the error document's code, not a word somewhere in
    /// the answer's text.
    #[test]
    fn none_left_is_read_from_the_error_code() {
        let none_left = r#"{"error":{"code":"none_left","message":"every record of d is taken"}}"#;
        assert!(matches!(answer(409, none_left), ClientError::NoneLeft(_)));
        let conflict =
            r#"{"error":{"code":"conflict","message":"domain none_left is being deleted"}}"#;
        assert!(matches!(answer(409, conflict), ClientError::Other(_)));
        assert!(matches!(answer(409, "none_left"), ClientError::Other(_)));
    }

    #[test]
    fn backoff_doubles_to_its_cap_with_jitter() {
        let mut b = Backoff::new(Duration::from_secs(5));
        let waits: Vec<Duration> = (0..10).map(|_| b.step()).collect();
        assert!(waits[0] >= Duration::from_millis(200) && waits[0] <= Duration::from_millis(250));
        assert!(waits[3] >= Duration::from_millis(1600));
        assert!(waits.iter().all(|w| *w <= Duration::from_millis(6250)));
        b.reset();
        assert!(b.step() <= Duration::from_millis(250));
    }

    #[test]
    fn basic_credentials_are_encoded() {
        assert_eq!(basic("u", "p:q"), "Basic dTpwOnE=");
    }
}
