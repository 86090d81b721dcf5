//! A real HAProxy seen from outside, as the tests of deployables' pools
//! judge it: its own `show servers state` of a backend, a wait until the
//! members are exactly the expected ones and ready, and a bounded load
//! loop of HTTP requests through its front.

use crate::haproxy::{get, Haproxy};
use crate::wait::wait_until;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One server as HAProxy holds it: `ip:port`, operational state (2 =
/// running), admin state (0 = neither drain nor maintenance).
pub type ServerState = (String, u32, u32);

/// `show servers state BACKEND`: server name → its state.
pub fn servers(h: &Haproxy, backend: &str) -> BTreeMap<String, ServerState> {
    let text = h
        .api(&format!("show servers state {backend}"))
        .unwrap_or_else(|e| panic!("show servers state {backend}: {e}"));
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    assert_eq!(lines.next().map(str::trim), Some("1"), "{text}");
    let header: Vec<&str> = lines
        .next()
        .unwrap_or_else(|| panic!("no header: {text}"))
        .trim_start_matches("# ")
        .split(' ')
        .collect();
    let col = |n: &str| {
        header
            .iter()
            .position(|c| *c == n)
            .unwrap_or_else(|| panic!("no column {n}: {text}"))
    };
    let (name, addr, port, op, admin) = (
        col("srv_name"),
        col("srv_addr"),
        col("srv_port"),
        col("srv_op_state"),
        col("srv_admin_state"),
    );
    lines
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let num = |i: usize| -> u32 {
                f.get(i)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| panic!("column {i} of {l}"))
            };
            (
                f[name].to_string(),
                (format!("{}:{}", f[addr], f[port]), num(op), num(admin)),
            )
        })
        .collect()
}

/// The servers of `backend` once they are exactly `names`, each running
/// and ready; fails the test after `limit`.
pub fn wait_members(
    h: &Haproxy,
    backend: &str,
    names: &[String],
    what: &str,
    limit: Duration,
) -> BTreeMap<String, ServerState> {
    let mut want: Vec<String> = names.to_vec();
    want.sort();
    wait_until(what, limit, || {
        let s = servers(h, backend);
        let have: Vec<String> = s.keys().cloned().collect();
        (have == want && s.values().all(|(_, op, admin)| *op == 2 && *admin == 0)).then_some(s)
    })
    .unwrap_or_else(|e| panic!("{e}: {:?}", servers(h, backend)))
}

/// What a load loop saw: requests answered 200, the failures (when, since
/// the loop began and as unix time, and why), the distinct bodies.
pub type Tally = (u32, Vec<String>, BTreeSet<String>);

/// GET `path` at `front` (`ip:port`) again and again, `pause` apart, until
/// `stop` (bounded: at most 6000 requests and 240 s).
pub fn load(
    front: &str,
    path: &'static str,
    pause: Duration,
    stop: &Arc<AtomicBool>,
) -> std::thread::JoinHandle<Tally> {
    let (stop, front) = (stop.clone(), front.to_string());
    std::thread::spawn(move || {
        let (mut ok, mut failed) = (0u32, Vec::new());
        let mut answers = BTreeSet::new();
        let t0 = Instant::now();
        while !stop.load(Ordering::Relaxed)
            && ok as usize + failed.len() < 6000
            && t0.elapsed() < Duration::from_secs(240)
        {
            match get(&front, path) {
                Ok(body) => {
                    ok += 1;
                    answers.insert(body.trim().to_string());
                }
                Err(e) => {
                    let wall = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_secs_f64())
                        .unwrap_or(0.0);
                    failed.push(format!(
                        "{:.2}s (unix {wall:.3}) {path}: {e}",
                        t0.elapsed().as_secs_f64()
                    ))
                }
            }
            std::thread::sleep(pause);
        }
        (ok, failed, answers)
    })
}
