//! The agent's loops: join the cloud, long-poll the desired state and hand
//! it to the VMs, report what is observed, answer the master's requests.

use crate::client::{ClientError, Master};
use crate::config::Config;
use crate::facts;
use crate::runtime::{Facts, Runtime};
use cm_api::agent::{AgentReply, AgentRequest, DesiredState, HostReport, RegisterHost};
use cm_api::host::HostFacts;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// What a host keeps after joining (`host.json`, mode 0600).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Credentials {
    pub host_id: Uuid,
    pub host_token: String,
    pub cloud_id: Uuid,
    pub master: String,
    pub name: String,
}

impl Credentials {
    pub fn load(path: &Path) -> Option<Credentials> {
        serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
    }

    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        durable_fs::write_atomic(
            path,
            serde_json::to_string_pretty(self)
                .unwrap_or_default()
                .as_bytes(),
            0o600,
        )
    }
}

/// Facts gathered for every report; the probe's result and versions are fixed.
pub struct FactSource {
    /// Where the volumes are: the free disk space reported is theirs.
    pub disk_dir: std::path::PathBuf,
    pub memory_override: Option<u64>,
    pub accel: cm_api::words::ResolvedAccel,
    pub accel_note: String,
    pub qemu_version: String,
    /// Where other machines reach its port forwards (config.rs).
    pub forward_addr: String,
}

impl Facts for FactSource {
    fn gather(&self) -> HostFacts {
        let (total, avail) = facts::memory_mib();
        let total = self
            .memory_override
            .map(|m| m.min(total.max(m)))
            .unwrap_or(total);
        HostFacts {
            forward_addr: Some(self.forward_addr.clone()),
            memory_total_mib: total,
            memory_available_mib: avail.min(total),
            vcpus: facts::vcpus(),
            disk_free_mib: facts::disk_free_mib(&self.disk_dir),
            accel: self.accel,
            accel_note: self.accel_note.clone(),
            qemu_version: self.qemu_version.clone(),
            agent_version: env!("CARGO_PKG_VERSION").into(),
        }
    }
}

/// Register with the join token (retrying while the master is unreachable).
/// Only at start, when there are no credentials or `--rejoin` says so: an
/// agent whose token is refused later never joins again by itself.
pub async fn join(
    cfg: &Config,
    master: &Master,
    facts: &dyn Facts,
    path: &Path,
) -> anyhow::Result<Credentials> {
    join_as(
        master,
        &cfg.master,
        &cfg.name,
        cfg.join_token()?,
        facts,
        path,
    )
    .await
}

