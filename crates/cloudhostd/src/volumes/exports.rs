//! Exports (docs/storage.md, "Transfers"): a disk no VM runs on, flattened
//! into `DATA/exports/ID.qcow2` and sent to the master with its sha256, in a
//! background task (one at a time per disk), never in a volume pass. A
//! network or server failure is tried again on a later pass; a refusal (a
//! VM holds the disk, no such disk, qemu-img failed, the master said no)
//! is reported in `HostReport.exports` until the master drops the export.

use super::{files, transfers, Volumes};
use crate::client::ClientError;
use crate::vm::VmContext;
use cm_api::agent::{DesiredExport, DiskRef, ObservedExport};
use cm_api::snapshot::SnapshotOf;
use cm_api::ErrorCode;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use uuid::Uuid;

/// How far an export of the desired state went.
#[derive(Debug, Clone, PartialEq)]
pub enum Export {
    /// A task is making or sending it (of this disk).
    Running(Uuid),
    /// The master answered 200: done.
    Sent,
    /// Refused, for this reason.
    Failed(String),
}

/// Why an export did not go.
#[derive(Debug)]
enum Fail {
    /// Tried again on a later pass.
    Transient(String),
    /// Reported.
    Refused(String),
}

pub fn errors(exports: &HashMap<Uuid, Export>) -> Vec<ObservedExport> {
    let mut v: Vec<ObservedExport> = exports
        .iter()
        .filter_map(|(id, e)| match e {
            Export::Failed(error) => Some(ObservedExport {
                id: *id,
                error: error.clone(),
            }),
            _ => None,
        })
        .collect();
    v.sort_by_key(|e| e.id);
    v
}

/// The file of the disk `disk` to export, or why it may not be: `root`
/// is the instance's root volume when it boots from one, `qemus` the
/// running QEMUs (VM id, pid).
pub fn source(
    vols: &Volumes,
    disk: DiskRef,
    root: Option<Uuid>,
    qemus: &[(Uuid, u32)],
) -> Result<PathBuf, String> {
    let volume = match (disk.of, root) {
        (SnapshotOf::Volume, _) => Some(disk.disk),
        (SnapshotOf::InstanceRoot, r) => r,
    };
    if let Some(v) = volume {
        let file = vols.path(v);
        if let Some(vm) = vols.holders(qemus).get(&v) {
            return Err(format!("volume {v}: instance {vm} runs on it"));
        }
        if !file.exists() {
            return Err(format!("volume {v}: this host has no file of it"));
        }
        return Ok(file);
    }
    let vm = disk.disk;
    if qemus.iter().any(|(id, _)| *id == vm) {
        return Err(format!("instance {vm} is running: stop it first"));
    }
    let file = vols.instances_dir.join(vm.to_string()).join("disk.qcow2");
    if !file.exists() {
        return Err(format!("instance {vm}: this host has no root disk of it"));
    }
    Ok(file)
}

/// Forget the exports the master no longer lists (and their files), and
/// start a task for each new one whose disk has none under way.
pub fn start(ctx: &Arc<VmContext>) {
    let vols = &ctx.volumes;
    let dir = vols.exports_dir();
    let todo: Vec<(DesiredExport, Option<Uuid>)> = {
        let mut s = vols.state();
        let (wanted, roots) = match &s.wanted {
            Some(w) => (w.exports.clone(), w.roots.clone()),
            None => return,
        };
        s.exports.retain(|id, e| {
            let keep = wanted.iter().any(|w| w.id == *id) || matches!(e, Export::Running(_));
            if !keep {
                let _ = std::fs::remove_file(dir.join(format!("{id}.qcow2")));
            }
            keep
        });
        let mut todo = Vec::new();
        for e in wanted {
            let busy = s
                .exports
                .values()
                .any(|x| *x == Export::Running(e.disk.disk));
            if s.exports.contains_key(&e.id) || busy {
                continue;
            }
            s.exports.insert(e.id, Export::Running(e.disk.disk));
            let root = match e.disk.of {
                SnapshotOf::InstanceRoot => roots.get(&e.disk.disk).copied(),
                SnapshotOf::Volume => None,
            };
            todo.push((e, root));
        }
        todo
    };
    for (e, root) in todo {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let next = match send(&ctx, e, root).await {
                Ok(()) => {
                    tracing::info!("export {}: sent", e.id);
                    Some(Export::Sent)
                }
                Err(Fail::Transient(why)) => {
                    tracing::warn!("export {}: {why} (tried again later)", e.id);
                    None
                }
                Err(Fail::Refused(why)) => {
                    tracing::warn!("export {}: {why}", e.id);
                    Some(Export::Failed(why))
                }
            };
            let mut s = ctx.volumes.state();
            match next {
                Some(n) => s.exports.insert(e.id, n),
                None => s.exports.remove(&e.id),
            };
            drop(s);
            ctx.changed.notify_one();
        });
    }
}

