//! Scale benchmark (issue 10, point 7): a real master with N simulated
//! hosts (`cloudhostd --simulate N`, no QEMU) and M instances. Prints create
//! throughput (placements/s), API p50/p99 for reads and writes under that
//! load beside `GET /v1/info` on the idle master, the rate and latency of
//! host reports, the time to declare a silent host down, and the master's
//! RSS and CPU. Figures only; no goal is asserted.

mod load;
mod measure;

use cm_api::host::{Host, HostState};
use cm_api::instance::{InstanceState, StopInstance};
use cm_client::api;
use load::{Api, Worker};
use measure::{proc_stat, sim_stats, Latencies, ProcStat};
use std::sync::Arc;
use std::time::{Duration, Instant};
use test_infra::{Cloud, HostOpts, MasterOpts};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Simulated hosts (one process), plus one more that is killed to
    /// measure how long the master takes to declare it down.
    #[arg(long, default_value_t = 1000)]
    pub hosts: u32,
    /// Instances created (m1.tiny, placed by the scheduler).
    #[arg(long, default_value_t = 20000)]
    pub instances: usize,
    /// Seconds of mixed reads and writes once every instance runs.
    #[arg(long, default_value_t = 20)]
    pub duration: u64,
    /// Concurrent clients creating instances.
    #[arg(long, default_value_t = 8)]
    pub clients: usize,
    /// The master's --report-interval, seconds.
    #[arg(long, default_value_t = 3)]
    pub report_interval: u64,
    /// The master's --host-down-after, seconds.
    #[arg(long, default_value_t = 15)]
    pub host_down_after: u64,
}

impl Default for Args {
    fn default() -> Self {
        Args {
            hosts: 1000,
            instances: 20000,
            duration: 20,
            clients: 8,
            report_interval: 3,
            host_down_after: 15,
        }
    }
}

/// The longest any phase may take.
const PHASE_LIMIT: Duration = Duration::from_secs(1800);

fn row(what: &str, l: &Latencies, secs: f64) {
    println!(
        "  {what:<34} {:>9.1}/s  p50 {:>8.2} ms  p99 {:>8.2} ms  errors {}",
        l.us.len() as f64 / secs.max(0.001),
        l.pct_ms(50.0),
        l.pct_ms(99.0),
        l.errors
    );
}

fn simulator(n: u32, stats: &std::path::Path) -> HostOpts {
    HostOpts {
        memory_mib: Some(64 << 10),
        extra: vec![
            "--simulate".into(),
            n.to_string(),
            "--sim-stats".into(),
            stats.display().to_string(),
        ],
        ..Default::default()
    }
}

