//! A simulated host's transfers (docs/storage.md, "Transfers"): an export
//! makes a real small qcow2 of the disk's size (`qemu-img create -f
//! qcow2`), hashes it and PUTs it to the master as a real host does; an
//! import GETs the transfer, checks its size and sha256, and the volume's
//! (in-memory) file exists.

use super::host::SimHost;
use cm_api::agent::{DesiredExport, DesiredState, DesiredVolume, DiskImport};
use cm_api::snapshot::SnapshotOf;
use cm_client::Client;
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use uuid::Uuid;

/// How often, and how many times, a transfer the master could not take
/// yet (unreachable, 409 not received) is tried again.
const RETRY: Duration = Duration::from_secs(1);
const ATTEMPTS: u32 = 120;

#[derive(Default)]
pub struct Transfers {
    client: OnceLock<Arc<Client>>,
    /// Transfers under way or done (never started twice).
    busy: Mutex<HashSet<Uuid>>,
}

impl Transfers {
    /// The master and this host's token, once the host has joined.
    pub fn connect(&self, client: Client) {
        let _ = self.client.set(Arc::new(client));
    }

    /// Mark `id` busy; false when it was already.
    fn claim(&self, id: Uuid) -> bool {
        match self.busy.lock() {
            Ok(mut b) => b.insert(id),
            Err(p) => p.into_inner().insert(id),
        }
    }

    fn release(&self, id: Uuid) {
        match self.busy.lock() {
            Ok(mut b) => b.remove(&id),
            Err(p) => p.into_inner().remove(&id),
        };
    }
}

/// Start what the desired state asks of transfers that is not under way.
pub fn apply(host: &Arc<SimHost>, desired: &DesiredState) {
    let Some(client) = host.transfers().client.get().cloned() else {
        return;
    };
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    for e in &desired.exports {
        if let Some(size) = disk_size(host, desired, e) {
            if host.transfers().claim(e.id) {
                let (c, id) = (client.clone(), e.id);
                rt.spawn(async move {
                    if let Err(why) = export(&c, id, size).await {
                        tracing::warn!("simulated export {id}: {why}");
                    }
                });
            }
        }
    }
    for v in &desired.volumes {
        let Some(imp) = v.import.clone() else {
            continue;
        };
        if host.has_volume_file(v.id) || !host.transfers().claim(imp.transfer) {
            continue;
        }
        let (c, h, v) = (client.clone(), host.clone(), v.clone());
        rt.spawn(async move {
            match import(&c, &imp).await {
                Ok(()) => h.add_volume_file(&v, None),
                Err(why) => h.add_volume_file(&v, Some(why)),
            }
            h.transfers().release(imp.transfer);
        });
    }
}

/// The virtual size of the disk (or backup) an export names (None: no
/// such disk here).
fn disk_size(host: &SimHost, desired: &DesiredState, e: &DesiredExport) -> Option<u64> {
    // A backup to restore: flattened from its chain, which outlives its disk.
    if let Some(backup) = e.disk.backup {
        return host.backup_size(e.disk.disk, backup);
    }
    match e.disk.of {
        SnapshotOf::Volume => host.volume_size(e.disk.disk),
        SnapshotOf::InstanceRoot => desired
            .instances
            .iter()
            .find(|i| i.id == e.disk.disk)
            .map(|i| i.disk_gib.saturating_mul(1 << 30)),
    }
}

/// Make the flattened file, hash it, send it (again while the master is
/// unreachable).
async fn export(c: &Client, id: Uuid, size: u64) -> Result<(), String> {
    let path = std::env::temp_dir().join(format!("cm-sim-export-{id}.qcow2"));
    let out = tokio::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&path)
        .arg(size.to_string())
        .output()
        .await
        .map_err(|e| format!("cannot run qemu-img: {e}"))?;
    let body = if out.status.success() {
        tokio::fs::read(&path).await.map_err(|e| e.to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let _ = tokio::fs::remove_file(&path).await;
    let body = body?;
    let sha = hex::encode(Sha256::digest(&body));
    let target = cm_client::endpoints::agent::transfer_path(id);
    for _ in 0..ATTEMPTS {
        match c.put_file(&target, &sha, body.clone()).await {
            Ok(()) => return Ok(()),
            Err(e) if transient(&e) => tokio::time::sleep(RETRY).await,
            Err(e) => return Err(e.to_string()),
        }
    }
    Err("the master did not take it".into())
}

fn transient(e: &cm_client::Error) -> bool {
    match e.status() {
        Some(s) => s.is_server_error() || s == reqwest::StatusCode::CONFLICT,
        None => matches!(
            e,
            cm_client::Error::Unreachable { .. } | cm_client::Error::MaybeApplied { .. }
        ),
    }
}

/// Fetch a transfer and check it is what the desired state says.
async fn import(c: &Client, imp: &DiskImport) -> Result<(), String> {
    for _ in 0..ATTEMPTS {
        let req = cm_client::endpoints::agent::transfer_file(imp.transfer);
        let mut resp = match c.download(req).await {
            Ok(r) => r,
            Err(e) if transient(&e) => {
                tokio::time::sleep(RETRY).await;
                continue;
            }
            Err(e) => return Err(format!("fetching transfer {}: {e}", imp.transfer)),
        };
        let (mut hash, mut len) = (Sha256::new(), 0u64);
        while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
            len += chunk.len() as u64;
            if len > imp.size {
                return Err(format!(
                    "transfer {} is longer than {} bytes",
                    imp.transfer, imp.size
                ));
            }
            hash.update(&chunk);
        }
        let got = hex::encode(hash.finalize());
        if len != imp.size || got != imp.sha256 {
            return Err(format!(
                "transfer {}: {len} bytes with sha256 {got}, not {} with {}",
                imp.transfer, imp.size, imp.sha256
            ));
        }
        return Ok(());
    }
    Err("the master did not answer".into())
}

/// The file a finished import makes (`error`: a failed one, size 0).
pub fn imported_file(v: &DesiredVolume, error: Option<String>) -> super::volumes::SimFile {
    super::volumes::SimFile {
        name: v.name.clone(),
        size_bytes: if error.is_some() { 0 } else { v.size_bytes },
        error,
    }
}
