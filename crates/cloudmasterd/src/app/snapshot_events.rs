//! The `snapshot.*` events a host's report makes: a snapshot taken (with
//! its consistency), a disk reverted, a snapshot removed, a failure. The
//! store appends them in the report's own transaction.

use super::volume_events::new_event;
use crate::state::App;
use crate::store::engine::NewEvent;
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

/// The events of a report's changes.
pub fn events(out: &SnapshotReport) -> Vec<NewEvent> {
    let mut evs = Vec::new();
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
            evs.push(new_event(EventKind::SnapshotCreated, name, msg));
        }
        if let Some(e) = b.error.as_ref().filter(|e| Some(*e) != a.error.as_ref()) {
            evs.push(new_event(EventKind::SnapshotError, name, e.clone()));
        }
    }
    for r in &out.reverts {
        let (before, after) = (&r.before, &r.after);
        if after.applied > before.applied && after.applied >= after.gen {
            let msg = format!("its disk reverted to it (restore {})", after.gen);
            evs.push(new_event(EventKind::SnapshotRestored, &r.name, msg));
        }
        if let Some(e) = after
            .error
            .as_ref()
            .filter(|e| Some(*e) != before.error.as_ref())
        {
            let msg = format!("restore failed: {e}");
            evs.push(new_event(EventKind::SnapshotError, &r.name, msg));
        }
    }
    for gone in &out.purged {
        let msg = format!("removed from {} on {}", gone.source_name, gone.host_name);
        evs.push(new_event(EventKind::SnapshotDeleted, &gone.name, msg));
    }
    evs
}

/// Tell followers of the report's committed events; wake what waits.
pub fn published(app: &App, out: SnapshotReport) {
    let moved = !out.changed.is_empty() || !out.purged.is_empty() || !out.reverts.is_empty();
    for ev in out.events {
        super::owned::publish(app, ev);
    }
    if moved {
        app.ops_changed();
        app.kick.notify_one();
    }
}
