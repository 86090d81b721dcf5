//! The fleet commands as `cm` shows them (flattened into its command tree).

use clap::{Args, Subcommand};
use std::path::PathBuf;

/// Options every fleet command takes.
#[derive(Debug, Clone, Args)]
pub struct FleetOpts {
    /// Inventory: cloudManager.ini or a .toml file (default: $CM_INVENTORY, then /etc/cloudManager.ini).
    #[arg(long, value_name = "FILE")]
    pub inventory: Option<PathBuf>,
    /// An ssh_config file for the whole run (passed to ssh as -F).
    #[arg(long, value_name = "FILE")]
    pub ssh_config: Option<PathBuf>,
    /// Accept (and remember) host keys not seen before; by default an unknown host key is refused.
    #[arg(long)]
    pub accept_new_host_keys: bool,
    /// Open a fresh SSH connection every time instead of reusing one (ControlMaster).
    #[arg(long)]
    pub no_reuse: bool,
    /// Seconds to wait for an SSH connection (default: ConnectTimeout from your ssh_config, else 10).
    #[arg(long, value_name = "SECS")]
    pub connect_timeout: Option<u64>,
}

/// Fan-out and time limit for commands that run on many nodes.
#[derive(Debug, Clone, Args)]
pub struct RunOpts {
    /// How many nodes at once.
    #[arg(short = 'f', long, default_value_t = 32, value_name = "N")]
    pub fanout: usize,
    /// Give up on a node after this many seconds (it counts as timed out).
    #[arg(short = 't', long, value_name = "SECS")]
    pub timeout: Option<f64>,
}

#[derive(Debug, Subcommand)]
pub enum FleetCommand {
    /// Print the nodes a target expression selects.
    #[command(
        after_help = "Target expressions: A | B,D | all (or '*') | web[01-20,30] | @group | !C\n\nExamples:\n  cm nodes all\n  cm nodes 'web[01-03],!web02'\n  cm nodes @db --json"
    )]
    Nodes {
        /// Target expression (default: all).
        targets: Option<String>,
        #[command(flatten)]
        fleet: FleetOpts,
    },
    /// Run a command on every target in parallel over SSH.
    #[command(
        name = "do",
        after_help = "Each output line is prefixed with its node's name. Exit status: 0 all succeeded,\n1 a command failed, 3 a node was unreachable, 4 a node timed out (the highest wins),\n2 bad usage or inventory.\n\nExamples:\n  cm do all -- uptime\n  cm do B,D -t 30 -- systemctl restart apache2\n  cm do 'web[01-20]' -b -- cat /etc/debian_version\n  cm do @web --json -- df -h /"
    )]
    Do {
        /// Target expression.
        targets: String,
        /// Gather nodes whose output is identical and print it once.
        #[arg(short = 'b', long)]
        gather: bool,
        #[command(flatten)]
        run: RunOpts,
        #[command(flatten)]
        fleet: FleetOpts,
        /// The command (after --), run by the remote user's shell.
        #[arg(last = true, required = true, value_name = "CMD")]
        command: Vec<String>,
    },
    /// Copy files to every target with scp, in parallel.
    #[command(
        after_help = "The last argument is TARGETS:DEST. Options before the sources go to scp (-r, -p, ...).\n\nExamples:\n  cm scp *.html 'all:/var/www/teste/'\n  cm scp *.html B,D:/var/www/teste/\n  cm scp -r site/ @web:/srv/"
    )]
    Scp {
        #[command(flatten)]
        run: RunOpts,
        #[command(flatten)]
        fleet: FleetOpts,
        /// [SCP OPTIONS] SRC... TARGETS:DEST
        #[arg(required = true, num_args = 2.., allow_hyphen_values = true, trailing_var_arg = true, value_name = "ARGS")]
        args: Vec<String>,
    },
    /// Copy files to every target with rsync over ssh, in parallel.
    #[command(
        after_help = "The last argument is TARGETS:DEST; everything before it goes to rsync.\n\nExamples:\n  cm rsync -az --delete site/ all:/var/www/teste/\n  cm rsync -a conf/ B,D:/etc/app/"
    )]
    Rsync {
        #[command(flatten)]
        run: RunOpts,
        #[command(flatten)]
        fleet: FleetOpts,
        /// [RSYNC OPTIONS] SRC... TARGETS:DEST
        #[arg(required = true, num_args = 2.., allow_hyphen_values = true, trailing_var_arg = true, value_name = "ARGS")]
        args: Vec<String>,
    },
    /// Per node: reachable over SSH (with latency) and its balancer state, weight and connections.
    #[command(after_help = "Examples:\n  cm status\n  cm status B,D --json")]
    Status {
        /// Target expression (default: all).
        targets: Option<String>,
        #[command(flatten)]
        fleet: FleetOpts,
    },
    /// Take nodes out of the balancer's pool: drain, wait for their connections to end, stop.
    #[command(
        after_help = "Refuses to empty the pool unless --force.\n\nExamples:\n  cm stop B\n  cm stop B,D --wait 120"
    )]
    Stop {
        targets: String,
        /// Seconds to wait for open connections to end before stopping anyway.
        #[arg(long, default_value_t = 30, value_name = "SECS")]
        wait: u64,
        /// Allow taking the last serving node out.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        fleet: FleetOpts,
    },
    /// Put nodes back into the balancer's pool and wait until they are up.
    #[command(after_help = "Examples:\n  cm play B\n  cm play C,D --wait 60")]
    Play {
        targets: String,
        /// Seconds to wait for the balancer to see the node up.
        #[arg(long, default_value_t = 30, value_name = "SECS")]
        wait: u64,
        #[command(flatten)]
        fleet: FleetOpts,
    },
}
