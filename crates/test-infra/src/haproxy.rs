//! A real HAProxy on loopback with an admin runtime socket and a
//! server-state file, and tiny HTTP backends that record when each request
//! reached them (issue 4: balancer membership, no request lost).

use crate::wait::{free_port, wait_until};
use anyhow::{bail, Context, Result};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct Haproxy {
    pub port: u16,
    pub socket: PathBuf,
    pub state_file: PathBuf,
    config: PathBuf,
    pid_file: PathBuf,
    /// The running master's pid, kept here: the pid file may be removed
    /// with its directory before this is dropped.
    pid: Mutex<Option<i32>>,
}

impl Haproxy {
    /// Start HAProxy (daemon, pid file in `dir`) with one frontend on a
    /// free port and backend `backend` holding `servers` (name, "ip:port"),
    /// health-checked every 100 ms on `/health`.
    pub fn start(dir: &Path, backend: &str, servers: &[(String, String)]) -> Result<Haproxy> {
        let port = free_port();
        let socket = dir.join("admin.sock");
        let state_file = dir.join("server-state");
        let config = dir.join("haproxy.cfg");
        let pid_file = dir.join("haproxy.pid");
        let mut cfg = format!(
            "global\n  stats socket {sock} mode 600 level admin\n  server-state-file {state}\n\n\
             defaults\n  mode http\n  timeout connect 2s\n  timeout client 30s\n  timeout server 30s\n\
             \x20 retries 3\n  option redispatch\n  load-server-state-from-file global\n\n\
             frontend fe\n  bind 127.0.0.1:{port}\n  default_backend {backend}\n\n\
             backend {backend}\n  balance roundrobin\n  option httpchk GET /health\n\
             \x20 default-server check inter 100ms fastinter 100ms rise 1 fall 2\n",
            sock = socket.display(),
            state = state_file.display()
        );
        for (name, addr) in servers {
            cfg.push_str(&format!("  server {name} {addr}\n"));
        }
        std::fs::write(&config, cfg)?;
        let h = Haproxy {
            port,
            socket,
            state_file,
            config,
            pid_file,
            pid: Mutex::new(None),
        };
        h.launch(None)?;
        Ok(h)
    }

    /// Start HAProxy whose backend `backend` has no server yet: pool
    /// members come and go through the runtime API (`add server`), health-
    /// checked on `/health` with the options each is added with.
    pub fn start_empty(dir: &Path, backend: &str) -> Result<Haproxy> {
        Haproxy::start(dir, backend, &[])
    }

    /// [`Haproxy::start_empty`] whose backend also re-sends a request that
    /// got no answer at all to another server (`retry-on conn-failure
    /// empty-response`, with the `retries 3` and `option redispatch` every
    /// backend here has): the setting operators give a pool of real guests,
    /// where a guest starved of CPU can drop a connection its QEMU already
    /// accepted. What it retried is in [`Haproxy::retries`].
    pub fn start_empty_retrying(dir: &Path, backend: &str) -> Result<Haproxy> {
        let h = Haproxy::start(dir, backend, &[])?;
        let cfg = std::fs::read_to_string(&h.config)? + "  retry-on conn-failure empty-response\n";
        std::fs::write(&h.config, cfg)?;
        h.reload()?;
        Ok(h)
    }

    /// A backend's `wretr` and `wredis` of `show stat`: requests HAProxy
    /// re-sent, and re-sent to another server.
    pub fn retries(&self, backend: &str) -> Result<(u64, u64)> {
        let num =
            |c: &str| -> Result<u64> { Ok(self.stat(backend, "BACKEND", c)?.parse().unwrap_or(0)) };
        Ok((num("wretr")?, num("wredis")?))
    }

