//! A simulated host's volumes (docs/storage.md): files kept in memory,
//! made, grown and removed at once; the disks each simulated VM holds
//! (`Disks`), attached at once, released at once unless the test said
//! `hang VOLUME` (its guest never releases it: the detach times out after
//! the simulated stop time, or, with `force`, the VM is restarted without it).

use cm_api::agent::{
    AttachmentState, CloneSource, DesiredState, ObservedAttachment, ObservedVolume,
};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// What a fresh qcow2 file takes on disk (its header and tables).
pub const EMPTY_QCOW2: u64 = 196_608;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimFile {
    pub name: String,
    pub size_bytes: u64,
    pub error: Option<String>,
}

/// The files of one host, and the volumes whose guests never release them.
#[derive(Debug, Default)]
pub struct Files {
    pub files: HashMap<Uuid, SimFile>,
    pub hung: HashSet<Uuid>,
}

impl Files {
    /// Make what is missing, grow what is smaller, remove what was deleted
    /// unless a VM holds it (`held`).
    #[cfg(test)]
    pub fn apply(&mut self, desired: &DesiredState, held: &HashSet<Uuid>) -> bool {
        self.apply_cloning(desired, held, &|_| Some(0))
    }

    /// As `apply`; a clone's file is made only once its source snapshot
    /// is held on this host (`source`: its size).
    pub fn apply_cloning(
        &mut self,
        desired: &DesiredState,
        held: &HashSet<Uuid>,
        source: &dyn Fn(&CloneSource) -> Option<u64>,
    ) -> bool {
        let mut changed = false;
        for d in &desired.volumes {
            // A volume moving here: its file comes from the transfer (sim/transfers.rs).
            if d.import.is_some() {
                continue;
            }
            let missing = !self.files.contains_key(&d.id);
            if missing && d.clone_from.as_ref().is_some_and(|c| source(c).is_none()) {
                continue;
            }
            let f = self.files.entry(d.id).or_insert_with(|| {
                changed = true;
                SimFile {
                    name: d.name.clone(),
                    size_bytes: d.size_bytes,
                    error: None,
                }
            });
            if f.size_bytes < d.size_bytes {
                f.size_bytes = d.size_bytes;
                changed = true;
            }
        }
        for id in &desired.deleted_volumes {
            if held.contains(id) {
                if let Some(f) = self.files.get_mut(id) {
                    let e = Some("a VM holds it: not removed".to_string());
                    changed |= f.error != e;
                    f.error = e;
                }
            } else if self.files.remove(id).is_some() {
                self.hung.remove(id);
                changed = true;
            }
        }
        changed
    }

    /// The file of a volume named by name or id.
    pub fn find(&self, volume: &str) -> Option<Uuid> {
        self.files
            .iter()
            .find(|(id, f)| f.name == volume || id.to_string() == volume)
            .map(|(id, _)| *id)
    }

    pub fn report(&self) -> Vec<ObservedVolume> {
        let mut out: Vec<ObservedVolume> = self
            .files
            .iter()
            .map(|(id, f)| ObservedVolume {
                id: *id,
                size_bytes: f.size_bytes,
                allocated_bytes: EMPTY_QCOW2.min(f.size_bytes),
                error: f.error.clone(),
                snapshots: Vec::new(),
                reverted_gen: 0,
                revert_error: None,
            })
            .collect();
        out.sort_by_key(|v| v.id);
        out
    }

    /// Bytes the files take.
    pub fn allocated(&self) -> u64 {
        self.files
            .values()
            .map(|f| EMPTY_QCOW2.min(f.size_bytes))
            .sum()
    }
}

/// A disk a VM holds; `releasing` since when its guest was asked to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Disk {
    releasing: Option<Instant>,
    error: Option<String>,
}

/// What changed when a VM's disks were brought towards its desired list.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Synced {
    pub changed: bool,
    /// A forced detach timed out: the VM is to restart without the disk.
    pub restart: bool,
    /// When to look again (a release under way).
    pub due: Option<Instant>,
}

/// The disks of one VM.
#[derive(Debug, Default)]
pub struct Disks(BTreeMap<Uuid, Disk>);

impl Disks {
    pub fn holds(&self) -> impl Iterator<Item = &Uuid> {
        self.0.keys()
    }

