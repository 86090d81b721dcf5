//! Fleet operations over OpenSSH and balancer membership (seed 004):
//! `cm nodes`, `cm do`, `cm scp`, `cm rsync`, `cm status`, `cm stop`,
//! `cm play`, and the old names `cmdo`, `cmscp`, ... as links to `cm`.
//!
//! Works from an inventory file alone (no master): `inventory` reads it,
//! `targets` selects nodes, `ssh` builds the OpenSSH command lines, `exec`
//! runs them in parallel, `output` prints the results, `referee` drives the
//! balancer, `legacy` maps the old argument order.

mod command;
pub mod exec;
pub mod inventory;
mod legacy;
pub mod mux;
mod output;
pub mod referee;
pub mod runner;
pub mod ssh;
pub mod ssh_config;
mod status;
pub mod targets;
mod tunnel;

pub use command::{FleetCommand, FleetOpts, RunOpts};
pub use legacy::legacy_main;

use exec::{Job, NodeResult};
use inventory::{Inventory, Node};
use ssh::Transport;
use std::time::Duration;

/// Exit codes: the highest that applies wins.
pub mod code {
    pub const OK: i32 = 0;
    /// A remote command (or copy) failed.
    pub const FAILED: i32 = 1;
    /// Bad usage, inventory or target expression; nothing was run.
    pub const USAGE: i32 = 2;
    /// A node could not be reached over SSH.
    pub const UNREACHABLE: i32 = 3;
    /// A node did not finish within --timeout.
    pub const TIMEOUT: i32 = 4;
}

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error(transparent)]
    Inventory(#[from] inventory::InventoryError),
    #[error(transparent)]
    Target(#[from] targets::TargetError),
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Referee(#[from] referee::RefereeError),
    #[error(transparent)]
    SshConfig(#[from] ssh_config::ConfigError),
    #[error("{0}")]
    Runtime(String),
}

impl FleetError {
    fn exit_code(&self) -> i32 {
        match self {
            FleetError::Referee(referee::RefereeError::Run(_)) => code::UNREACHABLE,
            FleetError::Referee(
                referee::RefereeError::NotUp { .. } | referee::RefereeError::Locked { .. },
            ) => code::TIMEOUT,
            FleetError::Referee(
                referee::RefereeError::EmptyPool { .. } | referee::RefereeError::Missing,
            ) => code::USAGE,
            FleetError::Referee(referee::RefereeError::NotInBalancer(_)) => code::USAGE,
            FleetError::Referee(_) | FleetError::Runtime(_) => code::FAILED,
            _ => code::USAGE,
        }
    }
}

/// The inventory, the transport, and the nodes a target expression selects.
struct Ctx {
    inv: Inventory,
    transport: Transport,
}

impl Ctx {
    fn new(f: &FleetOpts) -> Result<Ctx, FleetError> {
        let inv = Inventory::find(f.inventory.as_deref())?;
        let transport = Transport::new(
            f.ssh_config.as_deref(),
            f.accept_new_host_keys,
            f.connect_timeout,
            !f.no_reuse,
        )?;
        Ok(Ctx { inv, transport })
    }

    fn select(&self, expr: &str) -> Result<Vec<&Node>, FleetError> {
        let names = targets::select(&self.inv, expr)?;
        Ok(names.iter().filter_map(|n| self.inv.node(n)).collect())
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, FleetError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| FleetError::Runtime(format!("starting the runtime: {e}")))
}

fn timeout(run: &RunOpts) -> Result<Option<Duration>, FleetError> {
    match run.timeout {
        Some(t) if !(t > 0.0 && t.is_finite()) => Err(FleetError::Usage(format!(
            "--timeout must be a positive number of seconds, not {t}"
        ))),
        Some(t) => Ok(Some(Duration::from_secs_f64(t))),
        None => Ok(None),
    }
}

/// Run `jobs` with the run options, printing lines as they come unless `quiet`.
fn run_jobs(
    jobs: Vec<Job>,
    run: &RunOpts,
    on: Option<exec::OnLine>,
) -> Result<Vec<NodeResult>, FleetError> {
    if run.fanout == 0 {
        return Err(FleetError::Usage("--fanout must be at least 1".into()));
    }
    let t = timeout(run)?;
    Ok(runtime()?.block_on(exec::run_all(jobs, run.fanout, t, on)))
}

/// `command` on `node`: through its control master when one is open,
/// else with ssh (which opens one, unless connections are not reused).
fn ssh_job(transport: &Transport, node: &Node, command: &str) -> Job {
    Job {
        node: node.name.clone(),
        argv: transport.ssh(node, command),
        via_master: transport
            .control_path(node)
            .map(|p| (p, command.to_string())),
    }
}

/// `[OPTIONS] SRC... TARGETS:DEST` → (options and sources, targets, dest).
fn split_copy_args(args: &[String]) -> Result<(Vec<String>, String, String), FleetError> {
    let (last, rest) = args
        .split_last()
        .ok_or_else(|| FleetError::Usage("give SRC... TARGETS:DEST".into()))?;
    let (targets, dest) = last
        .split_once(':')
        .filter(|(t, _)| !t.is_empty())
        .ok_or_else(|| {
            FleetError::Usage(format!(
                "the last argument must be TARGETS:DEST (like B,D:/var/www/), not '{last}'"
            ))
        })?;
    if rest.iter().all(|a| a.starts_with('-')) {
        return Err(FleetError::Usage(
            "nothing to copy: give at least one source before TARGETS:DEST".into(),
        ));
    }
    Ok((rest.to_vec(), targets.to_string(), dest.to_string()))
}

/// Which program copies.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Copier {
    Scp,
    Rsync,
}

fn copy(
    kind: Copier,
    run: &RunOpts,
    fleet: &FleetOpts,
    args: &[String],
    json: bool,
) -> Result<i32, FleetError> {
    let ctx = Ctx::new(fleet)?;
    let (rest, targets, dest) = split_copy_args(args)?;
    let nodes = ctx.select(&targets)?;
    let jobs: Vec<Job> = if kind == Copier::Scp {
        let opts: Vec<String> = rest
            .iter()
            .take_while(|a| a.starts_with('-'))
            .cloned()
            .collect();
        let sources: Vec<String> = rest[opts.len()..].to_vec();
        nodes
            .iter()
            .map(|n| Job::process(&n.name, ctx.transport.scp(n, &opts, &sources, &dest)))
            .collect()
    } else {
        if let Some(bad) = rest.iter().find(|a| *a == "-e" || a.starts_with("--rsh")) {
            return Err(FleetError::Usage(format!(
                "{bad}: cm rsync sets rsync's ssh itself (use --ssh-config or the inventory)"
            )));
        }
        nodes
            .iter()
            .map(|n| Job::process(&n.name, ctx.transport.rsync(n, &rest, &dest)))
            .collect()
    };
    let results = run_jobs(jobs, run, None)?;
    Ok(output::copies(&results, json))
}

/// Run one fleet command; returns the process exit code.
pub fn run(cmd: FleetCommand, json: bool) -> i32 {
    match dispatch(cmd, json) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("cm: {e}");
            e.exit_code()
        }
    }
}

