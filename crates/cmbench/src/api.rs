//! Read-path benchmark (issue 10 point 8): `GET /v1/instances` with 0, 1,000
//! and 20,000 instances in the store, `GET /v1/hosts` and config fetches
//! (`GET /boot/v1/configs/{uuid}`, Basic auth and the salted secret check),
//! each beside `GET /v1/info` (a bearer token checked in memory, no store)
//! measured in the same run, as a ratio. Figures, never a pass/fail.
//!
//! The instances are written straight into the stopped master's store (one
//! host, one image, N instance rows) so that 20,000 of them take seconds,
//! not 20,000 VMs. Run it on a release build:
//! `cargo build --release -p cloudmasterd && CM_BIN_DIR=target/release cmbench api`.

use anyhow::Context;
use cm_api::boot::PreRegister;
use cm_client::{api, Endpoint};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use test_infra::{Cloud, MasterOpts};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Seconds per measurement.
    #[arg(long, default_value_t = 5)]
    pub secs: u64,
    /// Concurrent connections.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Store sizes to measure `GET /v1/instances` at (comma separated).
    #[arg(long, value_delimiter = ',', default_values_t = vec![0, 1000, 20000])]
    pub instances: Vec<usize>,
    /// Config records to spread the fetches over.
    #[arg(long, default_value_t = 200)]
    pub records: usize,
    /// Load with `wrk` (apt-get install wrk) instead of the typed client,
    /// whose own ceiling is near 30k req/s here; config fetches then hit
    /// one record.
    #[arg(long)]
    pub wrk: bool,
}

impl Default for Args {
    fn default() -> Self {
        Args {
            secs: 5,
            connections: 64,
            instances: vec![0, 1000, 20000],
            records: 200,
            wrk: false,
        }
    }
}

/// How long one request may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// One route to load: the typed client's request, its answer read as bytes
/// (the load generator measures the server, not its own JSON decoding).
type Target = Endpoint<Vec<u8>>;

fn target<T>(e: Endpoint<T>) -> Target {
    let mut request = e.request;
    request.timeout = Some(CALL_TIMEOUT);
    Endpoint::bytes(request)
}

#[derive(Debug, Default)]
pub struct Figures {
    pub rate: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// One answer's size (as sent: compressed when asked so).
    pub bytes: u64,
    pub failed: u64,
}

/// Measure `targets` with the chosen load generator.
fn measure(cloud: &Cloud, targets: &[Target], args: &Args, gzip: bool) -> anyhow::Result<Figures> {
    let (secs, conns) = (args.secs.clamp(1, 120), args.connections.clamp(1, 1024));
    match targets.first() {
        Some(t) if args.wrk => {
            crate::wrk::load(&cloud.url, &cloud.token, &t.request, conns, secs, gzip)
        }
        _ => load(cloud, targets, conns, secs),
    }
}

