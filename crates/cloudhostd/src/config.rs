//! The host agent's settings: flags, environment (`CLOUDHOSTD_*`), then
//! the TOML config file, then defaults.

use crate::accel::HostAccel;
use clap::Parser;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(
    name = "cloudhostd",
    version,
    about = "The cloudmaster host agent: runs VMs with QEMU and reports to the master",
    after_help = "Example:\n  cloudhostd --master http://10.0.0.1:8107 --join-token-file /etc/cloudmaster/join.token --data-dir /var/lib/cloudhostd"
)]
pub struct Args {
    /// TOML file with any of: master, join_token_file, name, data_dir, accel,
    /// probe_kernel, kvm_probe_timeout_secs, forward_bind, memory_mib, qemu,
    /// guest_master, guest_network, console_log_max, volumes_dir,
    /// backups_dir, backup_ssh_key, backup_known_hosts.
    #[arg(long, env = "CLOUDHOSTD_CONFIG")]
    pub config: Option<PathBuf>,
    /// The master's URL [default: http://127.0.0.1:8107].
    #[arg(long, env = "CLOUDHOSTD_MASTER")]
    pub master: Option<String>,
    /// Refused: a token on the command line is visible to every user in ps.
    #[arg(long, hide = true)]
    pub join_token: Option<String>,
    /// A file holding the cloud's join token (cm host join-token), read when
    /// the host joins. Or give the token in CLOUDHOSTD_JOIN_TOKEN.
    #[arg(long, env = "CLOUDHOSTD_JOIN_TOKEN_FILE")]
    pub join_token_file: Option<PathBuf>,
    /// Join the cloud again as a new host, replacing DATA/host.json. Needed
    /// after the master refused this host's token (it was removed, or the
    /// master's store was replaced); refused while the name is registered.
    #[arg(long)]
    pub rejoin: bool,
    /// This host's name in the cloud [default: the hostname].
    #[arg(long, env = "CLOUDHOSTD_NAME")]
    pub name: Option<String>,
    /// Where VMs, disks and cached images live [default: /var/lib/cloudhostd as root].
    #[arg(long, env = "CLOUDHOSTD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Where volume files live (docs/storage.md); the free disk space this
    /// host reports is this file system's [default: DATA/volumes].
    #[arg(long, env = "CLOUDHOSTD_VOLUMES_DIR")]
    pub volumes_dir: Option<PathBuf>,
    /// auto (probe KVM, fall back to TCG), kvm or tcg [default: auto].
    #[arg(long)]
    pub accel: Option<HostAccel>,
    /// A kernel to boot for the KVM probe [default: the host's /boot/vmlinuz or a cached image's].
    #[arg(long)]
    pub probe_kernel: Option<PathBuf>,
    /// Seconds the KVM probe may take [default: 10].
    #[arg(long)]
    pub kvm_probe_timeout: Option<u64>,
    /// Address port forwards listen on [default: 0.0.0.0].
    #[arg(long)]
    pub forward_bind: Option<String>,
    /// The IP address other machines reach this host's port forwards at,
    /// as the master tells them (a deployable's `ipaddress`, balancer pool
    /// members) [default: --forward-bind when it is not a wildcard, else
    /// 127.0.0.1].
    #[arg(long, value_name = "IP")]
    pub advertise_addr: Option<std::net::IpAddr>,
    /// Memory to offer, in MiB [default: all of it]. For sharing a machine.
    #[arg(long)]
    pub memory_mib: Option<u64>,
    /// The QEMU binary [default: qemu-system-x86_64].
    #[arg(long)]
    pub qemu: Option<PathBuf>,
    /// HOST:PORT of the master as guests reach it [default: 10.0.2.2 and
    /// --master's port: the boot proxy, which passes only the guest routes
    /// to the master, wherever it is].
    #[arg(long)]
    pub guest_master: Option<String>,
    /// What a guest's network reaches: `restricted` (only the master's guest
    /// routes, through the boot proxy) or `nat` (also the internet, and,
    /// through QEMU's gateway, every port on this host's loopback)
    /// [default: restricted]. See docs/host.md.
    #[arg(long)]
    pub guest_network: Option<GuestNetwork>,
    /// The most each VM's serial log keeps, e.g. 4M, 512K [default: 4M;
    /// at least 64K]. The oldest output goes first.
    #[arg(long)]
    pub console_log_max: Option<String>,
    /// Where backup chains are kept, one directory each (docs/storage.md,
    /// "Backups"): a file system of its own keeps them when the volumes'
    /// is lost [default: DATA/backups].
    #[arg(long, env = "CLOUDHOSTD_BACKUPS_DIR", value_name = "DIR")]
    pub backups_dir: Option<PathBuf>,
    /// The private key ssh uses to copy backup chains to `ssh://` targets
    /// (docs/host.md, "Backup chains over ssh") [default: ssh's own, of
    /// the user this agent runs as].
    #[arg(long, value_name = "FILE")]
    pub backup_ssh_key: Option<PathBuf>,
    /// Trust only the host keys in this known_hosts file for `ssh://`
    /// backup targets [default: ssh's own known_hosts; a new target's key
    /// is learnt on first use and refused if it changes].
    #[arg(long, value_name = "FILE")]
    pub backup_known_hosts: Option<PathBuf>,
    /// Internal: what QEMU runs for each guest connection to the master
    /// (relay.rs); not for people.
    #[arg(long, hide = true)]
    pub guestfwd_relay: Option<PathBuf>,
    #[command(flatten)]
    pub sim: crate::sim::SimArgs,
}

