//! The `backup.*` events of a host's report (a backup made, a failure, a
//! backup removed) and of a schedule tick (a schedule ended with its
//! source); the store appends them in the same transaction as the facts.

use super::volume_events::new_event;
use crate::state::App;
use crate::store::backup::{BackupFacts, BackupReport, ScheduleTick};
use crate::store::engine::NewEvent;
use cm_api::backup::BackupKind;
use cm_api::snapshot::Consistency;
use cm_api::words::EventKind;

fn consistency_word(c: Consistency) -> &'static str {
    match c {
        Consistency::Offline => "offline",
        Consistency::Filesystem => "filesystem",
        Consistency::Crash => "crash",
    }
}

/// `1.0G`, `300 MiB`: in GiB from a GiB, else in MiB.
fn gib(b: u64) -> String {
    format!("{:.1}G", b as f64 / (1u64 << 30) as f64)
}

fn size(b: u64) -> String {
    if b >= 1 << 30 {
        gib(b)
    } else {
        format!("{} MiB", b.div_ceil(1 << 20))
    }
}

/// What a made backup is, in words: `full (the first backup of this
/// chain), filesystem consistency, 1.0G disk, 300 MiB file, in 1.2 s`.
pub fn made_words(f: &BackupFacts) -> Option<String> {
    let kind = match f.kind? {
        BackupKind::Full => match &f.full_reason {
            Some(why) => format!("full ({why})"),
            None => "full".to_string(),
        },
        BackupKind::Incremental => "incremental".to_string(),
    };
    let mut parts = vec![kind];
    if let Some(c) = f.consistency {
        parts.push(format!("{} consistency", consistency_word(c)));
    }
    if let Some(s) = f.size_bytes {
        parts.push(format!("{} disk", size(s)));
    }
    if let Some(s) = f.file_bytes {
        parts.push(format!("{} file", size(s)));
    }
    if let Some(ms) = f.took_ms {
        parts.push(format!("in {:.1} s", ms as f64 / 1000.0));
    }
    Some(parts.join(", "))
}

/// The events of a report's changes.
pub fn events(out: &BackupReport) -> Vec<NewEvent> {
    let mut evs = Vec::new();
    for ch in &out.changed {
        let (a, b) = (&ch.before.facts, &ch.after.facts);
        let name = &ch.after.name;
        if a.kind.is_none() {
            if let Some(words) = made_words(b) {
                let msg = format!(
                    "of {} on {}: {words}",
                    ch.after.source_name, ch.after.host_name
                );
                evs.push(new_event(EventKind::BackupCreated, name, msg));
            }
        }
        if let Some(e) = b.error.as_ref().filter(|e| Some(*e) != a.error.as_ref()) {
            let msg = format!("host {}: {e}", ch.after.host_name);
            evs.push(new_event(EventKind::BackupError, name, msg));
        }
    }
    for gone in &out.purged {
        let msg = format!(
            "removed from the chain of {} on {}",
            gone.source_name, gone.host_name
        );
        evs.push(new_event(EventKind::BackupDeleted, &gone.name, msg));
    }
    evs
}

/// The events of a schedule tick.
pub fn tick_events(out: &ScheduleTick) -> Vec<NewEvent> {
    out.ended
        .iter()
        .map(|s| {
            let msg = format!(
                "ended: {} '{}' is gone (its backups stay)",
                match s.of {
                    cm_api::snapshot::SnapshotOf::Volume => "volume",
                    cm_api::snapshot::SnapshotOf::InstanceRoot => "instance",
                },
                s.source_name
            );
            new_event(EventKind::BackupSchedule, &s.name, msg)
        })
        .collect()
}

/// Tell followers of the committed events; wake what waits.
pub fn published(app: &App, out: BackupReport) {
    let moved = !out.changed.is_empty() || !out.purged.is_empty();
    for ev in out.events {
        super::owned::publish(app, ev);
    }
    if moved {
        app.ops_changed();
        app.kick.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_made_backup_reads_as_people_say_it() {
        let f = BackupFacts {
            kind: Some(BackupKind::Full),
            full_reason: Some("the first backup of this chain".into()),
            consistency: Some(Consistency::Filesystem),
            size_bytes: Some(1 << 30),
            file_bytes: Some(300 << 20),
            took_ms: Some(1200),
            error: None,
            mirrored: None,
            mirror_error: None,
        };
        assert_eq!(
            made_words(&f).as_deref(),
            Some(
                "full (the first backup of this chain), filesystem consistency, \
                 1.0G disk, 300 MiB file, in 1.2 s"
            )
        );
        assert_eq!(made_words(&BackupFacts::default()), None);
    }
}
