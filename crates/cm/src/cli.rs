//! The command tree. Every command's `--help` ends with an example.

use clap::{Args, Parser, Subcommand};
use cm_api::instance::{Accel, PortForward, RestartPolicy};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "cm",
    version,
    about = "cloudmaster: VMs on your own hosts, and commands across whole fleets",
    after_help = "Examples:\n  cm host list\n  cm instance create web-1 --image cm-test --flavor m1.tiny\n  cm do all -- uptime\n\nThe master is found from --url/--token, CM_URL/CM_TOKEN, cm's settings file\n(--cm-config, CM_CONFIG, or ~/.config/cm/config.toml), or a master running on this machine.\nCalls are tried again for --retry-for seconds; changes run once (an Idempotency-Key).\n\nExit codes: 1 the master refused, 2 usage, 3 master unreachable (nothing applied),\n4 settings, 5 local, 6 an operation failed, 7 no answer to a change that may have\nbeen applied (the message says how to check). docs/cli.md has them all."
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
    /// cm's own settings file (url, token or token_file) [default: ~/.config/cm/config.toml]
    ///
    /// Not an instance's boot config: that is `cm instance create --config`.
    #[arg(
        long = "cm-config",
        value_name = "FILE",
        env = "CM_CONFIG",
        global = true
    )]
    pub cm_config: Option<PathBuf>,
    /// Print JSON for scripts instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// Seconds to keep trying a call the master does not answer (a restart,
    /// a lost connection); changes are sent once, with an idempotency key.
    #[arg(
        long,
        value_name = "SECS",
        env = "CM_RETRY_FOR",
        default_value_t = 30,
        global = true
    )]
    pub retry_for: u64,
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
    /// Volumes: disks on one host that outlive their instances.
    #[command(subcommand)]
    Volume(crate::commands::volume::VolumeCmd),
    /// Snapshots of volumes and of instances' root disks.
    #[command(subcommand)]
    Snapshot(crate::commands::snapshot::SnapshotCmd),
    /// Backups of volumes and of instances' root disks, kept outside them.
    #[command(subcommand)]
    Backup(crate::commands::backup::BackupCmd),
    /// Slow actions in progress or done.
    #[command(subcommand, name = "operation")]
    Operation(OperationCmd),
    /// The event log.
    #[command(subcommand)]
    Event(EventCmd),
    /// Boot-time configuration: the rendezvous cache of seed 003.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Deployables: assemblies and services kept healthy by the master.
    #[command(subcommand)]
    Deploy(DeployCmd),
    /// The admin token.
    #[command(subcommand)]
    Token(TokenCmd),
    #[command(flatten)]
    Fleet(cm_fleet::FleetCommand),
}

