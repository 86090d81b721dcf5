//! The `snapshot.*` events a host's report makes: a snapshot taken (with
//! its consistency), a disk reverted, a snapshot removed, a failure.

use crate::state::App;
use crate::store::snapshot::SnapshotReport;
use cm_api::words::EventKind;

fn consistency_word(c: cm_api::snapshot::Consistency) -> &'static str {
    use cm_api::snapshot::Consistency as C;
    match c {
        C::Offline => "offline",
        C::Filesystem => "filesystem",
        C::Crash => "crash",
    }
}

pub async fn report(app: &App, out: &SnapshotReport) {
    for ch in &out.changed {
        let (a, b) = (&ch.before.facts, &ch.after.facts);
        let name = &ch.after.name;
        if let (None, Some(c)) = (a.consistency, b.consistency) {
            let msg = format!(
                "taken of {} on {} ({} consistency)",
                ch.after.source_name,
                ch.after.host_name,
                consistency_word(c)
            );
            app.event(EventKind::SnapshotCreated, name, &msg).await;
        }
        if let Some(e) = b.error.as_ref().filter(|e| Some(*e) != a.error.as_ref()) {
            app.event(EventKind::SnapshotError, name, e).await;
        }
    }
    for (before, after) in &out.reverts {
        let id = after.snapshot.to_string();
        let target = match app.db(move |s| s.get_snapshot(&id)).await {
            Ok(s) => s.name,
            Err(_) => after.snapshot.to_string(),
        };
        if after.applied > before.applied && after.applied >= after.gen {
            let msg = format!("its disk reverted to it (restore {})", after.gen);
            app.event(EventKind::SnapshotRestored, &target, &msg).await;
        }
        if let Some(e) = after
            .error
            .as_ref()
            .filter(|e| Some(*e) != before.error.as_ref())
        {
            let msg = format!("restore failed: {e}");
            app.event(EventKind::SnapshotError, &target, &msg).await;
        }
    }
    for gone in &out.purged {
        let msg = format!("removed from {} on {}", gone.source_name, gone.host_name);
        app.event(EventKind::SnapshotDeleted, &gone.name, &msg)
            .await;
    }
    if !out.changed.is_empty() || !out.purged.is_empty() || !out.reverts.is_empty() {
        app.ops_changed();
        app.kick.notify_one();
    }
}
