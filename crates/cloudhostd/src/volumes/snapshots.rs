//! One disk's snapshots brought to what the master wants (docs/storage.md,
//! "Snapshots"): the ones to remove removed, a pending revert applied, the
//! missing ones taken; offline with qemu-img, or through the QMP of the
//! running QEMU that holds the disk. Used for volumes (volumes/mod.rs).
//! Blocking; call from `spawn_blocking`.

use super::snapfiles::{self, Taken};
use crate::vm::guestport::Ports;
use crate::vm::qmp::Qmp;
use cm_api::agent::{DesiredRevert, ObservedSnapshot};
use cm_api::boot::{GuestAnswer, HostRequest};
use cm_api::snapshot::{snapshot_tag, Consistency};
use serde_json::json;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// How long a QMP snapshot call may take (it writes the snapshot table).
const QMP_CALL: Duration = Duration::from_secs(30);
/// How long a guest has to answer a freeze (or a thaw).
const FREEZE_WAIT: Duration = Duration::from_secs(5);
/// How long a guest stays frozen if no thaw comes (its own bound).
const FREEZE_TIMEOUT_MS: u64 = 30_000;

/// What the master wants of one disk's snapshots.
#[derive(Debug, Clone, Copy)]
pub struct Want<'a> {
    pub snapshots: &'a [Uuid],
    pub deleted: &'a [Uuid],
    pub revert: Option<DesiredRevert>,
}

/// The running QEMU that holds a disk: its QMP socket and the disk's node.
#[derive(Clone)]
pub struct Holder {
    pub vm: Uuid,
    pub qmp: PathBuf,
    pub node: String,
    /// Its guest's agent port, to freeze its file systems around a snapshot.
    pub ports: Option<Arc<Ports>>,
}

/// What a pass learnt of one disk: why snapshots could not be taken or
/// removed, and why a revert failed. Kept in memory for the reports.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    pub errors: HashMap<Uuid, String>,
    pub revert_error: Option<String>,
}

/// Bring `disk`'s snapshots to `want`. The pass never stops at the first
/// failure: each snapshot's error is its own.
pub fn converge(disk: &Path, want: Want<'_>, holder: Option<&Holder>) -> Outcome {
    let mut out = Outcome::default();
    let mut record = match snapfiles::record(disk) {
        Ok(r) => r,
        Err(e) => {
            for id in want.snapshots {
                out.errors.insert(*id, e.to_string());
            }
            return out;
        }
    };
    for id in want.deleted {
        if !record.contains_key(id) {
            continue;
        }
        let r = match holder {
            None => snapfiles::delete_offline(disk, *id).map_err(|e| e.to_string()),
            Some(h) => qmp_delete(h, *id),
        };
        match r.and_then(|()| {
            record.remove(id);
            snapfiles::save_record(disk, &record).map_err(|e| e.to_string())
        }) {
            Ok(()) => tracing::info!("snapshot {id} of {}: removed", disk.display()),
            Err(e) => {
                out.errors.insert(*id, e);
            }
        }
    }
    if let Some(rv) = want.revert {
        out.revert_error = match holder {
            Some(h) => (snapfiles::reverted_gen(disk).unwrap_or(0) < rv.gen)
                .then(|| format!("not reverted: instance {} holds it (stop it first)", h.vm)),
            None => match snapfiles::revert(disk, rv.snapshot, rv.gen) {
                Ok(true) => {
                    tracing::info!("{}: reverted to snapshot {}", disk.display(), rv.snapshot);
                    None
                }
                Ok(false) => None,
                Err(e) => Some(e.to_string()),
            },
        };
    }
    for id in want
        .snapshots
        .iter()
        .filter(|id| !want.deleted.contains(id))
    {
        if matches!(record.get(id), Some(t) if t.consistency.is_some()) {
            continue;
        }
        if let Err(e) = take(disk, *id, holder, &mut record) {
            tracing::warn!("snapshot {id} of {}: {e}", disk.display());
            out.errors.insert(*id, e);
        }
    }
    out
}

fn take(
    disk: &Path,
    id: Uuid,
    holder: Option<&Holder>,
    record: &mut snapfiles::Record,
) -> Result<(), String> {
    let size = super::files::virtual_size(disk).map_err(|e| e.to_string())?;
    // Recorded first: a crash mid-way leaves an entry the next pass finishes.
    record.insert(
        id,
        Taken {
            consistency: None,
            size_bytes: size,
        },
    );
    snapfiles::save_record(disk, record).map_err(|e| e.to_string())?;
    let consistency = match holder {
        None => {
            snapfiles::take_offline(disk, id).map_err(|e| e.to_string())?;
            Consistency::Offline
        }
        Some(h) => {
            let freeze = h.ports.as_ref().map(|p| (p, Uuid::new_v4()));
            let frozen = freeze.is_some_and(|(p, f)| freeze_guest(p, h.vm, f));
            let r = qmp_take(h, id);
            if let Some((p, f)) = freeze {
                thaw_guest(p, h.vm, f);
            }
            r?;
            // Frozen by the guest, or like a power cut.
            if frozen {
                Consistency::Filesystem
            } else {
                Consistency::Crash
            }
        }
    };
    record.insert(
        id,
        Taken {
            consistency: Some(consistency),
            size_bytes: size,
        },
    );
    snapfiles::save_record(disk, record).map_err(|e| e.to_string())?;
    tracing::info!(
        "snapshot {id} of {}: taken ({consistency:?})",
        disk.display()
    );
    Ok(())
}