#[derive(Debug, Subcommand)]
pub enum HostCmd {
    /// List hosts with memory total / promised-free / real-free, vCPUs, state.
    #[command(after_help = "Example:\n  cm host list")]
    List,
    /// Show one host.
    #[command(after_help = "Example:\n  cm host show local")]
    Show { name: String },
    /// Keep new instances off a host (running ones stay).
    #[command(after_help = "Example:\n  cm host disable local")]
    Disable { name: String },
    /// Open a disabled host for new instances again.
    #[command(after_help = "Example:\n  cm host enable local")]
    Enable { name: String },
    /// Print the token hosts join with (cloudhostd --join-token-file FILE).
    #[command(
        after_help = "Examples:\n  cm host join-token > join.token\n  cm host join-token --rotate"
    )]
    JoinToken {
        /// Make a new token; the old one stops working at once.
        #[arg(long)]
        rotate: bool,
    },
    /// Forget a host: its token stops working, so its agent cannot come back
    /// by itself (it stops its VMs and waits; docs/host.md).
    #[command(
        visible_alias = "delete",
        after_help = "Examples:\n  cm host remove host1\n  cm host remove host1 --force   # forgets its instances too"
    )]
    Remove {
        name: String,
        /// Remove it even though instances are placed there: they are forgotten.
        #[arg(long)]
        force: bool,
    },
    /// Rebuild the instances of a dead host on other hosts, from their images.
    /// Their disks on the dead host are lost to them.
    #[command(
        after_help = "Examples:\n  cm host evacuate host1\n  cm host evacuate host1 --yes   # no question, for scripts"
    )]
    Evacuate {
        name: String,
        /// Do not ask: the disks are known to be lost.
        #[arg(long)]
        yes: bool,
        /// Evacuate a host that is not down (its VMs are stopped when it
        /// hears of it, and kept as orphans).
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// VMs a host keeps that are no instance of that host (stopped, files kept).
    #[command(
        after_help = "Examples:\n  cm host orphans local\n  cm host orphans local --purge\n  cm host orphans local --purge --id 3f1c..."
    )]
    Orphans {
        name: String,
        /// Delete their files (all of them, or those given with --id).
        #[arg(long)]
        purge: bool,
        /// Only this orphan (repeatable; with --purge).
        #[arg(long = "id", value_name = "ID", requires = "purge")]
        ids: Vec<String>,
        #[command(flatten)]
        wait: WaitArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCmd {
    /// Make a new admin token; the old one stops working at once. The master
    /// also writes it to its admin.token file.
    #[command(after_help = "Example:\n  cm token rotate")]
    Rotate,
}

#[derive(Debug, Subcommand)]
pub enum ImageCmd {
    /// Register an image: upload local files, or have the master fetch https:// URLs.
    #[command(
        after_help = "Examples:\n  cm image add tiny --kernel var/images/cm-test/vmlinuz --initrd var/images/cm-test/initrd.img\n  cm image add debian-12 --disk ./debian-12-genericcloud-amd64.qcow2\n  cm image add debian-12 --disk https://cloud.debian.org/images/cloud/bookworm/latest/debian-12-genericcloud-amd64.qcow2\n  cm image add debian-12 --disk debian-12.qcow2 --on-master    # from cloudmasterd --image-import-dir\n\nLocal files are uploaded (resumed after a broken connection; the master checks\ntheir sha256). https:// URLs are fetched by the master itself."
    )]
    Add(AddImage),
    /// Make a disk image of a stopped instance's root disk (flattened, with
    /// its sha256): usable on every host once made (docs/storage.md,
    /// "Images from instances"). The instance stays stopped meanwhile.
    #[command(after_help = "Example:\n  cm image create web-golden --from-instance web-1")]
    Create {
        name: String,
        /// The stopped instance whose root disk becomes the image.
        #[arg(long)]
        from_instance: String,
        #[command(flatten)]
        wait: crate::cli::WaitArgs,
    },
    /// List images.
    #[command(after_help = "Example:\n  cm image list")]
    List,
    /// Show one image with its files' sizes and sha256.
    #[command(after_help = "Example:\n  cm image show cm-test")]
    Show { name: String },
    /// Delete an image no instance uses.
    #[command(after_help = "Example:\n  cm image delete tiny")]
    Delete { name: String },
}

