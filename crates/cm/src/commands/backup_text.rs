//! How `cm backup` prints backups and schedules: the table, one backup's
//! fields, and the lines said when a backup or a restore is done.

use crate::output::{fields, opt, Tabular};
use cm_api::backup::{Backup, BackupKind, BackupSchedule, BackupState};
use cm_api::human_time;
use cm_api::snapshot::{Consistency, SnapshotOf};
use cm_api::volume::{approx_size, human_size, Volume};
use std::time::Duration;

pub fn state_word(s: BackupState) -> &'static str {
    match s {
        BackupState::Creating => "creating",
        BackupState::Ready => "ready",
        BackupState::Deleting => "deleting",
        BackupState::Error => "error",
    }
}

pub fn consistency_word(c: Option<Consistency>) -> &'static str {
    match c {
        Some(Consistency::Offline) => "offline",
        Some(Consistency::Filesystem) => "filesystem",
        Some(Consistency::Crash) => "crash",
        None => "-",
    }
}

/// `volume data`, `instance web (root)`.
pub fn of_words(b: &Backup) -> String {
    match b.of {
        SnapshotOf::Volume => format!("volume {}", b.source),
        SnapshotOf::InstanceRoot => format!("instance {} (root)", b.source),
    }
}

fn kind_word(k: Option<BackupKind>) -> &'static str {
    match k {
        Some(BackupKind::Full) => "full",
        Some(BackupKind::Incremental) => "incremental",
        None => "-",
    }
}

/// `full: the first backup of this chain`, `incremental`.
pub fn kind_words(b: &Backup) -> String {
    match (b.kind, &b.full_reason) {
        (Some(BackupKind::Full), Some(why)) => format!("full: {why}"),
        (k, _) => kind_word(k).to_string(),
    }
}

fn size(b: Option<u64>) -> String {
    b.map_or_else(|| "-".into(), human_size)
}

fn bytes(b: Option<u64>) -> String {
    b.map_or_else(|| "-".into(), approx_size)
}

/// `1.24 s`, `310 ms`.
pub fn secs(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else {
        format!("{:.2} s", ms as f64 / 1000.0)
    }
}

/// Whether the chain's copy over ssh holds this backup: `current`,
/// `not yet`, `not yet (ERROR)`; `None` for a backup kept on its host only.
pub fn copy_words(b: &Backup) -> Option<String> {
    let ssh = b.target != cm_api::backup_target::HOST;
    match (b.mirrored, &b.mirror_error) {
        (Some(true), _) => Some("current".into()),
        (_, Some(e)) => Some(format!("not yet ({})", e.replace(char::is_control, " "))),
        (Some(false), None) => Some("not yet".into()),
        (None, None) if ssh => Some("not yet".into()),
        (None, None) => None,
    }
}

/// The list's short form of it: `current`, `not yet`, `failing`, `-`.
fn copy_word(b: &Backup) -> &'static str {
    match (b.mirrored, &b.mirror_error) {
        (Some(true), _) => "current",
        (_, Some(_)) => "failing",
        (Some(false), None) => "not yet",
        (None, None) if b.target != cm_api::backup_target::HOST => "not yet",
        (None, None) => "-",
    }
}