/// What a guest's user-mode network reaches (docs/host.md, "Guest network").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestNetwork {
    /// QEMU's `restrict=on`: no NAT, nothing on the host but the boot proxy.
    Restricted,
    /// NAT to the internet; the host's loopback is reachable too.
    Nat,
}

impl std::str::FromStr for GuestNetwork {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "restricted" => Ok(GuestNetwork::Restricted),
            "nat" => Ok(GuestNetwork::Nat),
            _ => Err(format!(
                "guest network must be restricted or nat, got '{s}'"
            )),
        }
    }
}

/// The serial log's cap when none is set.
pub const DEFAULT_CONSOLE_LOG_MAX: u64 = 4 << 20;
/// The smallest cap accepted: a boot's messages must fit.
pub const MIN_CONSOLE_LOG_MAX: u64 = 64 << 10;

/// `4M`, `512K`, `1G` or plain bytes (binary units).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, unit) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => t.split_at(i),
        None => (t, ""),
    };
    let shift = match unit
        .to_ascii_uppercase()
        .trim_end_matches("IB")
        .trim_end_matches('B')
    {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        _ => return Err(format!("'{s}' is not a size (e.g. 4M, 512K)")),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a size (e.g. 4M, 512K)"))?;
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("'{s}' is too large"))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    master: Option<String>,
    /// Refused, with a message saying what to use instead.
    join_token: Option<toml::Value>,
    join_token_file: Option<PathBuf>,
    name: Option<String>,
    data_dir: Option<PathBuf>,
    volumes_dir: Option<PathBuf>,
    accel: Option<String>,
    probe_kernel: Option<PathBuf>,
    kvm_probe_timeout_secs: Option<u64>,
    forward_bind: Option<String>,
    advertise_addr: Option<std::net::IpAddr>,
    memory_mib: Option<u64>,
    qemu: Option<PathBuf>,
    guest_master: Option<String>,
    guest_network: Option<String>,
    console_log_max: Option<String>,
    backups_dir: Option<PathBuf>,
    backup_ssh_key: Option<PathBuf>,
    backup_known_hosts: Option<PathBuf>,
}

/// The environment variable a join token may be given in.
pub const JOIN_TOKEN_ENV: &str = "CLOUDHOSTD_JOIN_TOKEN";

/// The longest join token file read (a token is 68 bytes).
const MAX_TOKEN_FILE: u64 = 4096;

#[derive(Debug, Clone)]
pub struct Config {
    pub master: String,
    pub join_token_file: Option<PathBuf>,
    pub rejoin: bool,
    pub name: String,
    pub data_dir: PathBuf,
    pub volumes_dir: PathBuf,
    pub accel: HostAccel,
    pub probe_kernel: Option<PathBuf>,
    pub kvm_probe_timeout: Duration,
    pub forward_bind: String,
    /// Where other machines reach the port forwards (`HostFacts.forward_addr`).
    pub forward_addr: String,
    pub memory_mib: Option<u64>,
    pub qemu: PathBuf,
    pub guest_master: String,
    pub guest_network: GuestNetwork,
    /// Bytes each VM's serial log keeps at most.
    pub console_log_max: u64,
    /// Where backup chains are kept.
    pub backups_dir: PathBuf,
    /// How backup chains are copied to `ssh://` targets.
    pub backup_ssh: crate::backup::mirror::SshSettings,
}

