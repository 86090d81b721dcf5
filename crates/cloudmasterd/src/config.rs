//! The master's settings: flags, environment (`CLOUDMASTERD_*`), then the
//! TOML config file, then defaults.

use crate::state::{ImageSettings, Settings};
use clap::Parser;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(
    name = "cloudmasterd",
    version,
    about = "The cloudmaster master: REST API on :8107, store, scheduler, reconciler",
    after_help = "Example:\n  cloudmasterd --data-dir /var/lib/cloudmaster --listen 127.0.0.1:8107"
)]
pub struct Args {
    /// TOML file with any of: listen, data_dir, url, report_interval_secs,
    /// host_down_after_secs, host_reserved_mib, stop_timeout_secs,
    /// guest_addr, remove_stale_after_secs, image_import_dir,
    /// image_import_ca, image_import_timeout_secs, image_max_mib,
    /// upload_expire_after_secs.
    #[arg(long, env = "CLOUDMASTERD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address of the REST API [default: 127.0.0.1:8107].
    #[arg(long, env = "CLOUDMASTERD_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Where the store, images and tokens live [default: /var/lib/cloudmaster as root].
    #[arg(long, env = "CLOUDMASTERD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// The URL clients on this machine use [default: from --listen].
    #[arg(long, env = "CLOUDMASTERD_URL")]
    pub url: Option<String>,
    /// Seconds between host reports [default: 3].
    #[arg(long)]
    pub report_interval: Option<u64>,
    /// Seconds of silence after which a host is down [default: 15].
    #[arg(long)]
    pub host_down_after: Option<u64>,
    /// Memory kept back on each new host, in MiB [default: 512].
    #[arg(long)]
    pub host_reserved_mib: Option<u64>,
    /// Default ACPI shutdown timeout of new instances, seconds [default: 30].
    #[arg(long)]
    pub stop_timeout: Option<u32>,
    /// HOST:PORT as guests reach the master [default: 10.0.2.2:PORT when
    /// listening on loopback: QEMU user-mode networking's view of the host].
    #[arg(long, env = "CLOUDMASTERD_GUEST_ADDR")]
    pub guest_addr: Option<String>,
    /// Remove config records not updated for this many seconds, every
    /// minute (records of existing instances are kept) [default: never].
    #[arg(long)]
    pub remove_stale_after: Option<u64>,
    /// Make a new admin token (the old one stops working) and exit.
    #[arg(long)]
    pub reset_admin_token: bool,
    /// The one directory whose files `POST /v1/images` may name by path
    /// (`{"path": ...}`); without it, master-side paths are refused and
    /// images are uploaded [default: none].
    #[arg(long, env = "CLOUDMASTERD_IMAGE_IMPORT_DIR")]
    pub image_import_dir: Option<PathBuf>,
    /// A CA certificate (PEM) trusted for https:// image imports, besides
    /// the usual public roots.
    #[arg(long, env = "CLOUDMASTERD_IMAGE_IMPORT_CA")]
    pub image_import_ca: Option<PathBuf>,
    /// Seconds an https:// image import may take [default: 3600].
    #[arg(long)]
    pub image_import_timeout: Option<u64>,
    /// The largest image file accepted, in MiB [default: 65536].
    #[arg(long)]
    pub image_max_mib: Option<u64>,
    /// Remove an unfinished or unused upload after this many seconds
    /// without activity [default: 86400].
    #[arg(long)]
    pub upload_expire_after: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    url: Option<String>,
    report_interval_secs: Option<u64>,
    host_down_after_secs: Option<u64>,
    host_reserved_mib: Option<u64>,
    stop_timeout_secs: Option<u32>,
    guest_addr: Option<String>,
    remove_stale_after_secs: Option<u64>,
    image_import_dir: Option<PathBuf>,
    image_import_ca: Option<PathBuf>,
    image_import_timeout_secs: Option<u64>,
    image_max_mib: Option<u64>,
    upload_expire_after_secs: Option<u64>,
}

pub struct Config {
    pub listen: SocketAddr,
    pub url: String,
    pub settings: Settings,
}

fn default_data_dir() -> PathBuf {
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } == 0 {
        return PathBuf::from("/var/lib/cloudmaster");
    }
    std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".local/share/cloudmaster"))
        .unwrap_or_else(|| PathBuf::from("cloudmaster-data"))
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
        let listen = args
            .listen
            .or(file.listen)
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], cm_api::DEFAULT_PORT)));
        let data_dir = args
            .data_dir
            .clone()
            .or(file.data_dir)
            .unwrap_or_else(default_data_dir);
        let data_dir = std::path::absolute(&data_dir).unwrap_or(data_dir);
        let url = args.url.clone().or(file.url).unwrap_or_else(|| {
            let host = if listen.ip().is_unspecified() {
                "127.0.0.1".to_string()
            } else if listen.is_ipv6() {
                format!("[{}]", listen.ip())
            } else {
                listen.ip().to_string()
            };
            format!("http://{host}:{}", listen.port())
        });
        let secs = |a: Option<u64>, f: Option<u64>, d: u64| {
            Duration::from_secs(a.or(f).unwrap_or(d).max(1))
        };
        let report_interval = secs(args.report_interval, file.report_interval_secs, 3);
        let host_down_after = secs(args.host_down_after, file.host_down_after_secs, 15);
        if host_down_after <= report_interval {
            anyhow::bail!(
                "host_down_after ({}s) must be longer than report_interval ({}s)",
                host_down_after.as_secs(),
                report_interval.as_secs()
            );
        }
        Ok(Config {
            listen,
            url,
            settings: Settings {
                data_dir,
                report_interval,
                host_down_after,
                host_reserved_mib: args
                    .host_reserved_mib
                    .or(file.host_reserved_mib)
                    .unwrap_or(512),
                stop_timeout_secs: args.stop_timeout.or(file.stop_timeout_secs).unwrap_or(30),
                guest_addr: args
                    .guest_addr
                    .clone()
                    .or(file.guest_addr)
                    .unwrap_or_else(|| {
                        if listen.ip().is_loopback() || listen.ip().is_unspecified() {
                            format!("10.0.2.2:{}", listen.port())
                        } else if listen.is_ipv6() {
                            format!("[{}]:{}", listen.ip(), listen.port())
                        } else {
                            format!("{}:{}", listen.ip(), listen.port())
                        }
                    }),
                remove_stale_after: args
                    .remove_stale_after
                    .or(file.remove_stale_after_secs)
                    .filter(|s| *s > 0)
                    .map(Duration::from_secs),
                images: ImageSettings {
                    import_dir: args.image_import_dir.clone().or(file.image_import_dir),
                    import_ca: args.image_import_ca.clone().or(file.image_import_ca),
                    import_timeout: secs(
                        args.image_import_timeout,
                        file.image_import_timeout_secs,
                        3600,
                    ),
                    max_bytes: args
                        .image_max_mib
                        .or(file.image_max_mib)
                        .unwrap_or(64 * 1024)
                        .max(1)
                        .saturating_mul(1 << 20),
                    upload_expire_after: secs(
                        args.upload_expire_after,
                        file.upload_expire_after_secs,
                        86400,
                    ),
                },
            },
        })
    }
}