#[derive(Debug, Args)]
pub struct AddImage {
    pub name: String,
    /// Kernel of a kernel+initrd image: a local file, or an https:// URL.
    #[arg(long, requires = "initrd", conflicts_with = "disk")]
    pub kernel: Option<String>,
    /// Initrd of a kernel+initrd image: a local file, or an https:// URL.
    #[arg(long, requires = "kernel")]
    pub initrd: Option<String>,
    /// Kernel command line (kernel images).
    #[arg(long, requires = "kernel")]
    pub cmdline: Option<String>,
    /// A qcow2 or raw disk image: a local file, or an https:// URL.
    #[arg(long)]
    pub disk: Option<String>,
    /// The sha256 a file must have: HEX for --disk, kernel=HEX or
    /// initrd=HEX. Checked by the master (and by cm first for local files).
    #[arg(long = "sha256", value_name = "[ROLE=]HEX")]
    pub sha256: Vec<String>,
    /// The paths name files in the master's import directory
    /// (cloudmasterd --image-import-dir), not local files.
    #[arg(long)]
    pub on_master: bool,
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
    #[command(
        after_help = "Example:\n  cm flavor create c1.big --memory 8G --vcpus 4 --disk-gib 40"
    )]
    Create {
        name: String,
        /// Memory (512, 512M, 2G).
        #[arg(long, value_parser = crate::units::parse_mib)]
        memory: u64,
        #[arg(long)]
        vcpus: u32,
        /// Minimum root disk in GiB.
        #[arg(long = "disk-gib", value_name = "GIB", default_value_t = 0)]
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

/// Where `cm instance create` puts the instance, and the volumes it gets.
#[derive(Debug, Args)]
pub struct PlaceArgs {
    /// Place on this host.
    #[arg(long)]
    pub host: Option<String>,
    /// Attach this volume at boot (repeatable, in order); the instance
    /// runs on the volumes' host.
    #[arg(long = "volume", value_name = "NAME")]
    pub volumes: Vec<String>,
    /// Keep the root disk as a volume named NAME-root, made from the
    /// image: it survives the instance (default: an ephemeral root,
    /// deleted with the instance).
    #[arg(long, conflicts_with = "root_volume")]
    pub persistent: bool,
    /// Boot from this volume (made by --persistent, or a clone of one);
    /// the instance runs its image on its host: leave --image out.
    #[arg(long, value_name = "NAME")]
    pub root_volume: Option<String>,
}

/// `cm instance create`'s heartbeat policy (docs/host.md, "Heartbeat watchdog").
#[derive(Debug, Args)]
pub struct HeartbeatArgs {
    /// Judge the guest's heartbeats: its host reports it suspect once a
    /// beat is missed, silent after --heartbeat-timeout (500ms, 1s, 2m).
    /// The guest's config sets its beat ([agent] heartbeat_ms).
    #[arg(long, value_name = "DURATION", value_parser = cm_api::time::Dur::parse,
          requires = "heartbeat_timeout")]
    pub heartbeat_interval: Option<cm_api::time::Dur>,
    /// Silent after this long without a heartbeat.
    #[arg(long, value_name = "DURATION", value_parser = cm_api::time::Dur::parse,
          requires = "heartbeat_interval")]
    pub heartbeat_timeout: Option<cm_api::time::Dur>,
    /// Before the first heartbeat of a boot, silent only after this long
    /// (default 120s).
    #[arg(long, value_name = "DURATION", value_parser = cm_api::time::Dur::parse,
          requires = "heartbeat_interval")]
    pub boot_grace: Option<cm_api::time::Dur>,
}

