//! Snapshot operations, completed from their host's reports
//! (docs/storage.md, "Snapshots"): create when the host reports it taken
//! (the progress says its consistency), or failed with the host's error;
//! restore when the disk's applied revert gen reaches the operation's
//! `want`, or failed with the host's revert error; delete when the record
//! is purged. A clone is a `volume.create` (reconciler::volumes).

use super::volumes::gave_up;
use super::{failed, ok, Outcome};
use crate::state::App;
use crate::store::snapshot::{RevertRow, SnapshotRow};
use crate::store::{HostId, Millis, OperationRow};
use cm_api::snapshot::Consistency;
use cm_api::words::OperationKind as K;
use std::collections::HashMap;
use std::sync::Arc;

pub(super) fn is_snapshot(k: K) -> bool {
    matches!(
        k,
        K::SnapshotCreate | K::SnapshotRestore | K::SnapshotDelete
    )
}

fn consistency_word(c: Consistency) -> &'static str {
    match c {
        Consistency::Offline => "taken offline (no VM had the disk)",
        Consistency::Filesystem => "taken with the guest's file systems frozen (filesystem)",
        Consistency::Crash => "taken crash-consistent (the guest did not freeze)",
    }
}

/// The outcome of a snapshot's operation.
pub fn evaluate(
    op: &OperationRow,
    s: Option<&SnapshotRow>,
    revert: Option<&RevertRow>,
    host_up: bool,
) -> Outcome {
    let kind = op.op.kind;
    let Some(s) = s else {
        return match kind {
            K::SnapshotDelete => ok("deleted"),
            _ => failed("deleted", "the snapshot was deleted".into()),
        };
    };
    if s.deleted && kind != K::SnapshotDelete {
        return failed("deleted", "the snapshot was deleted".into());
    }
    let waiting = |what: &str| {
        Outcome::Running(if host_up {
            what.to_string()
        } else {
            format!("host {} is down; waiting for it", s.host_name)
        })
    };
    let host_failed = |e: &str| failed("error", format!("host {}: {e}", s.host_name));
    match kind {
        K::SnapshotCreate => match (s.facts.consistency, &s.facts.error) {
            (Some(c), _) => ok(consistency_word(c)),
            (None, Some(e)) => host_failed(e),
            (None, None) => waiting("waiting for the host to take it"),
        },
        K::SnapshotRestore => {
            let Some(r) = revert else {
                return failed("lost", "the disk's revert is no longer recorded".into());
            };
            if r.applied >= op.want {
                return ok("reverted");
            }
            if r.gen > op.want {
                return failed(
                    "superseded",
                    "another restore of the disk came after it".into(),
                );
            }
            match &r.error {
                Some(e) => host_failed(&format!(
                    "{e} (the restore stays recorded: the host tries again)"
                )),
                None => waiting("waiting for the host to revert the disk"),
            }
        }
        K::SnapshotDelete => waiting("waiting for the host to remove it"),
        _ => failed("wrong target", "not an operation on a snapshot".into()),
    }
}

/// Look at one snapshot operation; true when it changed.
pub(super) async fn operation(
    app: &Arc<App>,
    op: &OperationRow,
    up: &HashMap<HostId, bool>,
    down_since: &HashMap<HostId, Millis>,
    now: Millis,
) -> crate::app::Result<bool> {
    let target = op.op.target_id.to_string();
    let (snap, revert) = app
        .db(move |s| {
            let snap = match s.get_snapshot(&target) {
                Ok(v) => Some(v),
                Err(crate::store::StoreError::NotFound { .. }) => None,
                Err(e) => return Err(e),
            };
            let revert = match &snap {
                Some(v) => s.disk_revert(v.disk_id)?,
                None => None,
            };
            Ok((snap, revert))
        })
        .await?;
    let host_up = snap
        .as_ref()
        .is_none_or(|v| up.get(&v.host_id).copied().unwrap_or(false));
    let late = snap.as_ref().and_then(|v| {
        gave_up(
            op,
            &v.host_name,
            down_since.get(&v.host_id).copied(),
            now,
            app.settings.down_host_op_timeout,
        )
    });
    let outcome = late.unwrap_or_else(|| evaluate(op, snap.as_ref(), revert.as_ref(), host_up));
    super::record(app, op, outcome).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::new_operation;
    use crate::store::snapshot::SnapshotFacts;
    use cm_api::operation::OperationStatus;
    use cm_api::snapshot::SnapshotOf;
    use uuid::Uuid;

    fn snap() -> SnapshotRow {
        SnapshotRow {
            id: Uuid::new_v4(),
            name: "s1".into(),
            of: SnapshotOf::Volume,
            disk_id: Uuid::new_v4(),
            source_name: "data".into(),
            host_id: HostId::new_v4(),
            host_name: "h1".into(),
            deleted: false,
            deleted_gen: None,
            intent_gen: 1,
            facts: SnapshotFacts::default(),
            restoring: false,
            created_at: 0,
            updated_at: 0,
        }
    }

    fn op(kind: K, want: u64, s: &SnapshotRow) -> OperationRow {
        OperationRow {
            op: new_operation(kind, &s.name, s.id, "requested"),
            want,
        }
    }

    fn failed_with(o: &Outcome, words: &str) -> bool {
        matches!(o, Outcome::Done(OperationStatus::Failed, _, Some(e)) if e.message.contains(words))
    }

    #[test]
    fn create_restore_and_delete_complete_from_reports() {
        let mut s = snap();
        let create = op(K::SnapshotCreate, 0, &s);
        assert!(matches!(
            evaluate(&create, Some(&s), None, true),
            Outcome::Running(_)
        ));
        s.facts.error = Some("no space".into());
        assert!(failed_with(
            &evaluate(&create, Some(&s), None, true),
            "no space"
        ));
        s.facts = SnapshotFacts {
            consistency: Some(Consistency::Filesystem),
            size_bytes: Some(1 << 20),
            error: None,
        };
        match evaluate(&create, Some(&s), None, true) {
            Outcome::Done(OperationStatus::Succeeded, p, None) => {
                assert!(p.contains("filesystem"), "{p}")
            }
            o => panic!("{o:?}"),
        }
        let restore = op(K::SnapshotRestore, 2, &s);
        let mut r = RevertRow {
            disk_id: s.disk_id,
            of: s.of,
            host_id: s.host_id,
            snapshot: s.id,
            gen: 2,
            intent_gen: 1,
            applied: 1,
            error: None,
        };
        assert!(matches!(
            evaluate(&restore, Some(&s), Some(&r), true),
            Outcome::Running(_)
        ));
        r.error = Some("qemu-img: locked".into());
        assert!(failed_with(
            &evaluate(&restore, Some(&s), Some(&r), true),
            "locked"
        ));
        r.error = None;
        r.applied = 2;
        assert_eq!(evaluate(&restore, Some(&s), Some(&r), true), ok("reverted"));
        let delete = op(K::SnapshotDelete, 0, &s);
        s.deleted = true;
        assert!(matches!(
            evaluate(&delete, Some(&s), None, true),
            Outcome::Running(_)
        ));
        assert_eq!(evaluate(&delete, None, None, true), ok("deleted"));
        assert!(failed_with(
            &evaluate(&restore, Some(&s), Some(&r), true),
            "deleted"
        ));
    }
}
