//! The command tree. Every command's `--help` ends with an example.

use clap::{Args, Parser, Subcommand};
use cm_api::instance::{Accel, PortForward, RestartPolicy};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "cm",
    version,
    about = "cloudmaster: VMs on your own hosts, and commands across whole fleets",
    after_help = "Examples:\n  cm host list\n  cm instance create web-1 --image cm-test --flavor m1.tiny\n  cm do all -- uptime\n\nThe master is found from --url/--token, CM_URL/CM_TOKEN, the config file\n(~/.config/cm/config.toml), or a master running on this machine."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct Global {
    /// The master's URL (default: a master on this machine, http://127.0.0.1:8107).
    #[arg(long, env = "CM_URL", global = true)]
    pub url: Option<String>,
    /// Bearer token (default: the local master's admin token).
    #[arg(long, env = "CM_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// Config file with `url` and `token` or `token_file`.
    #[arg(long, env = "CM_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Print JSON for scripts instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Hosts that run VMs.
    #[command(subcommand)]
    Host(HostCmd),
    /// Bootable images (kernel+initrd, or a disk).
    #[command(subcommand)]
    Image(ImageCmd),
    /// Named instance sizes.
    #[command(subcommand)]
    Flavor(FlavorCmd),
    /// Virtual machines.
    #[command(subcommand)]
    Instance(InstanceCmd),
    /// Slow actions in progress or done.
    #[command(subcommand, name = "operation")]
    Operation(OperationCmd),
    /// The event log.
    #[command(subcommand)]
    Event(EventCmd),
    #[command(flatten)]
    Fleet(cm_fleet::FleetCommand),
}

#[derive(Debug, Subcommand)]
pub enum HostCmd {
    /// List hosts with memory total / promised-free / real-free, vCPUs, state.
    #[command(after_help = "Example:\n  cm host list")]
    List,
    /// Show one host.
    #[command(after_help = "Example:\n  cm host show host1")]
    Show { name: String },
    /// Keep new instances off a host (running ones stay).
    #[command(after_help = "Example:\n  cm host disable host1")]
    Disable { name: String },
    /// Open a disabled host for new instances again.
    #[command(after_help = "Example:\n  cm host enable host1")]
    Enable { name: String },
    /// Print the token hosts join with (cloudhostd --join-token).
    #[command(after_help = "Examples:\n  cm host join-token\n  cm host join-token --rotate")]
    JoinToken {
        /// Make a new token; the old one stops working.
        #[arg(long)]
        rotate: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ImageCmd {
    /// Register an image from files on the master.
    #[command(
        after_help = "Examples:\n  cm image add cm-test --kernel var/images/cm-test/vmlinuz --initrd var/images/cm-test/initrd.img\n  cm image add debian-12 --disk /srv/images/debian-12.qcow2"
    )]
    Add {
        name: String,
        /// Kernel of a kernel+initrd image.
        #[arg(long, requires = "initrd", conflicts_with = "disk")]
        kernel: Option<String>,
        /// Initrd of a kernel+initrd image.
        #[arg(long, requires = "kernel")]
        initrd: Option<String>,
        /// Kernel command line (kernel images).
        #[arg(long, requires = "kernel")]
        cmdline: Option<String>,
        /// A qcow2 or raw disk image.
        #[arg(long)]
        disk: Option<String>,
    },
    /// List images.
    #[command(after_help = "Example:\n  cm image list")]
    List,
    /// Show one image with its files' sizes and sha256.
    #[command(after_help = "Example:\n  cm image show cm-test")]
    Show { name: String },
    /// Delete an image no instance uses.
    #[command(after_help = "Example:\n  cm image delete cm-test")]
    Delete { name: String },
}

#[derive(Debug, Subcommand)]
pub enum FlavorCmd {
    /// List flavors.
    #[command(after_help = "Example:\n  cm flavor list")]
    List,
    /// Show one flavor.
    #[command(after_help = "Example:\n  cm flavor show m1.small")]
    Show { name: String },
    /// Define a flavor.
    #[command(after_help = "Example:\n  cm flavor create c1.big --memory 8G --vcpus 4 --disk 40")]
    Create {
        name: String,
        /// Memory (512, 512M, 2G).
        #[arg(long, value_parser = crate::units::parse_mib)]
        memory: u64,
        #[arg(long)]
        vcpus: u32,
        /// Minimum root disk in GiB.
        #[arg(long, default_value_t = 0)]
        disk: u64,
    },
    /// Delete a flavor that is not built in.
    #[command(after_help = "Example:\n  cm flavor delete c1.big")]
    Delete { name: String },
}

