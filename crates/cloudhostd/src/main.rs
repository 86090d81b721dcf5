//! `cloudhostd`: the host agent (DESIGN.md §1, §4).

mod accel;
mod agent;
mod backup;
mod client;
mod config;
mod facts;
mod images;
mod lock;
mod relay;
mod runtime;
mod sim;
mod vm;
mod volumes;

use agent::{Agent, Credentials, FactSource};
use anyhow::Context;
use clap::Parser;
use client::Master;
use images::ImageCache;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;
use vm::{VmContext, Vms};

/// Unix socket paths are limited to 108 bytes; each VM's sockets live in
/// `DATA/instances/UUID/` (37 bytes) and have names up to 12 bytes.
const MAX_DATA_DIR: usize = 108 - 1 - 37 - 10 - 12 - 1;

fn main() -> anyhow::Result<()> {
    let args = config::Args::parse();
    if let Some(sock) = &args.guestfwd_relay {
        // Run by QEMU for a guest's connection: its stdio is that connection,
        // so nothing may be logged.
        std::process::exit(relay::run(sock));
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cfg = config::Config::load(&args)?;
    if let Some(n) = args.sim.simulate {
        return simulate(cfg, args.sim, n);
    }
    if cfg.data_dir.as_os_str().len() > MAX_DATA_DIR {
        anyhow::bail!(
            "data dir {} is too long for QEMU's unix sockets (at most {MAX_DATA_DIR} bytes)",
            cfg.data_dir.display()
        );
    }
    std::fs::create_dir_all(cfg.data_dir.join("instances"))
        .with_context(|| format!("creating {}", cfg.data_dir.display()))?;
    std::fs::create_dir_all(&cfg.volumes_dir)
        .with_context(|| format!("creating {}", cfg.volumes_dir.display()))?;
    // Held until the process exits: two agents on one data dir would fight
    // over its VMs.
    let _lock = lock::DataDirLock::take(&cfg.data_dir)?;
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(run(cfg))
}

/// `--simulate N`: N hosts without QEMU in this process (sim/).
fn simulate(cfg: config::Config, args: sim::SimArgs, n: u32) -> anyhow::Result<()> {
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("creating {}", cfg.data_dir.display()))?;
    let _lock = lock::DataDirLock::take(&cfg.data_dir)?;
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        tokio::select! {
            r = sim::run(cfg, args, n) => r,
            _ = tokio::signal::ctrl_c() => Ok(()),
            _ = terminate() => Ok(()),
        }
    })
}

async fn run(cfg: config::Config) -> anyhow::Result<()> {
    let images_dir = cfg.data_dir.join("images");
    let kernels = accel::candidate_kernels(cfg.probe_kernel.as_deref(), &images_dir);
    let (mode, qemu, timeout, cache) = (
        cfg.accel,
        cfg.qemu.clone(),
        cfg.kvm_probe_timeout,
        cfg.data_dir.join("accel-probe.json"),
    );
    let resolved =
        tokio::task::spawn_blocking(move || accel::resolve(mode, &qemu, &kernels, timeout, &cache))
            .await?;
    tracing::info!("accel auto = {} ({})", resolved.accel, resolved.note);
    let facts = FactSource {
        disk_dir: cfg.volumes_dir.clone(),
        memory_override: cfg.memory_mib,
        accel: resolved.accel,
        accel_note: resolved.note.clone(),
        qemu_version: vm::qemu::version(&cfg.qemu),
        forward_addr: cfg.forward_addr.clone(),
    };

    let creds_path = cfg.data_dir.join("host.json");
    let creds = match Credentials::load(&creds_path) {
        Some(c) if !cfg.rejoin => {
            if c.master != cfg.master {
                // The token belongs to the cloud, not to a URL.
                tracing::info!("the master's URL is now {} (was {})", cfg.master, c.master);
                let c = Credentials {
                    master: cfg.master.clone(),
                    ..c
                };
                c.save(&creds_path)
                    .with_context(|| format!("writing {}", creds_path.display()))?;
                c
            } else {
                c
            }
        }
        old => {
            if let Some(o) = old {
                tracing::warn!(
                    "--rejoin: joining again; this host was {} ({}) in cloud {}",
                    o.name,
                    o.host_id,
                    o.cloud_id
                );
            }
            let m = Master::new(&cfg.master, String::new())?;
            agent::join(&cfg, &m, &facts, &creds_path).await?
        }
    };
    let master = Arc::new(Master::new(&cfg.master, creds.host_token.clone())?);
    let volumes = volumes::Volumes::open_with(
        &cfg.volumes_dir,
        &cfg.data_dir.join("instances"),
        Some(&cfg.backups_dir),
    )
    .with_context(|| format!("opening the volumes dir {}", cfg.volumes_dir.display()))?;
    volumes.chains.set_ssh(cfg.backup_ssh.clone());
    let ctx = Arc::new(
        VmContext::new(
            cfg.qemu.clone(),
            cfg.data_dir.join("instances"),
            ImageCache::new(images_dir),
            master.clone(),
            resolved.accel,
            cfg.forward_bind.clone(),
            cfg.guest_master.clone(),
        )
        .with_volumes(Arc::new(volumes))
        .with_guest_policy(vm::GuestPolicy {
            restricted: cfg.guest_network == config::GuestNetwork::Restricted,
            console_log_max: cfg.console_log_max,
            relay_exe: relay::own_exe().context("finding this agent's own binary")?,
        }),
    );
    let vms = Arc::new(Vms::adopt(ctx)?);
    tracing::info!(
        "cloudhostd {} up as {} for {}",
        env!("CARGO_PKG_VERSION"),
        creds.name,
        cfg.master
    );
    let agent = Arc::new(Agent {
        master,
        vms,
        facts: Arc::new(facts),
        creds,
        creds_path,
        applied: AtomicU64::new(0),
        interval: AtomicU64::new(3),
        refused: AtomicBool::new(false),
    });
    tokio::select! {
        _ = agent.run() => {}
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate() => {}
    }
    // VMs keep running: they outlive the agent and are re-adopted on start.
    tracing::info!("stopped (VMs keep running)");
    Ok(())
}

async fn terminate() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut s) => {
            s.recv().await;
        }
        Err(_) => std::future::pending::<()>().await,
    }
}
