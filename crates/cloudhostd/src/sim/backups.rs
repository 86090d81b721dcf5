//! A simulated host's backup chains (docs/storage.md, "Backups (point
//! 6)"), in memory: each backup the desired state lists is made at once,
//! the first of a chain full (`the first backup of this chain`), later ones
//! incremental; `offline` when no running simulated VM holds the disk,
//! `crash` otherwise (no guest freezes here). Deleted ones are dropped. A
//! backup of a disk this host does not have is reported failed. A chain
//! outlives its disk: restores export from it (sim/transfers.rs).

use super::snapshots::Holder;
use cm_api::agent::{DesiredChain, ObservedBackup};
use cm_api::backup::BackupKind;
use cm_api::snapshot::Consistency;
use std::collections::HashMap;
use uuid::Uuid;

/// The share of a disk a simulated full backup's file takes, and an
/// increment's: a fresh disk holds little.
const FULL_SHARE: u64 = 8;
const INCREMENT_SHARE: u64 = 64;
/// How long a simulated backup says it took.
const TOOK_MS: u64 = 40;

#[derive(Debug, Default)]
pub struct Chains {
    /// By disk id: its backups, oldest first (made ones and failed ones).
    chains: HashMap<Uuid, Vec<ObservedBackup>>,
}

impl Chains {
    /// Make what the desired chains lack, drop what they delete. `size_of`
    /// is a disk's virtual size (None: not on this host), `held` how a
    /// disk is held now. True when anything changed.
    pub fn apply(
        &mut self,
        desired: &[DesiredChain],
        size_of: &dyn Fn(&DesiredChain) -> Option<u64>,
        held: &dyn Fn(Uuid) -> Holder,
    ) -> bool {
        let mut changed = false;
        for ch in desired {
            let size = size_of(ch);
            let chain = self.chains.entry(ch.disk.disk).or_default();
            let before = chain.len();
            chain.retain(|b| !ch.deleted.contains(&b.id));
            changed |= chain.len() != before;
            for id in &ch.backups {
                if chain.iter().any(|b| b.id == *id) {
                    continue;
                }
                changed = true;
                let made = chain.iter().any(|b| b.error.is_none());
                chain.push(match size {
                    None => ObservedBackup {
                        id: *id,
                        disk: ch.disk,
                        kind: None,
                        full_reason: None,
                        consistency: None,
                        size_bytes: 0,
                        file_bytes: 0,
                        took_ms: 0,
                        error: Some("this host does not have the disk".into()),
                        mirrored: None,
                        mirror_error: None,
                    },
                    Some(size) => ObservedBackup {
                        id: *id,
                        disk: ch.disk,
                        kind: Some(if made {
                            BackupKind::Incremental
                        } else {
                            BackupKind::Full
                        }),
                        full_reason: (!made).then(|| "the first backup of this chain".into()),
                        consistency: Some(match held(ch.disk.disk) {
                            Holder::Free => Consistency::Offline,
                            Holder::GuestUp | Holder::GuestDown => Consistency::Crash,
                        }),
                        size_bytes: size,
                        file_bytes: size / if made { INCREMENT_SHARE } else { FULL_SHARE },
                        took_ms: TOOK_MS,
                        error: None,
                        // A simulated mirror copies at once.
                        mirrored: ch.mirror.as_ref().map(|_| true),
                        mirror_error: None,
                    },
                });
            }
        }
        changed
    }

    /// Every backup of every chain.
    pub fn report(&self) -> Vec<ObservedBackup> {
        let mut out: Vec<ObservedBackup> = self.chains.values().flatten().cloned().collect();
        out.sort_by_key(|b| b.id);
        out
    }

    /// The virtual size of a made backup of a disk's chain.
    pub fn size_of(&self, disk: Uuid, backup: Uuid) -> Option<u64> {
        self.chains
            .get(&disk)?
            .iter()
            .find(|b| b.id == backup && b.error.is_none())
            .map(|b| b.size_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cm_api::agent::DiskRef;
    use cm_api::snapshot::SnapshotOf;

    fn chain(disk: Uuid, backups: &[Uuid], deleted: &[Uuid]) -> DesiredChain {
        DesiredChain {
            disk: DiskRef {
                of: SnapshotOf::Volume,
                disk,
                backup: None,
            },
            backups: backups.to_vec(),
            deleted: deleted.to_vec(),
            made: Vec::new(),
            mirror: None,
        }
    }

    #[test]
    fn a_chain_is_full_then_incremental_and_drops_what_is_deleted() {
        let mut c = Chains::default();
        let (disk, b1, b2) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let size = |_: &DesiredChain| Some(1u64 << 30);
        assert!(c.apply(&[chain(disk, &[b1], &[])], &size, &|_| Holder::Free));
        assert!(!c.apply(&[chain(disk, &[b1], &[])], &size, &|_| Holder::Free));
        assert!(c.apply(&[chain(disk, &[b1, b2], &[])], &size, &|_| {
            Holder::GuestUp
        }));
        let r = c.report();
        let first = r.iter().find(|b| b.id == b1).unwrap();
        let second = r.iter().find(|b| b.id == b2).unwrap();
        assert_eq!(
            (first.kind, first.full_reason.as_deref(), first.consistency),
            (
                Some(BackupKind::Full),
                Some("the first backup of this chain"),
                Some(Consistency::Offline)
            )
        );
        assert_eq!(
            (
                second.kind,
                second.full_reason.as_deref(),
                second.consistency
            ),
            (
                Some(BackupKind::Incremental),
                None,
                Some(Consistency::Crash)
            )
        );
        assert!(second.file_bytes < first.file_bytes);
        assert_eq!(c.size_of(disk, b2), Some(1 << 30));
        // Deleted: dropped; the chain still restores the other.
        assert!(c.apply(&[chain(disk, &[b2], &[b1])], &size, &|_| Holder::Free));
        assert_eq!(c.report().len(), 1);
        assert_eq!(c.size_of(disk, b1), None);
    }

    #[test]
    fn a_backup_of_a_disk_not_here_fails() {
        let mut c = Chains::default();
        let (disk, b1) = (Uuid::new_v4(), Uuid::new_v4());
        c.apply(&[chain(disk, &[b1], &[])], &|_| None, &|_| Holder::Free);
        let r = c.report();
        assert_eq!(r.len(), 1);
        assert!(r[0].error.is_some() && r[0].kind.is_none());
        assert_eq!(c.size_of(disk, b1), None);
    }
}