fn dispatch(cmd: FleetCommand, json: bool) -> Result<i32, FleetError> {
    match cmd {
        FleetCommand::Nodes { targets, fleet } => {
            let ctx = Ctx::new(&fleet)?;
            let nodes = ctx.select(targets.as_deref().unwrap_or("all"))?;
            output::nodes(&nodes, json);
            Ok(code::OK)
        }
        FleetCommand::Do {
            targets,
            gather,
            run,
            fleet,
            command,
        } => {
            let ctx = Ctx::new(&fleet)?;
            let nodes = ctx.select(&targets)?;
            let line = command.join(" ");
            if line.trim().is_empty() {
                return Err(FleetError::Usage("give a command after --".into()));
            }
            let jobs = nodes
                .iter()
                .map(|n| ssh_job(&ctx.transport, n, &line))
                .collect();
            let live = !json && !gather;
            let results = run_jobs(jobs, &run, live.then(output::live_printer))?;
            Ok(output::commands(&results, json, gather))
        }
        FleetCommand::Scp { run, fleet, args } => copy(Copier::Scp, &run, &fleet, &args, json),
        FleetCommand::Rsync { run, fleet, args } => copy(Copier::Rsync, &run, &fleet, &args, json),
        FleetCommand::Status { targets, fleet } => {
            let ctx = Ctx::new(&fleet)?;
            let nodes = ctx.select(targets.as_deref().unwrap_or("all"))?;
            status::run(&ctx.inv, &ctx.transport, &nodes, json)
        }
        FleetCommand::Stop {
            targets,
            wait,
            force,
            fleet,
        } => change(&fleet, &targets, wait, force, true),
        FleetCommand::Play {
            targets,
            wait,
            fleet,
        } => change(&fleet, &targets, wait, false, false),
    }
}

fn change(
    fleet: &FleetOpts,
    targets: &str,
    wait: u64,
    force: bool,
    stop: bool,
) -> Result<i32, FleetError> {
    let ctx = Ctx::new(fleet)?;
    let nodes = ctx.select(targets)?;
    let bal = referee::open(&ctx.inv, &ctx.transport)?;
    let opts = referee::ChangeOpts {
        wait: Duration::from_secs(wait),
        force,
    };
    let mut log = |l: &str| println!("{l}");
    // Held until the change is done: the pool is read, judged and changed
    // by one run at a time.
    let _lock = referee::lock(bal.as_ref(), opts.wait)?;
    if stop {
        bal.stop(&ctx.inv, &nodes, opts, &mut log)?;
    } else {
        bal.play(&ctx.inv, &nodes, opts, &mut log)?;
    }
    Ok(code::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn copy_arguments_end_in_targets_and_dest() {
        let (rest, t, d) =
            split_copy_args(&v(&["-r", "a.html", "b.html", "B,D:/var/www/teste/"])).unwrap();
        assert_eq!(
            (rest, t.as_str(), d.as_str()),
            (v(&["-r", "a.html", "b.html"]), "B,D", "/var/www/teste/")
        );
        let (_, t, _) = split_copy_args(&v(&["x", "*:/tmp/"])).unwrap();
        assert_eq!(t, "*");
        assert!(split_copy_args(&v(&["a", "b"]))
            .unwrap_err()
            .to_string()
            .contains("TARGETS:DEST"));
        assert!(split_copy_args(&v(&["-a", "all:/x"]))
            .unwrap_err()
            .to_string()
            .contains("nothing to copy"));
        split_copy_args(&v(&["a", ":/x"])).unwrap_err();
    }
}
