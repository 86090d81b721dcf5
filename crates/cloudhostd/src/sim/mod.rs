//! `cloudhostd --simulate N`: N hosts in one process that join, long-poll,
//! report and "run" instances through the agent's own loops (agent.rs) and
//! client (client.rs), but start no QEMU: each VM is a state machine on a
//! clock (`vm`), each host a set of them (`host`). The master sees the same
//! requests as from N real hosts. For fast master tests and the scale
//! benchmark (`cmbench scale`); see docs/host.md, "Simulated hosts".
//!
//! Each host keeps its identity (`host.json`) in `DATA/hosts/NAME/`, so a
//! restarted simulator comes back as the same hosts; its VMs live only in
//! memory (a restart is a host whose VMs all vanished).

pub mod backups;
pub mod control;
pub mod host;
pub mod http;
pub mod snapshots;
pub mod stats;
pub mod transfers;
pub mod vm;
pub mod volumes;

#[cfg(test)]
mod backup_tests;
#[cfg(test)]
mod root_tests;
#[cfg(test)]
mod tests;

use crate::agent::{self, Agent, Credentials};
use crate::client::Master;
use crate::config::Config;
use anyhow::Context;
use cm_api::words::ResolvedAccel;
use host::{Capacity, SimHost};
use stats::Stats;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use vm::Timings;

/// The most hosts one process simulates.
pub const MAX_HOSTS: u32 = 10_000;

#[derive(Debug, Clone, clap::Args)]
pub struct SimArgs {
    /// Run N simulated hosts (no QEMU) named NAME-1 ... NAME-N, each with
    /// its identity in DATA/hosts/NAME-i/ (at most 10000). For tests and
    /// benchmarks; see docs/host.md.
    #[arg(long, value_name = "N")]
    pub simulate: Option<u32>,
    /// Simulated: milliseconds an instance is preparing before it starts.
    #[arg(long, default_value_t = 200, requires = "simulate")]
    pub sim_prepare_ms: u64,
    /// Simulated: milliseconds from starting to running (the boot).
    #[arg(long, default_value_t = 1000, requires = "simulate")]
    pub sim_boot_ms: u64,
    /// Simulated: milliseconds a guest takes to honour an ACPI shutdown.
    #[arg(long, default_value_t = 500, requires = "simulate")]
    pub sim_stop_ms: u64,
    /// Simulated: milliseconds between a guest agent's heartbeats.
    #[arg(long, default_value_t = 2000, requires = "simulate")]
    pub sim_beat_ms: u64,
    /// Simulated: vCPUs of each host.
    #[arg(long, default_value_t = 32, requires = "simulate")]
    pub sim_vcpus: u32,
    /// Simulated: free disk of each host, in MiB.
    #[arg(long, default_value_t = 1 << 20, requires = "simulate")]
    pub sim_disk_mib: u64,
    /// Simulated: write counters (registrations, reports, report latency)
    /// as JSON to this file every second.
    #[arg(long, requires = "simulate")]
    pub sim_stats: Option<PathBuf>,
    /// Simulated: a unix socket (made mode 0600) taking fault injections,
    /// one a line: crash VM, freeze VM, thaw VM, service VM NAME STATE,
    /// mute HOST, unmute HOST, vanish VM, hang VOLUME, unhang VOLUME
    /// (docs/host.md).
    #[arg(long, value_name = "PATH", requires = "simulate")]
    pub sim_control: Option<PathBuf>,
}

/// Memory of each simulated host when `--memory-mib` does not say.
const DEFAULT_MEMORY_MIB: u64 = 64 << 10;

impl SimArgs {
    pub fn timings(&self) -> Timings {
        Timings {
            prepare: Duration::from_millis(self.sim_prepare_ms),
            boot: Duration::from_millis(self.sim_boot_ms),
            stop: Duration::from_millis(self.sim_stop_ms),
            beat: Duration::from_millis(self.sim_beat_ms.max(1)),
        }
    }
}

