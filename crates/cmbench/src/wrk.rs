//! `wrk` as the load generator of `cmbench api --wrk`: a C client that does
//! not parse the answers, so that the figures are the server's and not the
//! client's (the typed client tops out near 30k req/s on this machine).
//! Credentials go in a Lua script readable only by us, never on wrk's
//! command line (`ps` shows it to every user).

use crate::api::Figures;
use anyhow::{bail, Context};
use base64::Engine;
use cm_client::{Auth, Request};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::process::Command;

/// Is `wrk` on the PATH?
pub fn available() -> bool {
    Command::new("wrk")
        .arg("--version")
        .output()
        .map(|o| !o.stdout.is_empty() || !o.stderr.is_empty())
        .unwrap_or(false)
}

/// Load `req` on `base` with `connections` connections for `secs`.
/// `gzip`: ask for a compressed answer (`Accept-Encoding: gzip`).
pub fn load(
    base: &str,
    token: &str,
    req: &Request,
    connections: usize,
    secs: u64,
    gzip: bool,
) -> anyhow::Result<Figures> {
    let dir = tempfile::tempdir()?;
    let script = dir.path().join("auth.lua");
    let auth = match &req.auth {
        Auth::Bearer => format!("Bearer {token}"),
        Auth::Basic { user, secret } => format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{secret}"))
        ),
        Auth::None => String::new(),
    };
    let mut lua = String::new();
    if !auth.is_empty() {
        lua.push_str(&format!("wrk.headers[\"Authorization\"] = {auth:?}\n"));
    }
    if gzip {
        lua.push_str("wrk.headers[\"Accept-Encoding\"] = \"gzip\"\n");
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&script)?
        .write_all(lua.as_bytes())?;
    let out = Command::new("wrk")
        .args(["-t2", "--latency", "--timeout", "30s"])
        .arg(format!("-c{connections}"))
        .arg(format!("-d{secs}s"))
        .arg("-s")
        .arg(&script)
        .arg(format!("{}{}", base.trim_end_matches('/'), req.path))
        .output()
        .context("running wrk")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "wrk failed: {}{}",
            text,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    parse(&text)
}

/// Read wrk's report: requests/s, the latency distribution, the total read,
/// failures (socket errors and answers other than 2xx/3xx).
pub fn parse(text: &str) -> anyhow::Result<Figures> {
    let mut f = Figures::default();
    let mut requests = 0u64;
    let mut read = 0f64;
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", r] => f.rate = r.parse()?,
            ["50%", t] => f.p50_ms = millis(t)?,
            ["99%", t] => f.p99_ms = millis(t)?,
            [n, "requests", "in", _, b, "read"] => {
                requests = n.parse()?;
                read = size(b)?;
            }
            ["Non-2xx", "or", "3xx", "responses:", n] => f.failed += n.parse::<u64>()?,
            ["Socket", "errors:", rest @ ..] => {
                for w in rest.iter().skip(1).step_by(2) {
                    f.failed += w.trim_end_matches(',').parse::<u64>().unwrap_or(0);
                }
            }
            _ => {}
        }
    }
    if requests == 0 {
        bail!("wrk made no request:\n{text}");
    }
    // An average over every answer (wrk does not say one answer's size).
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    {
        f.bytes = (read / requests as f64) as u64;
    }
    Ok(f)
}

/// wrk's "1.23ms", "456.78us", "1.02s" in milliseconds.
fn millis(t: &str) -> anyhow::Result<f64> {
    let (n, scale) = if let Some(n) = t.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = t.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60_000.0)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1000.0)
    } else {
        bail!("not a wrk duration: {t}")
    };
    Ok(n.parse::<f64>()? * scale)
}

/// wrk's "447.12MB," in bytes.
fn size(t: &str) -> anyhow::Result<f64> {
    let t = t.trim_end_matches(',');
    let units = [
        ("GB", 1u64 << 30),
        ("MB", 1 << 20),
        ("KB", 1 << 10),
        ("B", 1),
    ];
    for (u, m) in units {
        if let Some(n) = t.strip_suffix(u) {
            return Ok(n.parse::<f64>()? * m as f64);
        }
    }
    bail!("not a wrk size: {t}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrk_report_is_read() {
        let text = "Running 6s test @ http://127.0.0.1:1/v1/info
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.10ms  805.06us  22.53ms   88.08%
    Req/Sec    31.02k     2.50k   35.95k    71.67%
  Latency Distribution
     50%  850.00us
     75%    1.26ms
     90%    1.99ms
     99%    4.16ms
  370341 requests in 6.00s, 83.88MB read
  Non-2xx or 3xx responses: 3
Requests/sec:  61712.11
Transfer/sec:     13.98MB
";
        let f = parse(text).unwrap();
        assert!((f.rate - 61712.11).abs() < 0.01);
        assert!((f.p50_ms - 0.85).abs() < 1e-9);
        assert!((f.p99_ms - 4.16).abs() < 1e-9);
        assert_eq!(f.failed, 3);
        // 83.88 MiB over 370,341 answers.
        assert_eq!(f.bytes, 237);
    }
}