/// How a guest reaches the master at `master` (a URL): at 10.0.2.2 on the
/// master's port, where QEMU hands the connection to this agent's boot
/// proxy (vm/bootproxy.rs), which passes the guest routes on to `master`.
pub fn guest_master_for(master: &str) -> Result<String, String> {
    let url = reqwest::Url::parse(master).map_err(|e| format!("--master {master}: {e}"))?;
    if url.host().is_none() {
        return Err(format!("--master {master} has no host"));
    }
    let port = url.port_or_known_default().unwrap_or(cm_api::DEFAULT_PORT);
    Ok(format!("{}:{port}", crate::vm::guestnet::PROXY_ADDR))
}

/// A `--guest-master` given by hand: `HOST:PORT`, and with a restricted
/// network only the boot proxy's address can work.
fn check_guest_master(g: &str, network: GuestNetwork) -> Result<(), String> {
    let Some((host, port)) = g.rsplit_once(':') else {
        return Err(format!("--guest-master {g}: expected HOST:PORT"));
    };
    if host.is_empty() || port.parse::<u16>().map(|p| p == 0).unwrap_or(true) {
        return Err(format!("--guest-master {g}: expected HOST:PORT"));
    }
    if network == GuestNetwork::Restricted && host != crate::vm::guestnet::PROXY_ADDR {
        return Err(format!(
            "--guest-master {g}: with --guest-network restricted guests reach only {}:PORT (the boot proxy)",
            crate::vm::guestnet::PROXY_ADDR
        ));
    }
    Ok(())
}

/// Where other machines reach this host's port forwards: `--advertise-addr`,
/// else `--forward-bind` when it is one address (not a wildcard such as
/// 0.0.0.0), else 127.0.0.1 (a one-machine cloud).
pub fn forward_addr(advertise: Option<std::net::IpAddr>, bind: Option<&str>) -> String {
    let bound = bind
        .and_then(|b| b.parse::<std::net::IpAddr>().ok())
        .filter(|ip| !ip.is_unspecified());
    advertise
        .or(bound)
        .map_or_else(|| "127.0.0.1".to_string(), |ip| ip.to_string())
}

fn hostname() -> String {
    let raw =
        std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_else(|_| "host".into());
    let name: String = raw
        .trim()
        .split('.')
        .next()
        .unwrap_or("host")
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let name = name.trim_matches('-').to_string();
    if name.is_empty() {
        "host".into()
    } else {
        name
    }
}

fn default_data_dir() -> PathBuf {
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } == 0 {
        return PathBuf::from("/var/lib/cloudhostd");
    }
    std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".local/share/cloudhostd"))
        .unwrap_or_else(|| PathBuf::from("cloudhostd-data"))
}

