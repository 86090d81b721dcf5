//! The one place where HTTP clients of the master are built (issue 9 asks for
//! one: TLS with the cloud's CA and mutual TLS are added here).

use crate::Error;
use std::time::Duration;

/// Below the master's idle close (its header-read timeout, 10 s by default):
/// a request never goes out on a connection the master is closing.
pub const POOL_IDLE: Duration = Duration::from_secs(5);

/// How a client waits.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// For a whole call (None: none, for streams).
    pub total: Option<Duration>,
    pub connect: Option<Duration>,
    pub keepalive: Option<Duration>,
}

impl Timeouts {
    /// A call answered whole: `total` at most.
    pub fn call(total: Duration) -> Timeouts {
        Timeouts {
            total: Some(total),
            connect: None,
            keepalive: None,
        }
    }

    /// A stream that stays open (server-sent events): no overall timeout
    /// (the master sends a keep-alive comment every 15 s).
    pub fn stream() -> Timeouts {
        Timeouts {
            total: None,
            connect: Some(Duration::from_secs(10)),
            keepalive: Some(Duration::from_secs(30)),
        }
    }
}

fn failed(e: reqwest::Error) -> Error {
    Error::Local(format!("http client: {e}"))
}

/// The async client (cloudhostd): each call sets its own timeout.
pub fn async_http() -> Result<reqwest::Client, Error> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .pool_idle_timeout(POOL_IDLE)
        .build()
        .map_err(failed)
}

/// A blocking client (cm, the tests, cmbench).
#[cfg(feature = "blocking")]
pub fn blocking_http(t: Timeouts) -> Result<reqwest::blocking::Client, Error> {
    let mut b = reqwest::blocking::Client::builder()
        .timeout(t.total)
        .pool_idle_timeout(POOL_IDLE);
    if let Some(c) = t.connect {
        b = b.connect_timeout(c);
    }
    if let Some(k) = t.keepalive {
        b = b.tcp_keepalive(k);
    }
    b.build().map_err(failed)
}