async fn send(ctx: &VmContext, e: DesiredExport, root: Option<Uuid>) -> Result<(), Fail> {
    let vols = &ctx.volumes;
    let dir = vols.exports_dir();
    let flat = dir.join(format!("{}.qcow2", e.id));
    if let (false, Some(b)) = (flat.exists(), e.disk.backup) {
        let name = cm_api::backup::chain_name(e.disk.of, e.disk.disk);
        let (f, vols) = (flat.clone(), ctx.volumes.clone());
        tokio::task::spawn_blocking(move || flatten_backup(&vols.chains, &name, b, &f))
            .await
            .map_err(|err| Fail::Transient(err.to_string()))??;
    }
    if !flat.exists() {
        let src = source(vols, e.disk, root, &ctx.qemus()).map_err(Fail::Refused)?;
        let (d, f) = (dir.clone(), flat.clone());
        tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&d)
                .map_err(|err| files::FileError::Io(d.display().to_string(), err))?;
            transfers::flatten(&src, &f)
        })
        .await
        .map_err(|err| Fail::Transient(err.to_string()))?
        .map_err(|err| Fail::Refused(format!("flattening the disk: {err}")))?;
    }
    let f = flat.clone();
    let (sha, size) = tokio::task::spawn_blocking(move || transfers::sha256_file(&f))
        .await
        .map_err(|err| Fail::Transient(err.to_string()))?
        .map_err(|err| Fail::Refused(format!("{}: {err}", flat.display())))?;
    let file = tokio::fs::File::open(&flat)
        .await
        .map_err(|err| Fail::Refused(format!("{}: {err}", flat.display())))?;
    match ctx.master.put_transfer(e.id, file, size, &sha).await {
        Ok(()) => {
            let _ = tokio::fs::remove_file(&flat).await;
            Ok(())
        }
        Err(err) if transient(&err) => Err(Fail::Transient(err.to_string())),
        Err(err) => {
            // Made again if the master lists it again.
            let _ = tokio::fs::remove_file(&flat).await;
            Err(Fail::Refused(format!("the master refused it: {err}")))
        }
    }
}

/// Backup `id` of chain `name`, flattened into `dst` (a restore): a chain
/// busy with a backup is tried again later; one that lacks the backup
/// fetches it from its copy over ssh first, if it has one.
fn flatten_backup(
    chains: &crate::backup::chains::Chains,
    name: &str,
    id: Uuid,
    dst: &std::path::Path,
) -> Result<(), Fail> {
    use crate::backup::BackupError;
    let root = chains.root();
    if !root.join(name).is_dir() && !chains.mirrored(name) {
        return Err(Fail::Refused(format!(
            "this host has no backup chain {name}"
        )));
    }
    if let Some(d) = dst.parent() {
        std::fs::create_dir_all(d).map_err(|e| Fail::Transient(format!("{}: {e}", d.display())))?;
    }
    let chain = crate::backup::Chain::open(root, name).map_err(|e| match e {
        BackupError::Busy(_) => Fail::Transient(e.to_string()),
        e => Fail::Refused(e.to_string()),
    })?;
    chains
        .fetch_for_restore(&chain, name, id)
        .map_err(|e| Fail::Refused(format!("backup {id} is not on this host: {e}")))?;
    chain
        .flatten(id, dst)
        .map_err(|e| Fail::Refused(format!("flattening backup {id}: {e}")))
}

/// A failure a later try may not meet: the network, the master busy or
/// failing, our token refused for a moment.
pub(super) fn transient(e: &ClientError) -> bool {
    match e {
        ClientError::Transport(_) | ClientError::Unauthorized => true,
        ClientError::Api(a) => matches!(
            a.error.code,
            ErrorCode::Internal
                | ErrorCode::RateLimited
                | ErrorCode::InProgress
                | ErrorCode::HostUnavailable
                | ErrorCode::InsufficientStorage
        ),
    }
}

#[cfg(test)]
#[path = "exports_tests.rs"]
mod tests;