impl Config {
    pub fn load(args: &Args) -> anyhow::Result<Config> {
        let file: FileConfig = match &args.config {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", p.display()))?;
                toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?
            }
            None => FileConfig::default(),
        };
        if args.join_token.is_some() {
            anyhow::bail!(
                "--join-token is not accepted: a token on the command line is visible to every \
                 user in ps. Put it in a file readable only by this user and give \
                 --join-token-file FILE, or set {JOIN_TOKEN_ENV}"
            );
        }
        if file.join_token.is_some() {
            anyhow::bail!(
                "join_token in the config file is not read: put the token in a file readable \
                 only by this user and name it with join_token_file, or set {JOIN_TOKEN_ENV}"
            );
        }
        let join_token_file = args.join_token_file.clone().or(file.join_token_file);
        let accel = match (args.accel, file.accel) {
            (Some(a), _) => a,
            (None, Some(a)) => a.parse().map_err(|e: String| anyhow::anyhow!(e))?,
            (None, None) => HostAccel::Auto,
        };
        let name = args.name.clone().or(file.name).unwrap_or_else(hostname);
        cm_api::validate::name("name", &name, false).map_err(|e| anyhow::anyhow!("{e}"))?;
        let master = args
            .master
            .clone()
            .or(file.master)
            .unwrap_or_else(|| format!("http://127.0.0.1:{}", cm_api::DEFAULT_PORT));
        let guest_network = match (args.guest_network, file.guest_network) {
            (Some(n), _) => n,
            (None, Some(n)) => n.parse().map_err(|e: String| anyhow::anyhow!(e))?,
            (None, None) => GuestNetwork::Restricted,
        };
        let guest_master = match args.guest_master.clone().or(file.guest_master) {
            Some(g) => {
                check_guest_master(&g, guest_network).map_err(|e| anyhow::anyhow!(e))?;
                g
            }
            None => guest_master_for(&master).map_err(|e| anyhow::anyhow!(e))?,
        };
        let console_log_max = match args.console_log_max.clone().or(file.console_log_max) {
            Some(s) => parse_size(&s).map_err(|e| anyhow::anyhow!("--console-log-max: {e}"))?,
            None => DEFAULT_CONSOLE_LOG_MAX,
        };
        if console_log_max < MIN_CONSOLE_LOG_MAX {
            anyhow::bail!("--console-log-max must be at least 64K");
        }
        let data_dir = args
            .data_dir
            .clone()
            .or(file.data_dir)
            .unwrap_or_else(default_data_dir);
        let data_dir = std::path::absolute(&data_dir).unwrap_or(data_dir);
        let volumes_dir = args
            .volumes_dir
            .clone()
            .or(file.volumes_dir)
            .unwrap_or_else(|| data_dir.join("volumes"));
        let volumes_dir = std::path::absolute(&volumes_dir).unwrap_or(volumes_dir);
        let backups_dir = args
            .backups_dir
            .clone()
            .or(file.backups_dir)
            .unwrap_or_else(|| data_dir.join("backups"));
        let backups_dir = std::path::absolute(&backups_dir).unwrap_or(backups_dir);
        let readable = |flag: &str, f: Option<PathBuf>| -> anyhow::Result<Option<PathBuf>> {
            let Some(f) = f else { return Ok(None) };
            let f = std::path::absolute(&f).unwrap_or(f);
            std::fs::File::open(&f).map_err(|e| anyhow::anyhow!("{flag} {}: {e}", f.display()))?;
            Ok(Some(f))
        };
        let backup_ssh = crate::backup::mirror::SshSettings {
            key: readable(
                "--backup-ssh-key",
                args.backup_ssh_key.clone().or(file.backup_ssh_key),
            )?,
            known_hosts: readable(
                "--backup-known-hosts",
                args.backup_known_hosts.clone().or(file.backup_known_hosts),
            )?,
        };
        Ok(Config {
            master,
            join_token_file,
            rejoin: args.rejoin,
            name,
            data_dir,
            volumes_dir,
            accel,
            probe_kernel: args.probe_kernel.clone().or(file.probe_kernel),
            kvm_probe_timeout: Duration::from_secs(
                args.kvm_probe_timeout
                    .or(file.kvm_probe_timeout_secs)
                    .unwrap_or(10),
            ),
            forward_addr: forward_addr(
                args.advertise_addr.or(file.advertise_addr),
                args.forward_bind
                    .as_deref()
                    .or(file.forward_bind.as_deref()),
            ),
            forward_bind: args
                .forward_bind
                .clone()
                .or(file.forward_bind)
                .unwrap_or_else(|| "0.0.0.0".into()),
            memory_mib: args.memory_mib.or(file.memory_mib),
            qemu: args
                .qemu
                .clone()
                .or(file.qemu)
                .unwrap_or_else(|| PathBuf::from("qemu-system-x86_64")),
            guest_master,
            guest_network,
            console_log_max,
            backups_dir,
            backup_ssh,
        })
    }
}

impl Config {
    /// The join token: from `--join-token-file`, else `CLOUDHOSTD_JOIN_TOKEN`.
    pub fn join_token(&self) -> anyhow::Result<String> {
        let token = match &self.join_token_file {
            Some(f) => read_token_file(f)?,
            None => match std::env::var(JOIN_TOKEN_ENV) {
                Ok(t) => t.trim().to_string(),
                Err(_) => anyhow::bail!(
                    "this host has not joined a cloud: give --join-token-file FILE or set \
                     {JOIN_TOKEN_ENV} (cm host join-token on the master prints the token)"
                ),
            },
        };
        if token.is_empty() {
            anyhow::bail!("the join token is empty");
        }
        Ok(token)
    }
}

fn read_token_file(f: &std::path::Path) -> anyhow::Result<String> {
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;
    let file = std::fs::File::open(f)
        .map_err(|e| anyhow::anyhow!("cannot read join token file {}: {e}", f.display()))?;
    if let Ok(m) = file.metadata() {
        if m.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                "join token file {} is readable by other users (chmod 600 it)",
                f.display()
            );
        }
    }
    let mut text = String::new();
    file.take(MAX_TOKEN_FILE)
        .read_to_string(&mut text)
        .map_err(|e| anyhow::anyhow!("cannot read join token file {}: {e}", f.display()))?;
    Ok(text.trim().to_string())
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
