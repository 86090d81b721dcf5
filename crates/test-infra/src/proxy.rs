//! A tiny TCP proxy on loopback in front of a server, to break transfers
//! the way a network does: it can slow the bytes down (each way), and cut a
//! connection (both ways, at once) once it has carried a number of bytes
//! towards the server.

use crate::wait::free_port;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Default)]
pub struct ProxyOpts {
    /// Cut the first connection that carries more than this many bytes
    /// towards the server (once; later connections pass).
    pub cut_after: Option<u64>,
    /// Carry at most this many bytes a second, each way: towards the server
    /// (an upload to the master) and back (a download the master makes).
    pub rate: Option<u64>,
}

#[derive(Debug)]
pub struct Proxy {
    pub port: u16,
    /// Connections cut so far.
    pub cuts: Arc<AtomicUsize>,
    /// Bytes carried towards the server, all connections together.
    pub carried: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    /// Forward 127.0.0.1:PORT to `target` (a loopback `host:port`).
    pub fn start(target: &str, opts: ProxyOpts) -> anyhow::Result<Proxy> {
        let port = free_port();
        let listener = TcpListener::bind(("127.0.0.1", port))?;
        listener.set_nonblocking(true)?;
        let p = Proxy {
            port,
            cuts: Arc::default(),
            carried: Arc::default(),
            stop: Arc::default(),
        };
        let (cuts, carried, stop) = (p.cuts.clone(), p.carried.clone(), p.stop.clone());
        let target = target.to_string();
        let armed = Arc::new(AtomicBool::new(opts.cut_after.is_some()));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let client = match listener.accept() {
                    Ok((c, _)) => c,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    }
                };
                let Ok(server) = TcpStream::connect(&target) else {
                    continue;
                };
                let _ = client.set_nonblocking(false);
                let (c2, s2) = match (client.try_clone(), server.try_clone()) {
                    (Ok(c), Ok(s)) => (c, s),
                    _ => continue,
                };
                // Server -> client: slowed the same, never cut.
                let back_rate = opts.rate;
                std::thread::spawn(move || pump(s2, c2, None, back_rate, None));
                let cut = armed
                    .swap(false, Ordering::SeqCst)
                    .then_some(opts.cut_after)
                    .flatten();
                let (cuts, carried) = (cuts.clone(), carried.clone());
                let rate = opts.rate;
                std::thread::spawn(move || {
                    if pump(client, server, cut, rate, Some(&carried)) {
                        cuts.fetch_add(1, Ordering::SeqCst);
                    }
                });
            }
        });
        Ok(p)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Copy `from` to `to`; returns true when it cut the connection.
fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    cut_after: Option<u64>,
    rate: Option<u64>,
    carried: Option<&AtomicU64>,
) -> bool {
    let mut buf = vec![0u8; 16 * 1024];
    let mut sent = 0u64;
    let start = Instant::now();
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let n = match cut_after {
            Some(limit) if sent + n as u64 > limit => {
                let keep = usize::try_from(limit - sent).unwrap_or(usize::MAX).min(n);
                let _ = to.write_all(&buf[..keep]);
                let _ = from.shutdown(Shutdown::Both);
                let _ = to.shutdown(Shutdown::Both);
                return true;
            }
            _ => n,
        };
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        sent += n as u64;
        if let Some(c) = carried {
            c.fetch_add(n as u64, Ordering::Relaxed);
        }
        if let Some(r) = rate {
            let due = Duration::from_secs_f64(sent as f64 / r.max(1) as f64);
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                std::thread::sleep(wait);
            }
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
    false
}