#[derive(Debug, Subcommand)]
pub enum InstanceCmd {
    /// Create an instance and start it.
    #[command(
        after_help = "Examples:\n  cm instance create web-1 --image cm-test --flavor m1.tiny\n  cm instance create db-1 --image cm-test --memory 256M --vcpus 2 --host local --port 22:2222\n  cm instance create db-2 --image debian-12 --flavor m1.small --persistent\n  cm instance create db-3 --root-volume db-2-root --flavor m1.small\n\nThe root disk is ephemeral by default (an overlay on the image, deleted with\nthe instance); --persistent keeps it as the volume NAME-root, which\n--root-volume boots again (docs/storage.md, \"Persistent roots\")."
    )]
    Create {
        name: String,
        /// The image to boot (not with --root-volume: the volume's own).
        #[arg(long, required_unless_present = "root_volume")]
        image: Option<String>,
        /// A flavor (cm flavor list); --memory/--vcpus override it.
        #[arg(long)]
        flavor: Option<String>,
        /// Memory (512, 512M, 2G).
        #[arg(long, value_parser = crate::units::parse_mib)]
        memory: Option<u64>,
        #[arg(long)]
        vcpus: Option<u32>,
        #[command(flatten)]
        place: Box<PlaceArgs>,
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
        #[arg(long, value_name = "SECS")]
        stop_timeout: Option<u32>,
        /// A boot-time config for the guest (any format; cm-guest applies its own
        /// TOML format, cloud-init images take #cloud-config).
        #[arg(long, value_name = "FILE", conflicts_with = "dynamic_domain")]
        config: Option<PathBuf>,
        /// Boot as a dynamic guest of this domain: it gets a free record from
        /// assign_dynamic, keeps it across reboots, and frees it when deleted.
        #[arg(long, value_name = "DOMAIN")]
        dynamic_domain: Option<String>,
        #[command(flatten)]
        heartbeat: Box<HeartbeatArgs>,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// List instances.
    #[command(after_help = "Example:\n  cm instance list")]
    List,
    /// Show one instance.
    #[command(after_help = "Example:\n  cm instance show web-1")]
    Show { name: String },
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
    /// Stop: ACPI shutdown, forced off after the timeout.
    #[command(
        after_help = "Examples:\n  cm instance stop web-1\n  cm instance stop web-1 --stop-timeout 5\n  cm instance stop web-1 --force"
    )]
    Stop {
        name: String,
        /// Power off at once, without asking the guest.
        #[arg(long)]
        force: bool,
        /// Seconds to wait for the guest before forcing it off (this time only;
        /// the instance's own is set by `cm instance create --stop-timeout`).
        #[arg(long = "stop-timeout", value_name = "SECS")]
        timeout: Option<u32>,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Start a stopped instance.
    #[command(after_help = "Example:\n  cm instance start web-1")]
    Start {
        name: String,
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
}

#[derive(Debug, Subcommand)]
pub enum ConfigCmd {
    /// Register a config under a uuid; prints its secret (once) and boot string.
    #[command(
        alias = "pre_register",
        after_help = "Examples:\n  cm config pre-register --file web.toml\n  cm config pre-register --uuid 3f1c... --file web.toml --domain web\n  cm config pre-register --file web.toml --domain web --dynamic"
    )]
    PreRegister {
        /// The record's uuid [default: a new one].
        #[arg(long)]
        uuid: Option<String>,
        /// The config, from a file (any bytes).
        #[arg(long, conflicts_with = "text")]
        file: Option<PathBuf>,
        /// The config, given inline.
        #[arg(long)]
        text: Option<String>,
        #[arg(long)]
        domain: Option<String>,
        /// Handed out by assign_dynamic (the domain must exist).
        #[arg(long)]
        dynamic: bool,
        /// Initial parameter (repeatable): KEY=VALUE.
        #[arg(long = "param", value_name = "KEY=VALUE")]
        params: Vec<String>,
    },
    /// List records (never their secrets).
    #[command(after_help = "Examples:\n  cm config list\n  cm config list --domain web")]
    List {
        #[arg(long)]
        domain: Option<String>,
    },
    /// Show a record; --raw prints only its config body.
    #[command(
        after_help = "Examples:\n  cm config show 3f1c...\n  cm config show 3f1c... --raw > config.toml"
    )]
    Show {
        uuid: String,
        #[arg(long)]
        raw: bool,
    },
    /// Give a record a new config body; its guest applies it within seconds.
    #[command(after_help = "Example:\n  cm config set 3f1c... --file web-v2.toml")]
    Set {
        uuid: String,
        #[arg(long, conflicts_with = "text")]
        file: Option<PathBuf>,
        #[arg(long)]
        text: Option<String>,
    },
    /// Delete a record (the seed's remove).
    #[command(after_help = "Example:\n  cm config remove 3f1c...")]
    Remove { uuid: String },
    /// Delete records not updated for SECS seconds (never those of existing instances).
    #[command(
        alias = "remove_stale",
        after_help = "Example:\n  cm config remove-stale --older-than 86400"
    )]
    RemoveStale {
        /// Seconds since a record was last updated (the seed's `timeout`).
        #[arg(long = "older-than", value_name = "SECS")]
        timeout: u32,
    },
    /// A guest's update_cache, by hand (with the record's secret).
    #[command(
        alias = "update_cache",
        after_help = "Example:\n  cm config update-cache 3f1c... --secret S --trust-key K --status configured --addr 10.0.0.5 --param role=web"
    )]
    UpdateCache {
        uuid: String,
        #[arg(long, env = "CM_CONFIG_SECRET", hide_env_values = true)]
        secret: String,
        #[arg(long)]
        status: String,
        #[arg(long)]
        reason: Option<String>,
        #[arg(long)]
        addr: Option<String>,
        #[arg(long = "param", value_name = "KEY=VALUE")]
        params: Vec<String>,
        #[arg(long)]
        trust_key: String,
    },
    /// A guest's assign_dynamic, by hand (with the domain's secret).
    #[command(
        alias = "assign_dynamic",
        after_help = "Example:\n  cm config assign-dynamic --domain web --domain-secret S"
    )]
    AssignDynamic {
        #[arg(long)]
        domain: String,
        /// The domain's secret (printed by `cm config domain create`).
        #[arg(
            long = "domain-secret",
            env = "CM_DOMAIN_SECRET",
            hide_env_values = true
        )]
        secret: String,
    },
    /// Domains group records; dynamic guests use their domain's secret.
    #[command(subcommand)]
    Domain(DomainCmd),
}