    fn pid(&self) -> Option<i32> {
        *self.pid.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn read_pid_file(&self) -> Option<i32> {
        std::fs::read_to_string(&self.pid_file)
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    fn launch(&self, replace: Option<i32>) -> Result<()> {
        let mut cmd = Command::new("haproxy");
        cmd.arg("-D")
            .arg("-f")
            .arg(&self.config)
            .arg("-p")
            .arg(&self.pid_file);
        if let Some(old) = replace {
            cmd.arg("-sf").arg(old.to_string());
        }
        let out = cmd.output().context("running haproxy")?;
        if !out.status.success() {
            bail!("haproxy failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        *self.pid.lock().unwrap_or_else(|p| p.into_inner()) = self.read_pid_file();
        let addr = format!("127.0.0.1:{}", self.port);
        wait_until("haproxy's socket", Duration::from_secs(10), || {
            (TcpStream::connect(&addr).is_ok()
                && std::os::unix::net::UnixStream::connect(&self.socket).is_ok())
            .then_some(())
        })
    }

    /// Reload as an operator does: a new process takes over (`-sf`) and
    /// loads the server-state file.
    pub fn reload(&self) -> Result<()> {
        let old = self.pid().context("no haproxy pid")?;
        self.launch(Some(old))?;
        wait_until("the old haproxy to leave", Duration::from_secs(10), || {
            // SAFETY: kill with signal 0 only checks that the pid exists.
            (unsafe { libc::kill(old, 0) } != 0).then_some(())
        })?;
        Ok(())
    }

    /// One runtime API request.
    pub fn api(&self, request: &str) -> Result<String> {
        let mut s = std::os::unix::net::UnixStream::connect(&self.socket)?;
        s.write_all(format!("{request}\n").as_bytes())?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    }

    /// The `show stat` status of one server (UP, MAINT, DRAIN, DOWN...).
    pub fn status(&self, backend: &str, server: &str) -> Result<String> {
        self.stat(backend, server, "status")
    }

    /// One column of one line of `show stat` (`server` is `BACKEND` for
    /// the backend's own line).
    fn stat(&self, backend: &str, server: &str, column: &str) -> Result<String> {
        let csv = self.api("show stat")?;
        let header: Vec<&str> = csv
            .lines()
            .next()
            .unwrap_or("")
            .trim_start_matches("# ")
            .split(',')
            .collect();
        let col = header
            .iter()
            .position(|c| *c == column)
            .with_context(|| format!("no {column} column"))?;
        for l in csv.lines().skip(1) {
            let f: Vec<&str> = l.split(',').collect();
            if f.first() == Some(&backend) && f.get(1) == Some(&server) {
                return Ok(f.get(col).unwrap_or(&"").to_string());
            }
        }
        bail!("no server {backend}/{server}")
    }

    /// The master's flags that make this HAProxy its balancer `name`
    /// (`cloudmasterd --balancer NAME=unix:SOCKET`), for
    /// `MasterOpts.extra`: a deployable's pool then names `name`.
    pub fn master_args(&self, name: &str) -> Vec<String> {
        vec![
            "--balancer".into(),
            format!("{name}=unix:{}", self.socket.display()),
        ]
    }

    /// The running HAProxy's pid (to stop and continue it).
    pub fn running_pid(&self) -> Option<i32> {
        self.pid()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        if let Some(pid) = self.pid() {
            // SAFETY: signalling the daemon this harness started.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
}

/// A minimal HTTP/1.1 server that answers every request with its name and
/// records when each non-health request arrived.
#[derive(Debug)]
pub struct Backend {
    pub name: String,
    pub addr: String,
    pub hits: Arc<Mutex<Vec<Instant>>>,
    stop: Arc<AtomicBool>,
}

impl Backend {
    /// Serve on `addr`; port 0 takes one the kernel knows is free there
    /// (the backend's `addr` then says which).
    pub fn start(name: &str, addr: &str) -> Result<Backend> {
        let listener = TcpListener::bind(addr).with_context(|| format!("binding {addr}"))?;
        let addr = &listener.local_addr()?.to_string();
        listener.set_nonblocking(true)?;
        let hits = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (h, s, n) = (hits.clone(), stop.clone(), name.to_string());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let (h, n) = (h.clone(), n.clone());
                        std::thread::spawn(move || serve(conn, &n, &h));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Ok(Backend {
            name: name.into(),
            addr: addr.into(),
            hits,
            stop,
        })
    }

    pub fn hits(&self) -> Vec<Instant> {
        self.hits.lock().map(|h| h.clone()).unwrap_or_default()
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve(conn: TcpStream, name: &str, hits: &Mutex<Vec<Instant>>) {
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(Duration::from_secs(60)));
    let Ok(mut w) = conn.try_clone() else { return };
    let mut r = BufReader::new(conn);
    loop {
        let mut request = String::new();
        if r.read_line(&mut request).unwrap_or(0) == 0 {
            return;
        }
        let mut close = false;
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            if h.to_ascii_lowercase().starts_with("connection: close") {
                close = true;
            }
            if h == "\r\n" || h == "\n" {
                break;
            }
        }
        if !request.contains(" /health ") {
            if let Ok(mut v) = hits.lock() {
                v.push(Instant::now());
            }
        }
        let body = format!("{name}\n");
        let resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n\r\n{body}",
            body.len()
        );
        if w.write_all(resp.as_bytes()).is_err() || close {
            return;
        }
    }
}

/// One GET through a fresh connection; the body on a 200, else an error.
pub fn get(url_host_port: &str, path: &str) -> Result<String> {
    let mut s = TcpStream::connect(url_host_port)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    if !out.starts_with("HTTP/1.1 200") {
        bail!("answer: {}", out.lines().next().unwrap_or(""));
    }
    Ok(out.split("\r\n\r\n").nth(1).unwrap_or("").to_string())
}
