//! Waiting with generous bounds, and free loopback ports.

use std::net::TcpListener;
use std::time::{Duration, Instant};

/// Poll `check` every 100 ms until it returns `Some`, or fail after `timeout`
/// with `what` in the message.
pub fn wait_until<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> anyhow::Result<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return Ok(v);
        }
        if start.elapsed() > timeout {
            anyhow::bail!("timed out after {:?} waiting for {what}", timeout);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}
