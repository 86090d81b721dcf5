//! Config-fetch benchmark (issue 3): how many `GET /boot/v1/configs/{uuid}`
//! the master serves per second, each with its salted-hash secret check and
//! a read of the body from the store, beside `GET /v1/info` (a bearer token
//! checked in memory, no store) in the same run.

use cm_client::{api, blocking};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use test_infra::Cloud;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Seconds per measurement.
    #[arg(long, default_value_t = 5)]
    pub secs: u64,
    /// Concurrent clients.
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// Records to spread the fetches over.
    #[arg(long, default_value_t = 200)]
    pub records: usize,
}

impl Default for Args {
    fn default() -> Self {
        Args {
            secs: 5,
            clients: 16,
            records: 200,
        }
    }
}

enum Target {
    /// `GET /v1/info` with the admin token.
    Info,
    /// `GET /boot/v1/configs/{uuid}` with the record's secret.
    Fetch { uuid: String, secret: String },
}

/// Hammer `targets` (round robin) from `clients` threads for `secs`; requests per second.
fn load(
    cloud: &Cloud,
    targets: Arc<Vec<Target>>,
    clients: usize,
    secs: u64,
) -> anyhow::Result<(f64, u64)> {
    let ok = Arc::new(AtomicU64::new(0));
    let bad = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs(secs);
    let mut handles = Vec::new();
    for c in 0..clients {
        let (targets, ok, bad) = (targets.clone(), ok.clone(), bad.clone());
        let client = blocking::Client::builder(&cloud.url, &cloud.token)
            .timeout(Duration::from_secs(10))
            .build()?;
        handles.push(std::thread::spawn(move || {
            let mut i = c;
            // Bounded in time, and in count by the time.
            while Instant::now() < until {
                let t = &targets[i % targets.len()];
                i += 1;
                let answered = match t {
                    Target::Info => client.call(api::info()).is_ok(),
                    Target::Fetch { uuid, secret } => {
                        client.call(api::boot::fetch(uuid, secret)).is_ok()
                    }
                };
                let counter = if answered { &ok } else { &bad };
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for h in handles {
        let _ = h.join();
    }
    let n = ok.load(Ordering::Relaxed);
    Ok((n as f64 / secs as f64, bad.load(Ordering::Relaxed)))
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let (secs, clients, records) = (
        args.secs.clamp(1, 120),
        args.clients.clamp(1, 256),
        args.records.clamp(1, 100_000),
    );
    let cloud = Cloud::start()?;
    let body = "[[file]]\npath = \"/etc/motd\"\ncontent = \"hello\"\n".repeat(8);
    let mut fetches = Vec::new();
    for _ in 0..records {
        let r = cloud.cm_json(&["config", "pre-register", "--text", &body]);
        let (u, s) = (
            r["record"]["uuid"].as_str().unwrap_or_default().to_string(),
            r["secret"].as_str().unwrap_or_default().to_string(),
        );
        fetches.push(Target::Fetch { uuid: u, secret: s });
    }
    let info = vec![Target::Info];
    let (info, fetches) = (Arc::new(info), Arc::new(fetches));
    // Warm up both paths, then measure each twice, interleaved.
    load(&cloud, info.clone(), clients, 1)?;
    load(&cloud, fetches.clone(), clients, 1)?;
    let (mut base, mut cfg, mut errors) = (0.0, 0.0, 0);
    for _ in 0..2 {
        let (b, e1) = load(&cloud, info.clone(), clients, secs)?;
        let (c, e2) = load(&cloud, fetches.clone(), clients, secs)?;
        base += b / 2.0;
        cfg += c / 2.0;
        errors += e1 + e2;
    }
    println!(
        "config fetch benchmark: {clients} clients, {}s each, {records} records of {} bytes, loopback, this machine",
        secs * 2,
        body.len()
    );
    println!("{:<58} {:>10}", "", "req/s");
    println!(
        "{:<58} {:>10.0}",
        "GET /v1/info (bearer token, no store): baseline", base
    );
    println!(
        "{:<58} {:>10.0}",
        "GET /boot/v1/configs/{uuid} (salted secret check + store)", cfg
    );
    println!(
        "ratio config fetch / baseline: {:.2}   (failed requests: {errors})",
        cfg / base.max(1.0)
    );
    Ok(())
}