/// The names of `n` hosts: `prefix-1` ... with the numbers padded alike.
pub fn names(prefix: &str, n: u32) -> Vec<String> {
    let width = n.to_string().len();
    (1..=n).map(|i| format!("{prefix}-{i:0width$}")).collect()
}

/// Start `n` hosts and run them until the process ends.
pub async fn run(cfg: Config, args: SimArgs, n: u32) -> anyhow::Result<()> {
    if n == 0 || n > MAX_HOSTS {
        anyhow::bail!("--simulate takes 1 to {MAX_HOSTS} hosts, not {n}");
    }
    let names = names(&cfg.name, n);
    for name in &names {
        cm_api::validate::name("name", name, false).map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let join_token = if cfg.rejoin || names.iter().any(|n| !creds_path(&cfg, n).exists()) {
        Some(cfg.join_token()?)
    } else {
        None
    };
    let stats = Arc::new(Stats::new(u64::from(n)));
    let capacity = Capacity {
        memory_mib: cfg.memory_mib.unwrap_or(DEFAULT_MEMORY_MIB),
        vcpus: args.sim_vcpus.max(1),
        disk_mib: args.sim_disk_mib,
        accel: match cfg.accel {
            crate::accel::HostAccel::Tcg => ResolvedAccel::Tcg,
            crate::accel::HostAccel::Kvm | crate::accel::HostAccel::Auto => ResolvedAccel::Kvm,
        },
        forward_addr: cfg.forward_addr.clone(),
    };
    if let Some(path) = args.sim_stats.clone() {
        let stats = stats.clone();
        tokio::spawn(async move {
            loop {
                if let Err(e) = stats.write(&path) {
                    tracing::warn!("writing {}: {e}", path.display());
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }
    let mut joins = tokio::task::JoinSet::new();
    let mut hosts = Vec::with_capacity(names.len());
    for name in names {
        let host = SimHost::new(args.timings(), capacity.clone(), stats.clone());
        hosts.push((name.clone(), host.clone()));
        let (cfg, token, stats) = (cfg.clone(), join_token.clone(), stats.clone());
        joins.spawn(async move { start_host(&cfg, name, token, host, &stats).await });
    }
    if let Some(path) = &args.sim_control {
        let listener =
            control::listen(path).with_context(|| format!("--sim-control {}", path.display()))?;
        tokio::spawn(control::serve(listener, Arc::new(hosts)));
    }
    while let Some(r) = joins.join_next().await {
        r.context("a simulated host's start")??;
    }
    tracing::info!("{n} simulated hosts up for {}", cfg.master);
    std::future::pending::<()>().await;
    Ok(())
}

fn creds_path(cfg: &Config, name: &str) -> PathBuf {
    cfg.data_dir.join("hosts").join(name).join("host.json")
}

/// Join (or come back as) host `name`, then run its agent and stepper.
async fn start_host(
    cfg: &Config,
    name: String,
    join_token: Option<String>,
    host: Arc<SimHost>,
    stats: &Stats,
) -> anyhow::Result<()> {
    let path = creds_path(cfg, &name);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
    }
    let creds = match (Credentials::load(&path), join_token) {
        (Some(c), _) if !cfg.rejoin => Credentials {
            master: cfg.master.clone(),
            ..c
        },
        (_, Some(token)) => {
            let m = Master::new(&cfg.master, String::new())?;
            agent::join_as(&m, &cfg.master, &name, token, host.as_ref(), &path).await?
        }
        (_, None) => anyhow::bail!("{}: no credentials and no join token", path.display()),
    };
    stats.registered.fetch_add(1, Ordering::Relaxed);
    host.transfers().connect(cm_client::Client::new(
        &cfg.master,
        creds.host_token.clone(),
    )?);
    let agent = Arc::new(Agent {
        master: Arc::new(Master::new(&cfg.master, creds.host_token.clone())?),
        vms: host.clone(),
        facts: host.clone(),
        creds,
        creds_path: path,
        applied: AtomicU64::new(0),
        interval: AtomicU64::new(3),
        refused: AtomicBool::new(false),
    });
    tokio::spawn(host.run());
    tokio::spawn(agent.run());
    Ok(())
}