/// Register as `name` with the master at `master_url` and keep the
/// credentials in `path`.
pub async fn join_as(
    master: &Master,
    master_url: &str,
    name: &str,
    join_token: String,
    facts: &dyn Facts,
    path: &Path,
) -> anyhow::Result<Credentials> {
    let req = RegisterHost {
        name: name.to_string(),
        join_token,
        facts: facts.gather(),
    };
    let mut delay = Duration::from_millis(200);
    loop {
        match master.register(&req).await {
            Ok(r) => {
                let creds = Credentials {
                    host_id: r.host_id,
                    host_token: r.host_token,
                    cloud_id: r.cloud_id,
                    master: master_url.to_string(),
                    name: name.to_string(),
                };
                creds.save(path)?;
                tracing::info!(
                    "joined cloud {} as host {} ({})",
                    creds.cloud_id,
                    creds.name,
                    creds.host_id
                );
                return Ok(creds);
            }
            Err(ClientError::Api(e)) => {
                anyhow::bail!(
                    "the master at {master_url} refused to register this host as {name}: {e}"
                )
            }
            Err(e) => {
                tracing::warn!("cannot register yet: {e}; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
    }
}

pub struct Agent {
    pub master: Arc<Master>,
    pub vms: Arc<dyn Runtime>,
    pub facts: Arc<dyn Facts>,
    pub creds: Credentials,
    pub creds_path: std::path::PathBuf,
    /// The desired-state generation handed to the VMs.
    pub applied: AtomicU64,
    /// Seconds between reports, as the master asks.
    pub interval: AtomicU64,
    /// Set while the master refuses this host's token.
    pub refused: AtomicBool,
}

/// How often a muted (simulated) host looks whether it may speak again.
const MUTED_POLL: Duration = Duration::from_millis(50);

/// How often an agent whose token was refused asks again (it may be a
/// master restored with the token; it never joins again by itself).
const REFUSED_RETRY: Duration = Duration::from_secs(10);

impl Agent {
    pub async fn run(self: Arc<Self>) {
        tokio::spawn(self.clone().report_loop());
        let mut after = 0u64;
        let mut delay = Duration::from_millis(200);
        loop {
            while self.vms.muted() {
                tokio::time::sleep(MUTED_POLL).await;
            }
            match self.master.desired(after, 25).await {
                // Muted while it waited: as if never heard.
                Ok(_) if self.vms.muted() => {}
                Ok(d) => {
                    delay = Duration::from_millis(200);
                    if self.accept(&d).await {
                        after = d.generation;
                    }
                }
                Err(ClientError::Unauthorized) => {
                    self.refused_by_master().await;
                    tokio::time::sleep(REFUSED_RETRY).await;
                }
                Err(e) => {
                    tracing::warn!("desired state: {e}");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// The master refused our token: the host was removed, or the master's
    /// store was replaced. Stop every VM (they may run elsewhere now), keep
    /// every file, say what to do, and wait; never join again by itself.
    async fn refused_by_master(&self) {
        if self.refused.swap(true, Ordering::SeqCst) {
            return;
        }
        let c = &self.creds;
        tracing::error!(
            "the master at {} refused this host's token (host {}, id {}): the host was removed \
             from the cloud (cm host remove) or the master's store was replaced. Its VMs are \
             being stopped and kept, nothing is deleted. To join again: `cm host remove {}` on \
             the master if it still lists this host, then restart cloudhostd with --rejoin \
             (or delete {}).",
            self.master.base(),
            c.name,
            c.host_id,
            c.name,
            self.creds_path.display()
        );
        self.vms
            .orphan_all(cm_api::words::KnownStopReason::HostRefused);
    }

    /// Apply a desired state unless it comes from another cloud.
    async fn accept(self: &Arc<Self>, d: &DesiredState) -> bool {
        let cloud = self.creds.cloud_id;
        if d.cloud_id != cloud {
            tracing::error!(
                "the master at {} is cloud {}, this host joined cloud {}: ignoring its desired state",
                self.master.base(),
                d.cloud_id,
                cloud
            );
            tokio::time::sleep(Duration::from_secs(5)).await;
            return false;
        }
        if self.refused.swap(false, Ordering::SeqCst) {
            tracing::warn!("the master accepts this host's token again");
        }
        self.vms.apply(d);
        self.applied.store(d.generation, Ordering::SeqCst);
        self.interval
            .store(u64::from(d.report_interval_secs.max(1)), Ordering::SeqCst);
        self.vms.changed().notify_one();
        for req in &d.requests {
            let me = self.clone();
            let req = req.clone();
            tokio::spawn(async move { me.answer(req).await });
        }
        true
    }

    async fn answer(&self, req: AgentRequest) {
        let reply = match &req {
            AgentRequest::ConsoleTail {
                instance,
                max_bytes,
                ..
            } => {
                let (vms, id, max) = (self.vms.clone(), *instance, *max_bytes);
                match tokio::task::spawn_blocking(move || vms.console_tail(id, max)).await {
                    Ok(Ok(log)) => AgentReply::Console(log),
                    Ok(Err(message)) => AgentReply::Error { message },
                    Err(e) => AgentReply::Error {
                        message: e.to_string(),
                    },
                }
            }
        };
        if let Err(e) = self.master.reply(req.id(), &reply).await {
            tracing::warn!("reply to {}: {e}", req.id());
        }
    }

    /// Report at every interval, and soon after any VM changes state.
    async fn report_loop(self: Arc<Self>) {
        loop {
            let interval = Duration::from_secs(self.interval.load(Ordering::SeqCst).max(1));
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = self.vms.changed().notified() => {
                    // Gather what changes together into one report.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            // Not before the first desired state: until then every VM looks
            // like one of the host's own, orphans included.
            // Nor before the VMs found at start have said their state: a
            // report without one says the host lost it (it turns pending,
            // and a stop asked meanwhile looks done).
            if self.refused.load(Ordering::SeqCst)
                || self.applied.load(Ordering::SeqCst) == 0
                || self.vms.muted()
                || !self.vms.settled()
            {
                continue;
            }
            let (instances, orphans) = self.vms.report();
            let rep = HostReport {
                facts: self.facts.gather(),
                generation: self.applied.load(Ordering::SeqCst),
                instances,
                orphans,
                volumes: self.vms.volumes(),
                exports: self.vms.exports(),
                backups: self.vms.backups(),
            };
            let began = std::time::Instant::now();
            let sent = self.master.report(&rep).await;
            self.vms.reported(sent.is_ok(), began.elapsed());
            match sent {
                Ok(()) => {}
                Err(ClientError::Unauthorized) => self.refused_by_master().await,
                Err(e) => tracing::warn!("report: {e}"),
            }
        }
    }
}