/// Ask VM `vm`'s guest to freeze its file systems (request `f`): true when
/// it answered `frozen` with some mount frozen within `FREEZE_WAIT`.
pub(crate) fn freeze_guest(ports: &Ports, vm: Uuid, f: Uuid) -> bool {
    let req = HostRequest::Freeze {
        id: f,
        timeout_ms: FREEZE_TIMEOUT_MS,
    };
    let answer = ports.ask(vm, &req, FREEZE_WAIT, |a| {
        matches!(
            a,
            GuestAnswer::Frozen { .. } | GuestAnswer::FreezeFailed { .. }
        )
    });
    match answer {
        Some(GuestAnswer::Frozen { mounts, .. }) => {
            tracing::info!("instance {vm}: guest froze {mounts:?}");
            !mounts.is_empty()
        }
        Some(GuestAnswer::FreezeFailed { error, .. }) => {
            tracing::warn!("instance {vm}: guest could not freeze: {error}");
            false
        }
        _ => {
            tracing::info!("instance {vm}: no answer to the freeze: a crash-consistent snapshot");
            false
        }
    }
}

/// Always sent after a freeze (also unanswered: it may have come late).
pub(crate) fn thaw_guest(ports: &Ports, vm: Uuid, f: Uuid) {
    let req = HostRequest::Thaw { id: f };
    if ports
        .ask(vm, &req, FREEZE_WAIT, |a| {
            matches!(a, GuestAnswer::Thawed { .. })
        })
        .is_none()
    {
        tracing::debug!("instance {vm}: no answer to the thaw");
    }
}

/// `blockdev-snapshot-internal-sync` on the disk's node (unless the tag is
/// there already: a retry after a crash).
fn qmp_take(h: &Holder, id: Uuid) -> Result<(), String> {
    let mut q = Qmp::connect(&h.qmp, QMP_CALL).map_err(|e| e.to_string())?;
    let present = q
        .execute("query-named-block-nodes", Some(json!({"flat": true})))
        .map(|nodes| node_has_tag(&nodes, &h.node, id))
        .map_err(|e| e.to_string())?;
    if present {
        return Ok(());
    }
    q.execute(
        "blockdev-snapshot-internal-sync",
        Some(json!({"device": h.node, "name": snapshot_tag(id)})),
    )
    .map(|_| ())
    .map_err(|e| format!("in instance {}: {e}", h.vm))
}

fn qmp_delete(h: &Holder, id: Uuid) -> Result<(), String> {
    let mut q = Qmp::connect(&h.qmp, QMP_CALL).map_err(|e| e.to_string())?;
    let present = q
        .execute("query-named-block-nodes", Some(json!({"flat": true})))
        .map(|nodes| node_has_tag(&nodes, &h.node, id))
        .map_err(|e| e.to_string())?;
    if !present {
        return Ok(());
    }
    q.execute(
        "blockdev-snapshot-delete-internal-sync",
        Some(json!({"device": h.node, "name": snapshot_tag(id)})),
    )
    .map(|_| ())
    .map_err(|e| format!("in instance {}: {e}", h.vm))
}

/// Whether `query-named-block-nodes` shows snapshot `id` on node `node`.
fn node_has_tag(nodes: &serde_json::Value, node: &str, id: Uuid) -> bool {
    let tag = snapshot_tag(id);
    nodes.as_array().into_iter().flatten().any(|n| {
        n["node-name"] == node
            && n["image"]["snapshots"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|s| s["name"] == tag.as_str())
    })
}

/// What a disk holds, for the report: its recorded snapshots (those being
/// taken are left out until taken), those that failed with their errors,
/// and the last revert applied. Reads two small files; no qemu-img.
pub fn observe(disk: &Path, outcome: &Outcome) -> (Vec<ObservedSnapshot>, u64) {
    let record = snapfiles::record(disk).unwrap_or_default();
    let mut out: Vec<ObservedSnapshot> = record
        .iter()
        .filter(|(id, t)| t.consistency.is_some() && !outcome.errors.contains_key(id))
        .map(|(id, t)| ObservedSnapshot {
            id: *id,
            consistency: t.consistency,
            size_bytes: t.size_bytes,
            error: None,
        })
        .collect();
    for (id, e) in &outcome.errors {
        let taken = record.get(id).filter(|t| t.consistency.is_some());
        out.push(ObservedSnapshot {
            id: *id,
            consistency: taken.and_then(|t| t.consistency),
            size_bytes: taken.map(|t| t.size_bytes).unwrap_or(0),
            error: Some(e.clone()),
        });
    }
    out.sort_by_key(|s| s.id);
    (out, snapfiles::reverted_gen(disk).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nodes_snapshots_are_read_from_query_named_block_nodes() {
        let id = Uuid::new_v4();
        let nodes = json!([
            {"node-name": "other", "image": {"snapshots": [{"name": snapshot_tag(id)}]}},
            {"node-name": "vol1", "image": {"snapshots": [{"name": "cm-x"}]}},
        ]);
        assert!(!node_has_tag(&nodes, "vol1", id));
        assert!(node_has_tag(&nodes, "other", id));
        assert!(!node_has_tag(&json!({}), "vol1", id));
    }
}
