//! The master's settings: flags, environment (`CLOUDMASTERD_*`), then the
//! TOML config file, then defaults.

use crate::app::limits::{LimitSettings, Rate};
use crate::retention::Retention;
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
    /// guest_addr, remove_stale_after_secs, down_host_op_timeout_secs,
    /// image_import_dir, image_import_ca, image_import_timeout_secs, image_max_mib,
    /// upload_expire_after_secs, and the limits below under the same names
    /// (header_read_timeout_secs, max_connections, ...).
    #[arg(long, env = "CLOUDMASTERD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Print the API's OpenAPI document (openapi/cloudmaster.json) and exit.
    #[arg(long)]
    pub print_openapi: bool,
    /// Debug builds only: serve the test routes under /v1/debug (admin).
    #[arg(long, hide = true)]
    pub debug_routes: bool,
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
    /// Close a connection whose request head has not arrived this many
    /// seconds after it opened or after its last answer [default: 10].
    #[arg(long)]
    pub header_read_timeout: Option<u64>,
    /// Open connections at most; more wait to be accepted. The soft
    /// descriptor limit is raised to fit them (fd_limit.rs) [default: 4096:
    /// 1,000 hosts, each with a long-poll and a report, plus clients].
    #[arg(long)]
    pub max_connections: Option<usize>,
    /// Request bodies of the unauthenticated routes (/boot, /nocloud,
    /// /v1/agent/register), bytes [default: 65536].
    #[arg(long)]
    pub open_body_limit: Option<usize>,
    /// update_cache and heartbeats per guest record: burst [default: 10].
    #[arg(long)]
    pub guest_burst: Option<u32>,
    /// ... then one more every this many milliseconds [default: 1000].
    #[arg(long)]
    pub guest_refill_ms: Option<u64>,
    /// Failed guest authentications per source address: burst [default: 30].
    #[arg(long)]
    pub auth_fail_burst: Option<u32>,
    /// ... then one more every this many milliseconds [default: 500].
    #[arg(long)]
    pub auth_fail_refill_ms: Option<u64>,
    /// Keep events this many days [default: 30].
    #[arg(long)]
    pub events_keep_days: Option<u64>,
    /// Keep at most this many events [default: 100000].
    #[arg(long)]
    pub events_keep: Option<u64>,
    /// Keep finished operations this many days [default: 30].
    #[arg(long)]
    pub operations_keep_days: Option<u64>,
    /// Keep at most this many finished operations [default: 10000].
    #[arg(long)]
    pub operations_keep: Option<u64>,
    /// Seconds between retention passes [default: 60].
    #[arg(long)]
    pub retention_interval: Option<u64>,
    /// Events an SSE follower may fall behind before it is told it lagged
    /// [default: 1024].
    #[arg(long)]
    pub event_stream_buffer: Option<usize>,
    /// Seconds an operation on an instance waits for its host while the
    /// host is down, before it fails with host_unavailable [default: 60].
    #[arg(long)]
    pub down_host_op_timeout: Option<u64>,
    /// Make a new admin token (the old one stops working, also on a master
    /// running on this data dir, within a second) and exit.
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
    /// A balancer deployables may name in a pool, as NAME=unix:PATH (its
    /// HAProxy runtime socket); repeat for more.
    #[arg(long = "balancer", value_name = "NAME=unix:PATH")]
    pub balancers: Vec<String>,
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
    header_read_timeout_secs: Option<u64>,
    max_connections: Option<usize>,
    open_body_limit: Option<usize>,
    guest_burst: Option<u32>,
    guest_refill_ms: Option<u64>,
    auth_fail_burst: Option<u32>,
    auth_fail_refill_ms: Option<u64>,
    events_keep_days: Option<u64>,
    events_keep: Option<u64>,
    operations_keep_days: Option<u64>,
    operations_keep: Option<u64>,
    retention_interval_secs: Option<u64>,
    event_stream_buffer: Option<usize>,
    down_host_op_timeout_secs: Option<u64>,
    image_import_dir: Option<PathBuf>,
    image_import_ca: Option<PathBuf>,
    image_import_timeout_secs: Option<u64>,
    image_max_mib: Option<u64>,
    upload_expire_after_secs: Option<u64>,
    /// `[balancers] edge = "unix:/run/haproxy/admin.sock"`.
    balancers: Option<std::collections::BTreeMap<String, String>>,
}

