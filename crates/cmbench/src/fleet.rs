//! Fleet fan-out benchmark (issues 4 and 9): `cm do all -- uptime` on 10
//! and 50 local sshd nodes (test_infra's SshFleet, one sshd per node, each
//! with its own home), beside Debian's pdsh and ClusterShell's clush
//! running the same command on the same nodes through the same ssh_config,
//! in the same run. cm runs three ways: cold (no control master yet: it
//! starts one per node, as a first run does), warm (the masters are open:
//! cm talks to them directly, no ssh process), and `--no-reuse` (a fresh
//! connection per node, as pdsh and clush make). Runs are interleaved
//! (pdsh, clush, cm cold, cm warm, cm --no-reuse, pdsh, ...) so a slow
//! moment of the machine hits every tool alike; the table shows medians and
//! the ratio to the better of pdsh and clush. Every run must succeed on
//! every node or the benchmark stops.

use anyhow::{bail, Context, Result};
use cm_fleet::inventory::Inventory;
use cm_fleet::ssh::Transport;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use test_infra::sshd::SshFleet;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Fleet sizes.
    #[arg(long, value_delimiter = ',', default_value = "10,50")]
    pub nodes: Vec<usize>,
    /// Runs per tool and size.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Fan-out given to every tool.
    #[arg(long, default_value_t = 32)]
    pub fanout: usize,
}

impl Default for Args {
    fn default() -> Self {
        Args {
            nodes: vec![10, 50],
            runs: 5,
            fanout: 32,
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Tool {
    Pdsh,
    Clush,
    /// `cm do` with no control master open: it starts them.
    CmCold,
    /// `cm do` with the masters of the cold run open.
    CmWarm,
    /// `cm do --no-reuse`: a fresh ssh connection per node, as pdsh and clush make.
    CmNoReuse,
}

impl Tool {
    fn label(self) -> &'static str {
        match self {
            Tool::Pdsh => "pdsh -R ssh",
            Tool::Clush => "clush",
            Tool::CmCold => "cm do, cold (starts masters)",
            Tool::CmWarm => "cm do, warm (masters open)",
            Tool::CmNoReuse => "cm do --no-reuse",
        }
    }
}

/// In the order they run in each round: cold must come right before warm.
const TOOLS: [Tool; 5] = [
    Tool::Pdsh,
    Tool::Clush,
    Tool::CmCold,
    Tool::CmWarm,
    Tool::CmNoReuse,
];

struct Setup {
    fleet: SshFleet,
    ini: String,
    hosts: String,
}

impl Setup {
    fn command(&self, tool: Tool, fanout: usize) -> Command {
        let cfg = self.fleet.ssh_config.display().to_string();
        let f = fanout.to_string();
        match tool {
            Tool::CmCold | Tool::CmWarm | Tool::CmNoReuse => {
                let mut c = Command::new(test_infra::paths::bin("cm"));
                c.args(["do", "all", "-f", &f, "--inventory", &self.ini])
                    .args(["--ssh-config", &cfg]);
                if tool == Tool::CmNoReuse {
                    c.arg("--no-reuse");
                }
                c.args(["--", "uptime"]);
                c
            }
            Tool::Pdsh => {
                let mut c = Command::new("pdsh");
                c.args(["-R", "ssh", "-f", &f, "-w", &self.hosts, "uptime"])
                    .env("PDSH_SSH_ARGS_APPEND", format!("-F {cfg}"));
                c
            }
            Tool::Clush => {
                let mut c = Command::new("clush");
                c.args(["-f", &f, "-o", &format!("-F {cfg}"), "-w", &self.hosts])
                    .arg("uptime");
                c
            }
        }
    }

    /// Close the control masters cm keeps for these nodes (found the way
    /// cm finds them: the same transport settings name the same sockets).
    fn close_masters(&self) -> Result<()> {
        let inv = Inventory::find(Some(Path::new(&self.ini)))?;
        let t = Transport::new(Some(&self.fleet.ssh_config), false, None, true)?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        for n in &inv.nodes {
            if let Some(p) = t.control_path(n) {
                rt.block_on(cm_fleet::mux::terminate(&p))?;
            }
        }
        Ok(())
    }

    /// One run: its wall time; every node must have answered.
    fn run(&self, tool: Tool, fanout: usize) -> Result<Duration> {
        if tool == Tool::CmCold {
            self.close_masters()?;
        }
        let mut c = self.command(tool, fanout);
        c.env_remove("CM_INVENTORY")
            .stdin(std::process::Stdio::null());
        let t = Instant::now();
        let out = c
            .output()
            .with_context(|| format!("running {}", tool.label()))?;
        let took = t.elapsed();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let lines = stdout
            .lines()
            .filter(|l| l.contains("load average"))
            .count();
        if !out.status.success() || lines != self.fleet.nodes.len() {
            bail!(
                "{} failed (exit {:?}, {lines} of {} nodes answered): {}",
                tool.label(),
                out.status.code(),
                self.fleet.nodes.len(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(took)
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn setup(n: usize) -> Result<Setup> {
    let names: Vec<String> = (1..=n).map(|i| format!("n{i:02}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let fleet = SshFleet::start(&refs)?;
    let ini = fleet.dir.path().join("cloudManager.ini");
    std::fs::write(&ini, fleet.ini(|_| 80, ""))?;
    let hosts = fleet
        .nodes
        .iter()
        .map(|n| n.addr.clone())
        .collect::<Vec<_>>()
        .join(",");
    Ok(Setup {
        ini: ini.display().to_string(),
        hosts,
        fleet,
    })
}

pub fn run(args: &Args) -> Result<()> {
    for tool in ["pdsh", "clush", "ssh"] {
        if Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .map(|o| !o.status.success())
            .unwrap_or(true)
        {
            bail!("{tool} is not installed (scripts/install-deps.sh installs it)");
        }
    }
    let runs = args.runs.max(1);
    println!(
        "fleet benchmark: `uptime` on every node, {runs} runs per tool, interleaved; fan-out {}; one local sshd per node",
        args.fanout
    );
    let mut table: Vec<(usize, Vec<(Tool, Duration)>)> = Vec::new();
    for &n in &args.nodes {
        let s = setup(n)?;
        // One unmeasured round: page cache, sshd's first fork, and cm's
        // control masters for the warm runs.
        for tool in TOOLS {
            s.run(tool, args.fanout)?;
        }
        let mut times: Vec<Vec<Duration>> = vec![Vec::new(); TOOLS.len()];
        for _ in 0..runs {
            for (i, tool) in TOOLS.iter().enumerate() {
                times[i].push(s.run(*tool, args.fanout)?);
            }
        }
        table.push((
            n,
            TOOLS
                .iter()
                .zip(times)
                .map(|(t, v)| (*t, median(v)))
                .collect(),
        ));
    }
    println!(
        "(ratio: to the better of pdsh and clush at that size; medians of {runs} interleaved runs)"
    );
    print!("{:<30}", "median wall time");
    for (n, _) in &table {
        print!(" {:>10} {:>8}", format!("{n} nodes"), "vs best");
    }
    println!();
    for (i, tool) in TOOLS.iter().enumerate() {
        print!("{:<30}", tool.label());
        for (_, row) in &table {
            let best = row[0].1.min(row[1].1).as_secs_f64();
            let t = row[i].1.as_secs_f64();
            print!(" {:>8.0}ms {:>7.2}x", t * 1000.0, t / best);
        }
        println!();
    }
    Ok(())
}