#[derive(Debug, Args)]
pub struct WaitArgs {
    /// Return the operation at once instead of waiting for it.
    #[arg(long)]
    pub no_wait: bool,
    /// Give up waiting after this many seconds (the action goes on).
    #[arg(long, default_value_t = 300)]
    pub wait_timeout: u64,
}

#[derive(Debug, Subcommand)]
pub enum InstanceCmd {
    /// Create an instance and start it.
    #[command(
        after_help = "Examples:\n  cm instance create web-1 --image cm-test --flavor m1.tiny\n  cm instance create db-1 --image debian-12 --memory 2G --vcpus 2 --host host2 --port 22:2222"
    )]
    Create {
        name: String,
        #[arg(long)]
        image: String,
        /// A flavor (cm flavor list); --memory/--vcpus override it.
        #[arg(long)]
        flavor: Option<String>,
        /// Memory (512, 512M, 2G).
        #[arg(long, value_parser = crate::units::parse_mib)]
        memory: Option<u64>,
        #[arg(long)]
        vcpus: Option<u32>,
        /// Place on this host.
        #[arg(long)]
        host: Option<String>,
        /// Forward a host TCP port to the guest: GUEST:HOST (repeatable).
        #[arg(long = "port", value_name = "GUEST:HOST")]
        ports: Vec<PortForward>,
        /// no, on-failure (default) or always.
        #[arg(long)]
        restart_policy: Option<RestartPolicy>,
        /// kvm, tcg or auto (default: KVM where a probe boot proved it works).
        #[arg(long)]
        accel: Option<Accel>,
        /// Seconds an ACPI shutdown may take before the VM is forced off.
        #[arg(long)]
        stop_timeout: Option<u32>,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// List instances.
    #[command(after_help = "Example:\n  cm instance list")]
    List,
    /// Show one instance.
    #[command(after_help = "Example:\n  cm instance show web-1")]
    Show { name: String },
    /// Start a stopped instance.
    #[command(after_help = "Example:\n  cm instance start web-1")]
    Start {
        name: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Stop: ACPI shutdown, forced off after the timeout.
    #[command(
        after_help = "Examples:\n  cm instance stop web-1\n  cm instance stop web-1 --timeout 5\n  cm instance stop web-1 --force"
    )]
    Stop {
        name: String,
        /// Power off at once, without asking the guest.
        #[arg(long)]
        force: bool,
        /// Seconds to wait for the guest before forcing it off.
        #[arg(long)]
        timeout: Option<u32>,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Reset a running instance.
    #[command(after_help = "Example:\n  cm instance reboot web-1")]
    Reboot {
        name: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Delete an instance with its disk and every file it had.
    #[command(after_help = "Example:\n  cm instance delete web-1")]
    Delete {
        name: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Print the serial console log.
    #[command(
        after_help = "Examples:\n  cm instance console web-1\n  cm instance console web-1 --bytes 4096"
    )]
    Console {
        name: String,
        /// Only the last N bytes.
        #[arg(long, default_value_t = 65536)]
        bytes: u64,
    },
}

#[derive(Debug, Subcommand)]
pub enum OperationCmd {
    /// Recent operations.
    #[command(after_help = "Example:\n  cm operation list")]
    List,
    /// One operation.
    #[command(after_help = "Example:\n  cm operation show 3f1c...")]
    Show { id: String },
    /// Wait for an operation to finish.
    #[command(after_help = "Example:\n  cm operation wait 3f1c...")]
    Wait {
        id: String,
        #[arg(long, default_value_t = 300)]
        wait_timeout: u64,
    },
}

#[derive(Debug, Subcommand)]
pub enum EventCmd {
    /// Events after a sequence number, oldest first.
    #[command(
        after_help = "Examples:\n  cm event list\n  cm event list --since 120 --type instance.state\n  cm event list --follow"
    )]
    List {
        #[arg(long, default_value_t = 0)]
        since: i64,
        /// Only this type (instance.state, host.state, ...).
        #[arg(long = "type")]
        kind: Option<String>,
        /// Keep printing new events as they happen.
        #[arg(long)]
        follow: bool,
    },
}
