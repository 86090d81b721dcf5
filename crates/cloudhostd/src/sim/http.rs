//! What a simulated guest serves on its forwarded ports: every request on
//! a running (not frozen) VM's forwarded host port is answered `200` with
//! the instance's id, so a balancer in front of simulated hosts (a
//! deployable's pool, docs/testing.md) sees members come and go. The port
//! is closed when the VM stops, crashes, freezes or is deleted, and its
//! open connections are dropped with it.
//!
//! `GET /sleep/MS` answers after MS milliseconds (at most
//! [`SLEEP_MAX`]): a request still under way when a member is drained.
//!
//! Bounded: a request head is read up to [`HEAD_MAX`] bytes within
//! [`READ_TIMEOUT`], at most [`CONNS_MAX`] connections a port at once,
//! and the answer is a few dozen bytes.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{AbortHandle, JoinSet};
use uuid::Uuid;

/// The most of a request read.
pub const HEAD_MAX: usize = 4096;
/// How long a client may take to send its request.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest `GET /sleep/MS` waits.
pub const SLEEP_MAX: Duration = Duration::from_secs(10);
/// Connections served at once on one port.
pub const CONNS_MAX: usize = 64;

/// The ports a simulated host serves, one task each.
pub struct Ports {
    /// Where they listen: the host's `forward_addr`.
    addr: String,
    serving: Mutex<HashMap<(Uuid, u16), AbortHandle>>,
}

impl Ports {
    pub fn new(addr: &str) -> Ports {
        Ports {
            addr: addr.to_string(),
            serving: Mutex::new(HashMap::new()),
        }
    }

    /// Serve exactly `want` (VM id, host port): stop the others, start the
    /// missing ones (a port still taken is tried again at the next call).
    /// Must run inside the tokio runtime.
    pub fn sync(&self, want: &[(Uuid, u16)]) {
        let mut serving = self.serving.lock().unwrap_or_else(|p| p.into_inner());
        serving.retain(|k, h| {
            let keep = want.contains(k) && !h.is_finished();
            if !keep {
                h.abort();
            }
            keep
        });
        for (id, port) in want {
            if serving.contains_key(&(*id, *port)) {
                continue;
            }
            let std = match std::net::TcpListener::bind((self.addr.as_str(), *port)) {
                Ok(l) => l,
                Err(e) => {
                    tracing::debug!("sim: {} port {port}: {e}", self.addr);
                    continue;
                }
            };
            let listener = match std
                .set_nonblocking(true)
                .and_then(|_| TcpListener::from_std(std))
            {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!("sim: {} port {port}: {e}", self.addr);
                    continue;
                }
            };
            let task = tokio::spawn(serve(listener, *id));
            serving.insert((*id, *port), task.abort_handle());
        }
    }

    /// The ports served now.
    #[cfg(test)]
    pub fn serving(&self) -> Vec<(Uuid, u16)> {
        let s = self.serving.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<_> = s.keys().copied().collect();
        v.sort();
        v
    }
}

impl Drop for Ports {
    fn drop(&mut self) {
        let serving = self.serving.get_mut().unwrap_or_else(|p| p.into_inner());
        for h in serving.values() {
            h.abort();
        }
    }
}

/// Accept and answer until aborted; dropping this drops every connection.
async fn serve(listener: TcpListener, id: Uuid) {
    let mut conns = JoinSet::new();
    loop {
        let accepted = listener.accept().await;
        while conns.try_join_next().is_some() {}
        match accepted {
            Ok((s, _)) if conns.len() < CONNS_MAX => {
                conns.spawn(answer(s, id));
            }
            Ok(_) => {}
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// `GET /sleep/MS`: answer after MS milliseconds (at most
/// [`SLEEP_MAX`]), a long request for drain tests.
fn delay(head: &[u8]) -> Option<Duration> {
    let line = head.split(|b| *b == b'\n').next()?;
    let path = std::str::from_utf8(line).ok()?.split(' ').nth(1)?;
    let ms: u64 = path.strip_prefix("/sleep/")?.parse().ok()?;
    Some(Duration::from_millis(ms).min(SLEEP_MAX))
}

async fn answer(mut s: TcpStream, id: Uuid) {
    let mut buf = vec![0u8; HEAD_MAX];
    let mut n = 0;
    let head = async {
        while n < buf.len() {
            let k = s.read(&mut buf[n..]).await?;
            if k == 0 {
                break;
            }
            n += k;
            if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
        Ok::<_, std::io::Error>(n)
    };
    let read = match tokio::time::timeout(READ_TIMEOUT, head).await {
        Ok(Ok(read)) if read > 0 => read,
        _ => return,
    };
    if let Some(d) = delay(&buf[..read]) {
        tokio::time::sleep(d).await;
    }
    let body = format!("{id}\n");
    let resp = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = s.write_all(resp.as_bytes()).await;
    let _ = s.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn get(port: u16) -> std::io::Result<String> {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_port_answers_with_the_instance_id_while_served_only() {
        let ports = Ports::new("127.0.0.1");
        let (id, port) = (Uuid::new_v4(), free_port());
        ports.sync(&[(id, port)]);
        assert_eq!(ports.serving(), vec![(id, port)]);
        let out = tokio::task::spawn_blocking(move || get(port))
            .await
            .unwrap()
            .unwrap();
        assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
        assert!(out.ends_with(&format!("\r\n\r\n{id}\n")), "{out}");
        // Stopped: the port is closed.
        ports.sync(&[]);
        assert!(ports.serving().is_empty());
        let gone = tokio::task::spawn_blocking(move || {
            let t0 = std::time::Instant::now();
            loop {
                match get(port) {
                    Err(_) => return true,
                    Ok(_) if t0.elapsed() > Duration::from_secs(5) => return false,
                    Ok(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        })
        .await
        .unwrap();
        assert!(gone, "port {port} still answers");
    }

    #[test]
    fn a_sleep_path_delays_the_answer_within_bounds() {
        assert_eq!(
            delay(b"GET /sleep/250 HTTP/1.1\r\nHost: x\r\n\r\n"),
            Some(Duration::from_millis(250))
        );
        assert_eq!(delay(b"GET /sleep/99999999 HTTP/1.1\r\n"), Some(SLEEP_MAX));
        assert_eq!(delay(b"GET / HTTP/1.1\r\n"), None);
        assert_eq!(delay(b"GET /sleep/x HTTP/1.1\r\n"), None);
        assert_eq!(delay(b"\xff\xfe"), None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_request_head_is_read_bounded() {
        let ports = Ports::new("127.0.0.1");
        let (id, port) = (Uuid::new_v4(), free_port());
        ports.sync(&[(id, port)]);
        let out = tokio::task::spawn_blocking(move || {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            // A head without its end: answered once HEAD_MAX bytes are read.
            let _ = s.write_all(&vec![b'a'; HEAD_MAX]);
            let mut out = Vec::new();
            let _ = s.read_to_end(&mut out);
            String::from_utf8_lossy(&out).to_string()
        })
        .await
        .unwrap();
        assert!(out.starts_with("HTTP/1.1 200 OK"), "{out}");
    }
}