fn dur(d: Duration) -> String {
    secs(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// What is said when a backup was waited for.
pub fn made_line(b: &Backup, waited: Duration) -> String {
    let mut line = format!(
        "backup {} of {} is {} on {}: {}, {} consistent, disk {}, file {}",
        b.name,
        of_words(b),
        state_word(b.state),
        b.host,
        kind_words(b),
        consistency_word(b.consistency),
        size(b.size_bytes),
        bytes(b.file_bytes),
    );
    if let Some(ms) = b.took_ms {
        line.push_str(&format!(", made in {}", secs(ms)));
    }
    line.push_str(&format!(" ({} in all)", dur(waited)));
    if let Some(copy) = copy_words(b) {
        line.push_str(&format!("; copy at {}: {copy}", b.target));
    }
    if let Some(e) = &b.error {
        line.push_str(&format!("; error: {e}"));
    }
    line
}

/// What is said when a restore was waited for.
pub fn restored_line(b: &Backup, v: &Volume, took: Duration) -> String {
    format!(
        "volume {} is {} on {} ({}), restored from backup {} of {} (chain on {}) in {}",
        v.name,
        v.state.as_str(),
        v.host,
        human_size(v.size_bytes),
        b.name,
        of_words(b),
        b.host,
        dur(took)
    )
}

pub fn table(list: &[Backup]) {
    let mut t = Tabular::new(&[
        "name",
        "source",
        "kind",
        "consistency",
        "size",
        "file",
        "host",
        "copy",
        "state",
        "created",
    ])
    .numeric(&[4, 5]);
    for b in list {
        t.row(vec![
            b.name.clone(),
            of_words(b),
            kind_word(b.kind).to_string(),
            consistency_word(b.consistency).to_string(),
            size(b.size_bytes),
            bytes(b.file_bytes),
            b.host.clone(),
            copy_word(b).to_string(),
            state_word(b.state).to_string(),
            human_time(&b.created_at),
        ]);
    }
    t.print();
}

pub fn show(b: &Backup) {
    let mut rows = vec![
        ("name", b.name.clone()),
        ("id", b.id.to_string()),
        ("state", state_word(b.state).to_string()),
        ("of", of_words(b)),
        ("source id", b.source_id.to_string()),
        ("host", b.host.clone()),
        ("target", b.target.clone()),
    ];
    if let Some(copy) = copy_words(b) {
        rows.push(("copy there", copy));
    }
    rows.extend([
        ("kind", kind_words(b)),
        ("consistency", consistency_word(b.consistency).to_string()),
        ("size", size(b.size_bytes)),
        ("file", bytes(b.file_bytes)),
        ("took", b.took_ms.map_or_else(|| "-".into(), secs)),
        ("schedule", opt(&b.schedule)),
        ("created", human_time(&b.created_at)),
    ]);
    if let Some(e) = &b.error {
        rows.push(("error", e.clone()));
    }
    fields(&rows);
}

/// `1h`, `30m`, `90s`: a schedule's period as it was likely typed.
pub fn period(secs: u64) -> String {
    for (unit, n) in [("d", 86_400), ("h", 3600), ("m", 60)] {
        if secs >= n && secs.is_multiple_of(n) {
            return format!("{}{unit}", secs / n);
        }
    }
    format!("{secs}s")
}

pub fn schedule_table(list: &[BackupSchedule]) {
    let mut t = Tabular::new(&["name", "source", "every", "keep", "target", "next"]).numeric(&[3]);
    for s in list {
        let of = match s.of {
            SnapshotOf::Volume => format!("volume {}", s.source),
            SnapshotOf::InstanceRoot => format!("instance {} (root)", s.source),
        };
        t.row(vec![
            s.name.clone(),
            of,
            period(s.every_secs),
            s.keep.to_string(),
            s.target.clone(),
            human_time(&s.next_at),
        ]);
    }
    t.print();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_read_as_typed() {
        assert_eq!(period(3600), "1h");
        assert_eq!(period(1800), "30m");
        assert_eq!(period(86_400 * 2), "2d");
        assert_eq!(period(90), "90s");
        assert_eq!(secs(310), "310 ms");
        assert_eq!(secs(1240), "1.24 s");
    }

    fn backup(target: &str, mirrored: Option<bool>, err: Option<&str>) -> Backup {
        serde_json::from_value(serde_json::json!({
            "id": "00000000-0000-4000-8000-000000000001",
            "name": "b1",
            "state": "ready",
            "of": "volume",
            "source": "data",
            "source_id": "00000000-0000-4000-8000-000000000002",
            "host": "h1",
            "target": target,
            "mirrored": mirrored,
            "mirror_error": err,
            "created_at": "2026-12-03T08:00:00Z",
        }))
        .unwrap()
    }

    #[test]
    fn the_copy_over_ssh_is_said_plainly() {
        let nas = "ssh://backup@nas:22/srv/cm-backups";
        assert_eq!(copy_words(&backup("host", None, None)), None);
        assert_eq!(copy_word(&backup("host", None, None)), "-");
        assert_eq!(copy_words(&backup(nas, None, None)).unwrap(), "not yet");
        assert_eq!(
            copy_words(&backup(nas, Some(true), None)).unwrap(),
            "current"
        );
        assert_eq!(copy_word(&backup(nas, Some(true), None)), "current");
        let failing = backup(nas, Some(false), Some("ssh: refused\nagain"));
        assert_eq!(
            copy_words(&failing).unwrap(),
            "not yet (ssh: refused again)"
        );
        assert_eq!(copy_word(&failing), "failing");
        // A backup kept on its host in a mirrored chain is copied too.
        assert_eq!(
            copy_words(&backup("host", Some(true), None)).unwrap(),
            "current"
        );
    }
}
