//! Backup operations, completed from their chain host's reports
//! (docs/storage.md, "Backups (point 6)"): create when the host reports it
//! made (the progress says full or incremental and why, its consistency,
//! sizes and time), or failed with the host's error; delete when the record
//! is purged. A restore is a transfer (app::transfers).

use super::volumes::gave_up;
use super::{failed, ok, Outcome};
use crate::app::backup_events::made_words;
use crate::state::App;
use crate::store::backup::BackupRow;
use crate::store::{HostId, Millis, OperationRow};
use cm_api::words::OperationKind as K;
use std::collections::HashMap;
use std::sync::Arc;

pub(super) fn is_backup(k: K) -> bool {
    matches!(k, K::BackupCreate | K::BackupDelete)
}

/// The outcome of a backup's operation.
pub fn evaluate(op: &OperationRow, b: Option<&BackupRow>, host_up: bool) -> Outcome {
    let kind = op.op.kind;
    let Some(b) = b else {
        return match kind {
            K::BackupDelete => ok("deleted"),
            _ => failed("deleted", "the backup was deleted".into()),
        };
    };
    if b.deleted && kind != K::BackupDelete {
        return failed("deleted", "the backup was deleted".into());
    }
    let waiting = |what: &str| {
        Outcome::Running(if host_up {
            what.to_string()
        } else {
            format!("host {} is down; waiting for it", b.host_name)
        })
    };
    match kind {
        K::BackupCreate => match (made_words(&b.facts), &b.facts.error) {
            (Some(words), _) => ok(&words),
            (None, Some(e)) => failed("error", format!("host {}: {e}", b.host_name)),
            (None, None) => waiting("waiting for the host to make it"),
        },
        K::BackupDelete => waiting("waiting for the host to remove it"),
        _ => failed("wrong target", "not an operation on a backup".into()),
    }
}

/// Look at one backup operation; true when it changed.
pub(super) async fn operation(
    app: &Arc<App>,
    op: &OperationRow,
    up: &HashMap<HostId, bool>,
    down_since: &HashMap<HostId, Millis>,
    now: Millis,
) -> crate::app::Result<bool> {
    let target = op.op.target_id.to_string();
    let b = app
        .db(move |s| match s.get_backup(&target) {
            Ok(v) => Ok(Some(v)),
            Err(crate::store::StoreError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        })
        .await?;
    let host_up = b
        .as_ref()
        .is_none_or(|v| up.get(&v.host_id).copied().unwrap_or(false));
    let late = b.as_ref().and_then(|v| {
        gave_up(
            op,
            &v.host_name,
            down_since.get(&v.host_id).copied(),
            now,
            app.settings.down_host_op_timeout,
        )
    });
    let outcome = late.unwrap_or_else(|| evaluate(op, b.as_ref(), host_up));
    super::record(app, op, outcome).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::backup::BackupFacts;
    use cm_api::backup::BackupKind;
    use cm_api::operation::{Operation, OperationStatus};
    use uuid::Uuid;

    fn op(kind: K) -> OperationRow {
        OperationRow {
            op: Operation {
                id: Uuid::new_v4(),
                kind,
                target: "b".into(),
                target_id: Uuid::nil(),
                status: OperationStatus::Running,
                progress: String::new(),
                error: None,
                created_at: cm_api::time::to_timestamp(0),
                updated_at: cm_api::time::to_timestamp(0),
            },
            want: 0,
        }
    }

    fn row() -> BackupRow {
        BackupRow {
            id: Uuid::nil(),
            name: "b".into(),
            of: cm_api::snapshot::SnapshotOf::Volume,
            disk_id: Uuid::nil(),
            source_name: "data".into(),
            host_id: HostId::default(),
            host_name: "h1".into(),
            target: "host".into(),
            schedule_id: None,
            schedule_name: None,
            deleted: false,
            deleted_gen: None,
            intent_gen: 0,
            facts: BackupFacts::default(),
            created_at: 0,
            updated_at: 0,
        }
    }

    #[test]
    fn a_create_ends_when_its_host_made_or_failed_it() {
        let mut b = row();
        let waiting = evaluate(&op(K::BackupCreate), Some(&b), false);
        assert!(
            matches!(&waiting, Outcome::Running(p) if p.contains("host h1 is down")),
            "{waiting:?}"
        );
        b.facts.kind = Some(BackupKind::Incremental);
        let done = evaluate(&op(K::BackupCreate), Some(&b), true);
        assert!(
            matches!(&done, Outcome::Done(OperationStatus::Succeeded, p, None) if p == "incremental"),
            "{done:?}"
        );
        b.facts = BackupFacts {
            error: Some("no space".into()),
            ..BackupFacts::default()
        };
        let bad = evaluate(&op(K::BackupCreate), Some(&b), true);
        assert!(
            matches!(&bad, Outcome::Done(OperationStatus::Failed, _, Some(e)) if e.message.contains("no space")),
            "{bad:?}"
        );
    }

    #[test]
    fn a_delete_ends_when_the_record_is_gone() {
        let done = evaluate(&op(K::BackupDelete), None, true);
        assert!(matches!(
            done,
            Outcome::Done(OperationStatus::Succeeded, _, None)
        ));
        let gone = evaluate(&op(K::BackupCreate), None, true);
        assert!(matches!(gone, Outcome::Done(OperationStatus::Failed, _, _)));
    }
}