/// Wait until `n` hosts are ready, saying every 10 s how far it got; how
/// long it took and how many were ready at the end.
fn wait_ready(
    client: &cm_client::blocking::Client,
    n: usize,
    limit: Duration,
    stats: &std::path::Path,
) -> anyhow::Result<(Duration, usize)> {
    let began = Instant::now();
    let mut said = Duration::ZERO;
    let mut ready = 0;
    while began.elapsed() < limit {
        let all: Vec<Host> = client.call(api::hosts::list())?;
        let count = |state| all.iter().filter(|h| h.state == state).count();
        ready = count(HostState::Ready);
        if ready >= n {
            break;
        }
        if began.elapsed() >= said + Duration::from_secs(10) {
            said = began.elapsed();
            println!(
                "  {:>4.0} s: {} joined (simulator), {} listed, {ready} ready, {} down",
                said.as_secs_f64(),
                sim_stats(stats).registered,
                all.len(),
                count(HostState::Down)
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    Ok((began.elapsed(), ready))
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let hosts = args.hosts.clamp(1, 10_000);
    let count = args.instances.min(200_000);
    let secs = args.duration.clamp(1, 600);
    let clients = args.clients.clamp(1, 256);
    let mut cloud = Cloud::start_with(MasterOpts {
        report_interval_secs: args.report_interval.max(1),
        host_down_after_secs: args.host_down_after.max(2),
        // Each host holds a long-poll and sends reports: the default 4096
        // connections fit 1,000 hosts and clients; more hosts need more.
        extra: vec![
            "--max-connections".into(),
            (u64::from(hosts) * 2 + 256).max(4096).to_string(),
        ],
    })?;
    let master_api = Api {
        base: cloud.url.clone(),
        token: cloud.token.clone(),
    };
    let client = master_api.client()?;
    let master = cloud.master_pid().unwrap_or(0);
    println!(
        "scale: {hosts} simulated hosts (+1 to silence), {count} instances, {clients} create \
         clients, reports every {} s, down after {} s; master {}",
        args.report_interval,
        args.host_down_after,
        test_infra::bin("cloudmasterd").display()
    );

    // The baseline: the cheapest route on the idle master.
    let info = || Worker {
        name: "GET /v1/info",
        clients: 2,
        call: Arc::new(|c, _, _| c.call(api::info()).map(drop)),
    };
    let idle = load::mixed(
        &master_api,
        vec![info()],
        Instant::now() + Duration::from_secs(3),
    );

    let stats_file = cloud.dir.path().join("sim-stats.json");
    cloud.spawn_host_as("sim", "sim", simulator(hosts, &stats_file))?;
    let silent_stats = cloud.dir.path().join("silent-stats.json");
    cloud.spawn_host_as("silent", "silent", simulator(1, &silent_stats))?;
    let limit = Duration::from_secs(60 + u64::from(hosts) / 10);
    let (registered, ready) = wait_ready(&client, hosts as usize + 1, limit, &stats_file)?;

    let dir = cloud.dir.path().to_path_buf();
    std::fs::write(dir.join("k"), b"not a kernel")?;
    std::fs::write(dir.join("i"), b"not an initrd")?;
    let k = dir.join("k").display().to_string();
    let i = dir.join("i").display().to_string();
    cloud.cm_ok(&["image", "add", "img", "--kernel", &k, "--initrd", &i]);

    let names: Arc<Vec<String>> = Arc::new((1..=count).map(|i| format!("b{i:06}")).collect());
    let cpu0 = proc_stat(master);
    let created = load::create_all(
        &master_api,
        names.clone(),
        "img",
        clients,
        Instant::now() + PHASE_LIMIT,
    )?;
    let cpu1 = proc_stat(master);
    let placed = created.latencies.us.len();

    // Until every placed instance runs on its simulated host.
    let mut list = Latencies::default();
    let waiting = Instant::now();
    let mut running = 0;
    while waiting.elapsed() < PHASE_LIMIT && running < placed {
        let t = Instant::now();
        let v = client.call(api::instances::list());
        list.add(t.elapsed(), v.is_ok());
        running = v.map_or(0, |all| {
            all.iter()
                .filter(|i| i.state == InstanceState::Running)
                .count()
        });
        if running < placed {
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    let all_running = created.took + waiting.elapsed();

    // Mixed reads and writes while every host reports.
    let n = names.len().max(1);
    let (show, acts) = (names.clone(), names.clone());
    let workers = vec![
        Worker {
            name: "GET /v1/instances/{name}",
            clients: 4,
            call: Arc::new(move |client, c, k| {
                let i = (c * 7919 + k * 104_729) % n;
                let name = show.get(i).map_or("none", |s| s);
                client.call(api::instances::show(name)).map(drop)
            }),
        },
        Worker {
            name: "GET /v1/hosts",
            clients: 1,
            call: Arc::new(|client, _, _| client.call(api::hosts::list()).map(drop)),
        },
        Worker {
            name: "GET /v1/instances (all)",
            clients: 1,
            call: Arc::new(|client, _, _| client.call(api::instances::list()).map(drop)),
        },
        info(),
        Worker {
            name: "POST stop / start",
            clients: 2,
            call: Arc::new(move |client, c, k| {
                // Each client its own instances: stop one, start it again.
                let i = (c + 2 * (k / 2)) % n;
                let name = acts.get(i).map_or("none", |s| s);
                let op = if k % 2 == 0 {
                    api::instances::stop(name, &StopInstance::default())
                } else {
                    api::instances::start(name)
                };
                client.call(op).map(drop)
            }),
        },
    ];
    let (s0, m0) = (sim_stats(&stats_file), proc_stat(master));
    let sim_pid = cloud.host("sim").pid().unwrap_or(0);
    let sim0 = proc_stat(sim_pid);
    let began = Instant::now();
    let loaded = load::mixed(&master_api, workers, began + Duration::from_secs(secs));
    let elapsed = began.elapsed().as_secs_f64();
    let (s1, m1, sim1) = (
        sim_stats(&stats_file),
        proc_stat(master),
        proc_stat(sim_pid),
    );

    // A host goes silent: how long until the master says it is down.
    cloud.stop_host("silent", libc::SIGKILL);
    let silenced = Instant::now();
    let down_limit = Duration::from_secs(args.host_down_after * 3 + 60);
    let mut down = None;
    while silenced.elapsed() < down_limit {
        if client.call(api::hosts::show("silent-1"))?.state == HostState::Down {
            down = Some(silenced.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    print_figures(&Figures {
        registered,
        ready,
        created,
        placed,
        create_cpu: (cpu0, cpu1),
        all_running,
        list,
        idle,
        loaded,
        elapsed,
        reports: (s0, s1),
        master: (m0, m1),
        sim: (sim0, sim1),
        down,
        hosts,
    });
    Ok(())
}

struct Figures {
    registered: Duration,
    ready: usize,
    created: load::Created,
    placed: usize,
    create_cpu: (ProcStat, ProcStat),
    all_running: Duration,
    list: Latencies,
    idle: Vec<(&'static str, Latencies)>,
    loaded: Vec<(&'static str, Latencies)>,
    elapsed: f64,
    reports: (measure::SimStats, measure::SimStats),
    master: (ProcStat, ProcStat),
    sim: (ProcStat, ProcStat),
    down: Option<Duration>,
    hosts: u32,
}

fn print_figures(f: &Figures) {
    let c = &f.created;
    let took = c.took.as_secs_f64();
    println!(
        "  registration: {} of {} hosts ready after {:.1} s ({} joined or came back in the simulator)",
        f.ready,
        f.hosts + 1,
        f.registered.as_secs_f64(),
        f.reports.0.registered
    );
    println!(
        "  create: {} placed in {:.1} s = {:.0} placements/s (master CPU {:.0}% of a core)",
        f.placed,
        took,
        f.placed as f64 / took.max(0.001),
        100.0 * (f.create_cpu.1.cpu_secs - f.create_cpu.0.cpu_secs) / took.max(0.001)
    );
    row("POST /v1/instances (create)", &c.latencies, took);
    if let Some(e) = &c.first_error {
        println!("    first refusal: {e}");
    }
    println!(
        "  all running {:.1} s after the first create; GET /v1/instances while waiting: \
         p50 {:.1} ms p99 {:.1} ms",
        f.all_running.as_secs_f64(),
        f.list.pct_ms(50.0),
        f.list.pct_ms(99.0)
    );
    println!("  idle master (baseline):");
    for (name, l) in &f.idle {
        row(name, l, 3.0);
    }
    println!("  under load ({:.0} s, every host reporting):", f.elapsed);
    for (name, l) in &f.loaded {
        row(name, l, f.elapsed);
    }
    if let (Some((_, idle)), Some((_, busy))) = (
        f.idle.iter().find(|(n, _)| *n == "GET /v1/info"),
        f.loaded.iter().find(|(n, _)| *n == "GET /v1/info"),
    ) {
        println!(
            "  GET /v1/info p99 under load / idle: {:.1}x",
            busy.pct_ms(99.0) / idle.pct_ms(99.0).max(0.001)
        );
    }
    let (ok, failed, p50, p99) = f.reports.1.since(&f.reports.0);
    println!(
        "  host reports (each with its guests' heartbeats): {:.0}/s, p50 {p50} ms p99 {p99} ms, \
         {failed} failed",
        ok as f64 / f.elapsed.max(0.001)
    );
    let (m0, m1) = f.master;
    println!(
        "  master: RSS {:.0} MiB (peak {:.0} MiB), CPU {:.0}% of a core under load",
        m1.rss_mib,
        m1.peak_rss_mib,
        100.0 * (m1.cpu_secs - m0.cpu_secs) / f.elapsed.max(0.001)
    );
    let (s0, s1) = f.sim;
    println!(
        "  simulator (load generator, same machine): RSS {:.0} MiB, CPU {:.0}% of a core",
        s1.rss_mib,
        100.0 * (s1.cpu_secs - s0.cpu_secs) / f.elapsed.max(0.001)
    );
    match f.down {
        Some(d) => println!(
            "  silent host declared down {:.1} s after it was killed",
            d.as_secs_f64()
        ),
        None => println!("  silent host: not declared down within the limit"),
    }
}