#[derive(Debug, Subcommand)]
pub enum DomainCmd {
    /// Create a domain; prints its secret (once) and a dynamic guest's boot string.
    #[command(after_help = "Example:\n  cm config domain create web")]
    Create { name: String },
    /// List domains with their free dynamic records.
    #[command(after_help = "Example:\n  cm config domain list")]
    List,
    /// Delete a domain without dynamic records.
    #[command(after_help = "Example:\n  cm config domain delete web")]
    Delete { name: String },
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
        after_help = "Examples:\n  cm event list\n  cm event list --since 5 --type instance.state\n  cm event list --follow"
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

#[derive(Debug, Subcommand)]
pub enum DeployCmd {
    /// Apply a spec (YAML, TOML, JSON or pacemaker-cloud XML): a new
    /// deployable or a new generation; prints what changes.
    #[command(
        after_help = "Examples:\n  cm deploy apply --file shop.yaml\n  cm deploy apply --file shop.xml\n  cm deploy apply --file spec.txt --format toml"
    )]
    Apply {
        /// The spec file; its extension gives the format.
        #[arg(long = "file", value_name = "FILE")]
        file: std::path::PathBuf,
        /// yaml, toml, json or xml (default: from the file's extension).
        #[arg(long)]
        format: Option<String>,
    },
    /// What applying a spec would change; nothing is written.
    #[command(after_help = "Example:\n  cm deploy diff --file shop.yaml")]
    Diff {
        #[arg(long = "file", value_name = "FILE")]
        file: std::path::PathBuf,
        #[arg(long)]
        format: Option<String>,
    },
    /// Deployables with their generation, state and slots.
    #[command(after_help = "Example:\n  cm deploy list")]
    List,
    /// One deployable and its slots.
    #[command(
        after_help = "Examples:\n  cm deploy show shop\n  cm deploy show shop --source --generation 1"
    )]
    Show {
        name: String,
        /// Print the spec as it was applied instead.
        #[arg(long)]
        source: bool,
        /// With --source: this generation (default: the one in force).
        #[arg(long, requires = "source")]
        generation: Option<u64>,
    },
    /// A deployable's events: `time object action from→to "reason"`.
    #[command(after_help = "Examples:\n  cm deploy events shop\n  cm deploy events shop --follow")]
    Events {
        name: String,
        #[arg(long, default_value_t = 0)]
        since: i64,
        /// Keep printing new events as they happen.
        #[arg(long)]
        follow: bool,
    },
    /// Delete a deployable; the engine removes its instances.
    #[command(after_help = "Example:\n  cm deploy delete shop")]
    Delete { name: String },
    /// Apply an earlier generation's spec again, as a new generation.
    #[command(
        after_help = "Examples:\n  cm deploy rollback shop\n  cm deploy rollback shop --to-generation 1"
    )]
    Rollback {
        name: String,
        /// Default: the generation the last rollout started from.
        #[arg(long)]
        to_generation: Option<u64>,
    },
    /// Let the engine heal a failed slot again (its counters cleared), once
    /// its cause is fixed; its moved services come back when it is healthy.
    #[command(after_help = "Examples:\n  cm deploy repair shop web-1\n  cm deploy repair shop")]
    Repair {
        name: String,
        /// The slot (`web-1`); default: every failed slot.
        slot: Option<String>,
    },
}