    /// Bring the disks towards `wanted` (the desired volumes whose files
    /// exist). A VM that is not up takes the list as it is (it is on the
    /// next launch's command line); a running one releases a disk at once
    /// unless its guest hangs (`hung`), then after `timeout` the release
    /// fails, or is forced when the volume is in `force`.
    #[allow(clippy::too_many_arguments)]
    pub fn sync(
        &mut self,
        wanted: &[Uuid],
        up: bool,
        hung: &HashSet<Uuid>,
        force: &[Uuid],
        now: Instant,
        timeout: Duration,
    ) -> Synced {
        let mut out = Synced::default();
        for id in wanted {
            let d = self.0.entry(*id).or_insert_with(|| {
                out.changed = true;
                Disk::default()
            });
            if d.releasing.is_some() {
                *d = Disk::default();
                out.changed = true;
            }
        }
        let extra: Vec<Uuid> = self
            .0
            .keys()
            .filter(|id| !wanted.contains(id))
            .copied()
            .collect();
        for id in extra {
            if !up || !hung.contains(&id) {
                self.0.remove(&id);
                out.changed = true;
                continue;
            }
            let Some(d) = self.0.get_mut(&id) else {
                continue;
            };
            let since = *d.releasing.get_or_insert_with(|| {
                out.changed = true;
                now
            });
            if now < since + timeout {
                out.due = Some(since + timeout);
            } else if force.contains(&id) {
                self.0.remove(&id);
                out.restart = true;
                out.changed = true;
            } else if d.error.is_none() {
                d.error = Some(format!(
                    "the guest did not release the disk within {}s (simulated)",
                    cm_api::volume::DETACH_TIMEOUT_SECS
                ));
                out.changed = true;
            }
        }
        out
    }

    pub fn report(&self) -> Vec<ObservedAttachment> {
        self.0
            .iter()
            .map(|(id, d)| ObservedAttachment {
                volume: *id,
                state: match d.releasing {
                    Some(_) => AttachmentState::Detaching,
                    None => AttachmentState::Attached,
                },
                error: d.error.clone(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cm_api::agent::DesiredVolume;

    fn desired(vols: &[(Uuid, u64)], deleted: &[Uuid]) -> DesiredState {
        DesiredState {
            cloud_id: Uuid::nil(),
            generation: 1,
            instances: vec![],
            requests: vec![],
            report_interval_secs: 1,
            deleted: vec![],
            volumes: vols
                .iter()
                .map(|(id, size)| DesiredVolume {
                    id: *id,
                    name: format!("v{size}"),
                    size_bytes: *size,
                    snapshots: Vec::new(),
                    deleted_snapshots: Vec::new(),
                    revert: None,
                    clone_from: None,
                    image: None,
                    import: None,
                })
                .collect(),
            deleted_volumes: deleted.to_vec(),
            exports: Vec::new(),
            chains: Vec::new(),
        }
    }

    #[test]
    fn files_are_made_grown_never_shrunk_and_removed_unless_held() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let mut f = Files::default();
        assert!(f.apply(
            &desired(&[(a, 1 << 20), (b, 2 << 20)], &[]),
            &HashSet::new()
        ));
        assert!(f.apply(&desired(&[(a, 4 << 20)], &[]), &HashSet::new()));
        assert!(!f.apply(&desired(&[(a, 1 << 20)], &[]), &HashSet::new()));
        assert_eq!(f.files[&a].size_bytes, 4 << 20);
        // A file absent from the list is kept; a deleted one a VM holds too.
        let held: HashSet<Uuid> = [b].into();
        f.apply(&desired(&[], &[b]), &held);
        assert!(f.files[&b].error.is_some());
        f.apply(&desired(&[], &[b]), &HashSet::new());
        assert_eq!(f.report().len(), 1);
    }

    #[test]
    fn a_hung_guest_times_out_and_force_restarts_without_the_disk() {
        let v = Uuid::new_v4();
        let (t0, timeout) = (Instant::now(), Duration::from_millis(500));
        let hung: HashSet<Uuid> = [v].into();
        let mut d = Disks::default();
        assert!(d.sync(&[v], true, &hung, &[], t0, timeout).changed);
        let s = d.sync(&[], true, &hung, &[], t0, timeout);
        assert_eq!(s.due, Some(t0 + timeout));
        assert_eq!(d.report()[0].state, AttachmentState::Detaching);
        d.sync(&[], true, &hung, &[], t0 + timeout, timeout);
        assert!(d.report()[0].error.is_some());
        let s = d.sync(&[], true, &hung, &[v], t0 + timeout, timeout);
        assert!(s.restart);
        assert!(d.report().is_empty());
        // Without a hang, a release is at once.
        d.sync(&[v], true, &hung, &[], t0, timeout);
        d.sync(&[], true, &HashSet::new(), &[], t0, timeout);
        assert!(d.report().is_empty());
    }
}