pub struct Config {
    pub listen: SocketAddr,
    pub conn: crate::server::ConnLimits,
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

/// The default connection limit: 1,000 hosts each hold a long-poll and
/// send reports (two connections), and clients come on top.
pub const MAX_CONNECTIONS: usize = 4096;

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
            .or_else(|| file.data_dir.clone())
            .unwrap_or_else(default_data_dir);
        let data_dir = std::path::absolute(&data_dir).unwrap_or(data_dir);
        let url = args
            .url
            .clone()
            .or_else(|| file.url.clone())
            .unwrap_or_else(|| {
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
        let balancers = balancers(args, &file)?;
        let limits = limit_settings(args, &file);
        let retention = retention(args, &file);
        let conn = crate::server::ConnLimits {
            header_read_timeout: Duration::from_secs(
                args.header_read_timeout
                    .or(file.header_read_timeout_secs)
                    .unwrap_or(10)
                    .max(1),
            ),
            max_connections: crate::fd_limit::fit_connections(
                args.max_connections
                    .or(file.max_connections)
                    .unwrap_or(MAX_CONNECTIONS)
                    .max(1),
            ),
        };
        Ok(Config {
            listen,
            conn,
            url,
            settings: Settings {
                debug_routes: cfg!(debug_assertions) && args.debug_routes,
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
                limits,
                retention,
                event_stream_buffer: args
                    .event_stream_buffer
                    .or(file.event_stream_buffer)
                    .unwrap_or(1024)
                    .clamp(1, 1 << 20),
                down_host_op_timeout: secs(
                    args.down_host_op_timeout,
                    file.down_host_op_timeout_secs,
                    60,
                ),
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
                balancers,
            },
        })
    }
}

/// The balancers of the file, then of the flags (a flag wins by name).
fn balancers(
    args: &Args,
    file: &FileConfig,
) -> anyhow::Result<std::collections::BTreeMap<String, PathBuf>> {
    let mut out = std::collections::BTreeMap::new();
    let from_file = file
        .balancers
        .iter()
        .flatten()
        .map(|(n, a)| (n.clone(), a.clone()));
    let from_args = args.balancers.iter().map(|b| match b.split_once('=') {
        Some((n, a)) => (n.to_string(), a.to_string()),
        None => (b.clone(), String::new()),
    });
    for (name, addr) in from_file.chain(from_args) {
        cm_api::validate::name("balancer", &name, false)
            .map_err(|e| anyhow::anyhow!("--balancer {name}: {}", e.error.message))?;
        let path = addr
            .strip_prefix("unix:")
            .filter(|p| p.starts_with('/'))
            .ok_or_else(|| {
                anyhow::anyhow!("balancer {name}: '{addr}' is not unix:/ABSOLUTE/PATH")
            })?;
        out.insert(name, PathBuf::from(path));
    }
    Ok(out)
}

fn limit_settings(args: &Args, file: &FileConfig) -> LimitSettings {
    let d = LimitSettings::default();
    let ms = |a: Option<u64>, f: Option<u64>, d: Duration| {
        a.or(f)
            .map(|v| Duration::from_millis(v.max(1)))
            .unwrap_or(d)
    };
    LimitSettings {
        open_body_max: args
            .open_body_limit
            .or(file.open_body_limit)
            .unwrap_or(d.open_body_max)
            .max(1024),
        guest_rate: Rate {
            burst: args
                .guest_burst
                .or(file.guest_burst)
                .unwrap_or(d.guest_rate.burst)
                .max(1),
            every: ms(
                args.guest_refill_ms,
                file.guest_refill_ms,
                d.guest_rate.every,
            ),
        },
        auth_fail_rate: Rate {
            burst: args
                .auth_fail_burst
                .or(file.auth_fail_burst)
                .unwrap_or(d.auth_fail_rate.burst)
                .max(1),
            every: ms(
                args.auth_fail_refill_ms,
                file.auth_fail_refill_ms,
                d.auth_fail_rate.every,
            ),
        },
        max_buckets: d.max_buckets,
    }
}

fn retention(args: &Args, file: &FileConfig) -> Retention {
    let d = Retention::default();
    let days = |a: Option<u64>, f: Option<u64>, d: Duration| {
        a.or(f)
            .map(|v| Duration::from_secs(v.max(1).saturating_mul(86_400)))
            .unwrap_or(d)
    };
    Retention {
        events_max_age: days(
            args.events_keep_days,
            file.events_keep_days,
            d.events_max_age,
        ),
        events_max_count: args
            .events_keep
            .or(file.events_keep)
            .unwrap_or(d.events_max_count)
            .max(1),
        operations_max_age: days(
            args.operations_keep_days,
            file.operations_keep_days,
            d.operations_max_age,
        ),
        operations_max_count: args
            .operations_keep
            .or(file.operations_keep)
            .unwrap_or(d.operations_max_count)
            .max(1),
        every: args
            .retention_interval
            .or(file.retention_interval_secs)
            .map(|s| Duration::from_secs(s.max(1)))
            .unwrap_or(d.every),
    }
}
