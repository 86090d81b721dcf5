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
    free_port_on("127.0.0.1")
}

/// A TCP port on `ip` that was free a moment ago. Every test's ssh fleet
/// uses the same node addresses, so a port free on 127.0.0.1 may be taken
/// on a node's address by a test running beside this one: ask that address.
pub fn free_port_on(ip: &str) -> u16 {
    TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// A TCP port free a moment ago on every one of `ips` (the fleets of tests
/// running at once share node addresses, each on its own port).
pub fn free_port_on_all(ips: &[String]) -> u16 {
    for _ in 0..100 {
        let Some(first) = ips.first() else { return 0 };
        let port = free_port_on(first);
        if port != 0
            && ips
                .iter()
                .all(|ip| TcpListener::bind((ip.as_str(), port)).is_ok())
        {
            return port;
        }
    }
    0
}
