//! What the volumes tell others: which VM holds which file, the report of
//! the files, the exports that failed, whether a revert is pending.

use super::{files, Volumes};
use cm_api::agent::{ObservedExport, ObservedVolume};
use std::collections::HashMap;
use uuid::Uuid;

impl Volumes {
    /// Which VM holds each volume file open (its QEMU's open files).
    pub fn holders(&self, qemus: &[(Uuid, u32)]) -> HashMap<Uuid, Uuid> {
        let mut held = HashMap::new();
        for (vm, pid) in qemus {
            let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
                continue;
            };
            for fd in fds.flatten() {
                let Ok(target) = std::fs::read_link(fd.path()) else {
                    continue;
                };
                if target.parent() != Some(self.dir.as_path()) {
                    continue;
                }
                let id = target
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.strip_suffix(".qcow2"))
                    .and_then(|n| Uuid::parse_str(n).ok());
                if let Some(id) = id {
                    held.insert(id, *vm);
                }
            }
        }
        held
    }

    /// Every volume file (measured), and every desired volume that has no
    /// file because making it failed (`size_bytes` 0, with the error).
    /// Cheap: a directory listing and a stat per file.
    pub fn report(&self) -> Vec<ObservedVolume> {
        // A file not measured yet (an agent just started, a file just
        // grown or reverted) is measured now: a report that left it out
        // would tell the master the file is gone (storage_crash.rs).
        self.measure();
        let ids = files::list(&self.dir);
        let s = self.state();
        let error = |id: &Uuid| {
            s.errors
                .get(id)
                .or_else(|| s.attach_errors.get(id))
                .cloned()
        };
        let mut out: Vec<ObservedVolume> = ids
            .iter()
            .filter_map(|id| {
                let (_, allocated) = files::stat(&self.path(*id))?;
                let size = s.sizes.get(id).map(|(_, size)| *size);
                let err = error(id);
                let snaps = s.snaps.get(id).cloned().unwrap_or_default();
                // Not measured yet, and nothing to say: next report.
                if size.is_none() && err.is_none() {
                    return None;
                }
                Some(ObservedVolume {
                    id: *id,
                    size_bytes: size.unwrap_or(0),
                    allocated_bytes: allocated,
                    error: err,
                    snapshots: snaps.observed,
                    reverted_gen: snaps.reverted_gen,
                    revert_error: snaps.outcome.revert_error,
                })
            })
            .collect();
        if let Some(w) = &s.wanted {
            for v in &w.volumes {
                if !ids.contains(&v.id) {
                    if let Some(e) = s.errors.get(&v.id) {
                        out.push(ObservedVolume {
                            id: v.id,
                            size_bytes: 0,
                            allocated_bytes: 0,
                            error: Some(e.clone()),
                            snapshots: Vec::new(),
                            reverted_gen: 0,
                            revert_error: None,
                        });
                    }
                }
            }
        }
        out
    }
    /// Whether volume `id` has a revert the master asked for and the passes
    /// did not apply yet (a root volume's instance is not launched until
    /// then: it boots the reverted disk).
    pub fn revert_pending(&self, id: Uuid) -> bool {
        let s = self.state();
        let want = s
            .wanted
            .as_ref()
            .and_then(|w| w.volumes.iter().find(|v| v.id == id))
            .and_then(|v| v.revert);
        let done = s.snaps.get(&id).map(|x| x.reverted_gen).unwrap_or(0);
        want.is_some_and(|r| r.gen > done)
    }

    /// The exports that failed (`HostReport.exports`).
    pub fn export_errors(&self) -> Vec<ObservedExport> {
        super::exports::errors(&self.state().exports)
    }
}