/// `connections` clients, each one request at a time over its own kept-alive
/// connection, round robin over `targets`, for `secs` (bounded in time).
fn load(
    cloud: &Cloud,
    targets: &[Target],
    connections: usize,
    secs: u64,
) -> anyhow::Result<Figures> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let ok = Arc::new(AtomicU64::new(0));
    let bad = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let lat = Arc::new(Mutex::new(Vec::<u32>::new()));
    let targets = Arc::new(targets.to_vec());
    rt.block_on(async {
        let until = Instant::now() + Duration::from_secs(secs);
        let mut tasks = Vec::new();
        for c in 0..connections {
            let (base, token) = (cloud.url.clone(), cloud.token.clone());
            let (targets, ok, bad, bytes, lat) = (
                targets.clone(),
                ok.clone(),
                bad.clone(),
                bytes.clone(),
                lat.clone(),
            );
            tasks.push(tokio::spawn(async move {
                // Its own client: its own kept-alive connection.
                let Ok(client) = cm_client::Client::new(&base, token) else {
                    return;
                };
                let mut mine = Vec::new();
                let mut i = c;
                while Instant::now() < until {
                    let t = &targets[i % targets.len()];
                    i += 1;
                    let start = Instant::now();
                    match client.call(t.clone()).await {
                        Ok(b) => {
                            ok.fetch_add(1, Ordering::Relaxed);
                            bytes.store(b.len() as u64, Ordering::Relaxed);
                            mine.push(
                                u32::try_from(start.elapsed().as_micros()).unwrap_or(u32::MAX),
                            );
                        }
                        Err(_) => {
                            bad.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                if let Ok(mut l) = lat.lock() {
                    l.extend(mine);
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    });
    let mut l = lat.lock().map(|l| l.clone()).unwrap_or_default();
    l.sort_unstable();
    let pct = |p: f64| -> f64 {
        if l.is_empty() {
            return 0.0;
        }
        // p is 0..=1: the rounded index is in 0..len, a whole non-negative number.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let i = ((l.len() - 1) as f64 * p).round() as usize;
        f64::from(l[i]) / 1000.0
    };
    Ok(Figures {
        rate: ok.load(Ordering::Relaxed) as f64 / secs as f64,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        bytes: bytes.load(Ordering::Relaxed),
        failed: bad.load(Ordering::Relaxed),
    })
}

/// Write `n` more instances into a stopped master's store, on the one host
/// and image `base` writes (`from`: how many it holds already); with none,
/// write that host and image.
fn populate(db: &std::path::Path, from: usize, n: usize) -> anyhow::Result<()> {
    let mut c = rusqlite::Connection::open(db).with_context(|| format!("{}", db.display()))?;
    c.busy_timeout(Duration::from_secs(30))?;
    let tx = c.transaction()?;
    let now = cm_api::time::now_ms();
    let (host, image) = (BENCH_HOST, BENCH_IMAGE);
    if from == 0 && n == 0 {
        base(&tx, now)?;
    }
    {
        let mut ins = tx.prepare(INSERT_INSTANCE)?;
        for i in from..from + n {
            ins.execute(rusqlite::params![
                uuid::Uuid::new_v4().to_string(),
                format!("bench-{i:05}"),
                image,
                host,
                now
            ])?;
        }
    }
    tx.commit()?;
    Ok(())
}

const BENCH_HOST: &str = "00000000-0000-4000-8000-00000000b001";
const BENCH_IMAGE: &str = "00000000-0000-4000-8000-00000000b002";
const INSERT_INSTANCE: &str = "INSERT INTO instances (id, name, image_id, flavor, memory_mib, vcpus,
        disk_gib, host_id, ports, restart_policy, accel, stop_timeout_secs, desired_power, boot_gen,
        obs_state, obs_boot_gen, obs_pid, obs_accel, obs_since, running_since, created_at, updated_at)
     VALUES (?1, ?2, ?3, 'm1.tiny', 256, 1, 1, ?4, '[{\"guest\":80,\"host\":8080}]',
        'on-failure', 'auto', 30, 'running', 1, 'running', 1, 4242, 'tcg', ?5, ?5, ?5, ?5)";

/// The bench's host (that never reports, and stays up) and image.
fn base(tx: &rusqlite::Transaction<'_>, now: i64) -> anyhow::Result<()> {
    let (host, image) = (BENCH_HOST, BENCH_IMAGE);
    let facts = serde_json::to_string(&cm_api::host::HostFacts {
        memory_total_mib: 1 << 40,
        memory_available_mib: 1 << 39,
        vcpus: 64,
        disk_free_mib: 1 << 30,
        accel: cm_api::words::ResolvedAccel::Tcg,
        ..Default::default()
    })?;
    tx.execute(
        "INSERT INTO hosts (id, name, reserved_mib, facts, last_seen, registered_at)
         VALUES (?1, 'bench-host', 0, ?2, ?3, ?3)",
        rusqlite::params![host, facts, now],
    )?;
    tx.execute(
        "INSERT INTO images (id, name, kind, files, cmdline, created_at)
         VALUES (?1, 'bench-image', 'kernel', '[]', NULL, ?2)",
        rusqlite::params![image, now],
    )?;
    Ok(())
}

/// Pre-register `n` records through the API; their fetch targets.
fn records(cloud: &Cloud, n: usize) -> anyhow::Result<Vec<Target>> {
    let client = cloud.api();
    let body = "[[file]]\npath = \"/etc/motd\"\ncontent = \"hello\"\n".repeat(8);
    let mut out = Vec::new();
    for _ in 0..n {
        let r = client.call(api::configs::pre_register(&PreRegister {
            config: Some(body.clone()),
            ..Default::default()
        }))?;
        let uuid = r.record.uuid.to_string();
        out.push(target(api::boot::fetch(&uuid, &r.secret)));
    }
    Ok(out)
}

fn line(what: &str, f: &Figures, base: f64) {
    println!(
        "{:<44} {:>9.0} {:>7.2} {:>8.1} {:>8.1} {:>10} {:>6}",
        what,
        f.rate,
        f.rate / base.max(1.0),
        f.p50_ms,
        f.p99_ms,
        f.bytes,
        f.failed
    );
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let n_records = args.records.clamp(1, 10_000);
    if args.wrk && !crate::wrk::available() {
        anyhow::bail!("--wrk: no wrk on the PATH (apt-get install wrk)");
    }
    let mut sizes = args.instances.clone();
    sizes.sort_unstable();
    sizes.dedup();
    // A host that stays up for the whole run (it never reports).
    let mut cloud = Cloud::start_with(MasterOpts {
        host_down_after_secs: 86_400,
        ..MasterOpts::default()
    })?;
    let fetches = records(&cloud, n_records)?;
    cloud.stop_master(libc::SIGTERM);
    populate(&cloud.master_dir().join("cloud.db"), 0, 0)?;
    cloud.start_master()?;
    println!(
        "read-path benchmark: {} connections, {}s each, loopback, {}, this machine ({})",
        args.connections.clamp(1, 1024),
        args.secs.clamp(1, 120),
        if args.wrk { "wrk" } else { "typed client" },
        test_infra::paths::bin("cloudmasterd").display()
    );
    println!(
        "{:<44} {:>9} {:>7} {:>8} {:>8} {:>10} {:>6}",
        "", "req/s", "x info", "p50 ms", "p99 ms", "bytes", "failed"
    );
    let mut in_store = 0;
    for (k, &n) in sizes.iter().enumerate() {
        if n > in_store {
            cloud.stop_master(libc::SIGTERM);
            populate(&cloud.master_dir().join("cloud.db"), in_store, n - in_store)?;
            cloud.start_master()?;
            in_store = n;
        }
        let info = [target(api::info())];
        load(&cloud, &info, 8, 1)?;
        let base = measure(&cloud, &info, args, false)?;
        if k == 0 {
            line("GET /v1/info (baseline)", &base, base.rate);
            let hosts = measure(&cloud, &[target(api::hosts::list())], args, false)?;
            line("GET /v1/hosts", &hosts, base.rate);
            let cfg = measure(&cloud, &fetches, args, false)?;
            let over = if args.wrk { 1 } else { n_records };
            line(
                &format!("GET /boot/v1/configs/{{uuid}} ({over} records)"),
                &cfg,
                base.rate,
            );
        }
        let list = [target(api::instances::list())];
        let plain = measure(&cloud, &list, args, false)?;
        line(
            &format!("GET /v1/instances ({n} instances)"),
            &plain,
            base.rate,
        );
        if args.wrk {
            let gz = measure(&cloud, &list, args, true)?;
            line(&format!("  the same, gzip ({n} instances)"), &gz, base.rate);
        }
        if n > 0 {
            let one = [target(api::instances::show("bench-00000"))];
            let one = measure(&cloud, &one, args, false)?;
            line(
                &format!("GET /v1/instances/NAME ({n} in store)"),
                &one,
                base.rate,
            );
        }
    }
    Ok(())
}
