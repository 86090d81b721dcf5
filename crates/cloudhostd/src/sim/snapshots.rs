//! A simulated host's snapshots (docs/storage.md, "Snapshots"): taken,
//! removed and reverted at once in memory, per disk (a volume's file or an
//! instance's root disk). Consistency: `offline` when no running simulated
//! VM holds the disk, else `filesystem` when its guest is up (its agent
//! beats), else `crash`. A disk a running VM holds is never reverted: the
//! revert waits until the VM is stopped (it is applied before a start).

use cm_api::agent::{DesiredRevert, ObservedSnapshot};
use cm_api::snapshot::Consistency;
use std::collections::{BTreeMap, HashMap};
use uuid::Uuid;

/// How a disk is held now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder {
    /// No running VM has it.
    Free,
    /// A running VM whose guest agent is up.
    GuestUp,
    /// A running VM whose guest does not answer.
    GuestDown,
}

/// The snapshots of one disk and its applied revert.
#[derive(Debug, Default, Clone)]
pub struct DiskSnaps {
    pub held: BTreeMap<Uuid, ObservedSnapshot>,
    pub reverted_gen: u64,
    pub revert_error: Option<String>,
}

/// What one disk is to hold (from a DesiredVolume or a DesiredInstance).
pub struct Want<'a> {
    pub disk: Uuid,
    /// None: the disk does not exist (yet): nothing is taken.
    pub size_bytes: Option<u64>,
    pub snapshots: &'a [Uuid],
    pub deleted: &'a [Uuid],
    pub revert: Option<DesiredRevert>,
    pub holder: Holder,
}

#[derive(Debug, Default)]
pub struct Snaps(pub HashMap<Uuid, DiskSnaps>);

impl Snaps {
    /// Take what is missing, remove what was deleted, apply a new revert
    /// when no running VM holds the disk. True when anything changed.
    pub fn apply(&mut self, w: &Want<'_>) -> bool {
        let Some(size) = w.size_bytes else {
            return false;
        };
        let d = self.0.entry(w.disk).or_default();
        let mut changed = false;
        for id in w.snapshots {
            d.held.entry(*id).or_insert_with(|| {
                changed = true;
                ObservedSnapshot {
                    id: *id,
                    consistency: Some(match w.holder {
                        Holder::Free => Consistency::Offline,
                        Holder::GuestUp => Consistency::Filesystem,
                        Holder::GuestDown => Consistency::Crash,
                    }),
                    size_bytes: size,
                    error: None,
                }
            });
        }
        for id in w.deleted {
            changed |= d.held.remove(id).is_some();
        }
        if let Some(r) = w.revert.filter(|r| r.gen > d.reverted_gen) {
            if w.holder == Holder::Free {
                if d.held.contains_key(&r.snapshot) {
                    d.reverted_gen = r.gen;
                    d.revert_error = None;
                } else {
                    d.revert_error = Some(format!(
                        "the disk holds no snapshot {} (simulated)",
                        cm_api::snapshot::snapshot_tag(r.snapshot)
                    ));
                }
                changed = true;
            }
        }
        changed
    }

    /// The disk's snapshots, as a report says them.
    pub fn of(&self, disk: Uuid) -> (Vec<ObservedSnapshot>, u64, Option<String>) {
        match self.0.get(&disk) {
            Some(d) => (
                d.held.values().cloned().collect(),
                d.reverted_gen,
                d.revert_error.clone(),
            ),
            None => (Vec::new(), 0, None),
        }
    }

    /// The size of a snapshot a disk holds (a clone's source), if held.
    pub fn size_of(&self, disk: Uuid, snapshot: Uuid) -> Option<u64> {
        Some(self.0.get(&disk)?.held.get(&snapshot)?.size_bytes)
    }

    /// A removed disk takes its snapshots with it.
    pub fn forget(&mut self, disk: Uuid) {
        self.0.remove(&disk);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_are_taken_with_their_consistency_removed_and_reverted_once() {
        let (disk, a, b) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let mut s = Snaps::default();
        let snaps = [a];
        let w = Want {
            disk,
            size_bytes: Some(1 << 20),
            snapshots: &snaps,
            deleted: &[],
            revert: None,
            holder: Holder::GuestDown,
        };
        assert!(s.apply(&w));
        assert!(!s.apply(&w), "taken once");
        let snaps2 = [a, b];
        let w2 = Want {
            snapshots: &snaps2,
            holder: Holder::GuestUp,
            ..w
        };
        s.apply(&w2);
        let (held, _, _) = s.of(disk);
        let by: HashMap<Uuid, Option<Consistency>> =
            held.iter().map(|o| (o.id, o.consistency)).collect();
        assert_eq!(by[&a], Some(Consistency::Crash));
        assert_eq!(by[&b], Some(Consistency::Filesystem));
        // A revert waits while a running VM holds the disk.
        let r = Some(DesiredRevert {
            snapshot: a,
            gen: 1,
        });
        let w3 = Want {
            snapshots: &snaps2,
            revert: r,
            holder: Holder::GuestUp,
            ..w
        };
        assert!(!s.apply(&w3));
        assert_eq!(s.of(disk).1, 0);
        let w4 = Want {
            holder: Holder::Free,
            ..w3
        };
        assert!(s.apply(&w4));
        assert_eq!(s.of(disk).1, 1);
        assert!(!s.apply(&w4), "a gen is applied once");
        let del = [b];
        let w5 = Want {
            snapshots: &snaps,
            deleted: &del,
            ..w4
        };
        assert!(s.apply(&w5));
        assert_eq!(s.of(disk).0.len(), 1);
        assert_eq!(s.size_of(disk, a), Some(1 << 20));
    }
}
