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
    /// TOML file with any of: master, join_token, join_token_file, name,
    /// data_dir, accel, probe_kernel, kvm_probe_timeout_secs, forward_bind,
    /// memory_mib, qemu.
    #[arg(long, env = "CLOUDHOSTD_CONFIG")]
    pub config: Option<PathBuf>,
    /// The master's URL [default: http://127.0.0.1:8107].
    #[arg(long, env = "CLOUDHOSTD_MASTER")]
    pub master: Option<String>,
    /// The cloud's join token (cm host join-token), for the first start.
    #[arg(long, env = "CLOUDHOSTD_JOIN_TOKEN", hide_env_values = true)]
    pub join_token: Option<String>,
    /// A file holding the join token.
    #[arg(long, env = "CLOUDHOSTD_JOIN_TOKEN_FILE")]
    pub join_token_file: Option<PathBuf>,
    /// This host's name in the cloud [default: the hostname].
    #[arg(long, env = "CLOUDHOSTD_NAME")]
    pub name: Option<String>,
    /// Where VMs, disks and cached images live [default: /var/lib/cloudhostd as root].
    #[arg(long, env = "CLOUDHOSTD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
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
    /// Memory to offer, in MiB [default: all of it]. For sharing a machine.
    #[arg(long)]
    pub memory_mib: Option<u64>,
    /// The QEMU binary [default: qemu-system-x86_64].
    #[arg(long)]
    pub qemu: Option<PathBuf>,
    /// HOST:PORT of the master as guests reach it [default: 10.0.2.2:PORT
    /// when --master is on this machine (QEMU user-mode networking), else
    /// --master's host and port].
    #[arg(long)]
    pub guest_master: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    master: Option<String>,
    join_token: Option<String>,
    join_token_file: Option<PathBuf>,
    name: Option<String>,
    data_dir: Option<PathBuf>,
    accel: Option<String>,
    probe_kernel: Option<PathBuf>,
    kvm_probe_timeout_secs: Option<u64>,
    forward_bind: Option<String>,
    memory_mib: Option<u64>,
    qemu: Option<PathBuf>,
    guest_master: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub master: String,
    pub join_token: Option<String>,
    pub name: String,
    pub data_dir: PathBuf,
    pub accel: HostAccel,
    pub probe_kernel: Option<PathBuf>,
    pub kvm_probe_timeout: Duration,
    pub forward_bind: String,
    pub memory_mib: Option<u64>,
    pub qemu: PathBuf,
    pub guest_master: String,
}

use url::Host;

/// How a guest reaches the master at `master` (a URL): through QEMU's
/// user-mode gateway 10.0.2.2 when the master is on this machine.
pub fn guest_master_for(master: &str) -> Result<String, String> {
    let url = reqwest::Url::parse(master).map_err(|e| format!("--master {master}: {e}"))?;
    let port = url.port_or_known_default().unwrap_or(cm_api::DEFAULT_PORT);
    let host = match url.host() {
        Some(Host::Domain("localhost")) => "10.0.2.2".to_string(),
        Some(Host::Ipv4(ip)) if ip.is_loopback() => "10.0.2.2".to_string(),
        Some(Host::Ipv6(ip)) if ip.is_loopback() => "10.0.2.2".to_string(),
        Some(Host::Ipv6(ip)) => format!("[{ip}]"),
        Some(h) => h.to_string(),
        None => return Err(format!("--master {master} has no host")),
    };
    Ok(format!("{host}:{port}"))
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
        let token_file = args.join_token_file.clone().or(file.join_token_file);
        let join_token = match (args.join_token.clone().or(file.join_token), token_file) {
            (Some(t), _) => Some(t),
            (None, Some(f)) => Some(
                std::fs::read_to_string(&f)
                    .map_err(|e| {
                        anyhow::anyhow!("cannot read join token file {}: {e}", f.display())
                    })?
                    .trim()
                    .to_string(),
            ),
            (None, None) => None,
        };
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
        let guest_master = match args.guest_master.clone().or(file.guest_master) {
            Some(g) => g,
            None => guest_master_for(&master).map_err(|e| anyhow::anyhow!(e))?,
        };
        let data_dir = args
            .data_dir
            .clone()
            .or(file.data_dir)
            .unwrap_or_else(default_data_dir);
        let data_dir = std::path::absolute(&data_dir).unwrap_or(data_dir);
        Ok(Config {
            master,
            join_token,
            name,
            data_dir,
            accel,
            probe_kernel: args.probe_kernel.clone().or(file.probe_kernel),
            kvm_probe_timeout: Duration::from_secs(
                args.kvm_probe_timeout
                    .or(file.kvm_probe_timeout_secs)
                    .unwrap_or(10),
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
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guests_reach_a_local_master_through_the_user_mode_gateway() {
        assert_eq!(
            guest_master_for("http://127.0.0.1:8107").unwrap(),
            "10.0.2.2:8107"
        );
        assert_eq!(
            guest_master_for("http://localhost:9000/").unwrap(),
            "10.0.2.2:9000"
        );
        assert_eq!(
            guest_master_for("http://[::1]:8107").unwrap(),
            "10.0.2.2:8107"
        );
        assert_eq!(
            guest_master_for("http://10.1.2.3:8107").unwrap(),
            "10.1.2.3:8107"
        );
        assert_eq!(
            guest_master_for("http://master.example:8107").unwrap(),
            "master.example:8107"
        );
        assert!(guest_master_for("not a url").is_err());
    }
}
