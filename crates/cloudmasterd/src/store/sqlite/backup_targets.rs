//! Where a disk's chain is kept (docs/storage.md, "Backups to a host over
//! ssh"): one chain, one place. A disk has one chain per host (its dirty
//! bitmap is one), so its backups there are kept at one ssh target at most:
//! `to` omitted takes the chain's, an ssh `to` other than the chain's is
//! refused, and `host` is taken (the chain is mirrored whole).

use super::backups::query;
use crate::store::backup::BackupRow;
use crate::store::*;
use cm_api::backup_target::{Target, HOST};
use cm_api::snapshot::SnapshotOf;
use rusqlite::Connection;
use uuid::Uuid;

/// `volume data`, `instance web's root disk`: the disk, for a refusal.
pub fn disk_words(of: SnapshotOf, source: &str) -> String {
    match of {
        SnapshotOf::Volume => format!("volume {source}"),
        SnapshotOf::InstanceRoot => format!("instance {source}'s root disk"),
    }
}

/// Whether a stored target is an ssh one (stored targets are canonical).
pub fn is_ssh(target: &str) -> bool {
    target.starts_with("ssh://")
}

/// The backups of the disk's chain on `host` that are part of it (not
/// failed), deleting ones included when `deleting`, oldest first.
fn chain(t: &Connection, disk: Uuid, host: HostId, deleting: bool) -> Result<Vec<BackupRow>> {
    let deleted = if deleting { "" } else { "AND b.deleted = 0" };
    query(
        t,
        &format!("b.disk_id = ?1 AND b.host_id = ?2 AND b.obs_error IS NULL {deleted}"),
        &[&disk.to_string(), &host],
    )
}

/// The ssh target of a chain's backups: the newest created live one's,
/// else (a chain whose ssh backups are all being deleted) the newest
/// deleting one's, so that their removal is mirrored too.
pub fn mirror_of<'a>(rows: impl IntoIterator<Item = &'a BackupRow>) -> Option<String> {
    let (mut live, mut gone) = (None, None);
    for b in rows {
        if b.facts.error.is_some() || !is_ssh(&b.target) {
            continue;
        }
        // Rows come oldest first: the last one seen is the newest.
        if b.deleted {
            gone = Some(b.target.clone());
        } else {
            live = Some(b.target.clone());
        }
    }
    live.or(gone)
}

/// The target a new backup of the disk's chain on `host` is kept at:
/// `asked` (canonical), checked against the chain, or the chain's own.
pub fn resolve(
    t: &Connection,
    disk: Uuid,
    host: HostId,
    what: &str,
    asked: Option<&str>,
) -> Result<String> {
    let Some(asked) = asked else {
        let live = chain(t, disk, host, false)?;
        return Ok(mirror_of(&live).unwrap_or_else(|| HOST.to_string()));
    };
    if !is_ssh(asked) {
        return Ok(asked.to_string());
    }
    let elsewhere: Vec<BackupRow> = chain(t, disk, host, true)?
        .into_iter()
        .filter(|b| is_ssh(&b.target) && b.target != asked)
        .collect();
    let Some(newest) = elsewhere.last() else {
        return other_hosts(t, disk, host, what, asked).map(|()| asked.to_string());
    };
    let names: Vec<&str> = elsewhere.iter().map(|b| b.name.as_str()).collect();
    let deleting = if elsewhere.iter().all(|b| b.deleted) {
        " (being deleted: wait until they are gone)"
    } else {
        ""
    };
    Err(StoreError::Refused {
        message: format!(
            "the backup chain of {what} on {} is kept at {}: backups {}{deleting}; \
             a disk's chain is kept in one place: delete those backups first to keep it at {asked}",
            newest.host_name,
            newest.target,
            names.join(", ")
        ),
        field: "to",
    })
}

/// The same machine and directory (users and ports aside): a chain's copy
/// is `PATH/CHAIN/` there, `CHAIN` named for the disk, not its host.
fn same_place(a: &str, b: &str) -> bool {
    match (Target::parse(a), Target::parse(b)) {
        (Ok(Target::Ssh(a)), Ok(Target::Ssh(b))) => {
            a.host.eq_ignore_ascii_case(&b.host) && a.path == b.path
        }
        _ => false,
    }
}

/// A chain of the same disk on another host (a volume moved since) kept
/// at the same place: both copies would be the same directory there, each
/// host's copy deleting the other's files.
fn other_hosts(t: &Connection, disk: Uuid, host: HostId, what: &str, asked: &str) -> Result<()> {
    let there: Vec<BackupRow> = query(
        t,
        "b.disk_id = ?1 AND b.host_id != ?2 AND b.obs_error IS NULL",
        &[&disk.to_string(), &host],
    )?
    .into_iter()
    .filter(|b| same_place(&b.target, asked))
    .collect();
    match there.last() {
        None => Ok(()),
        Some(b) => Err(StoreError::Refused {
            message: format!(
                "{} keeps the backup chain of {what} from host {} (backups {}); this host's \
                 chain would overwrite it there: keep it at another path",
                b.target,
                b.host_name,
                there
                    .iter()
                    .map(|b| b.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            field: "to",
        }),
    }
}

/// The schedules of the disk keeping it at another ssh target than
/// `target`: their next backups would be refused, so this one is.
pub fn check_schedules(t: &Connection, disk: Uuid, what: &str, target: &str) -> Result<()> {
    if !is_ssh(target) {
        return Ok(());
    }
    let other = super::backups::schedules(
        t,
        "disk_id = ?1 AND target LIKE 'ssh://%' AND target != ?2",
        &[&disk.to_string(), &target],
    )?;
    match other.first() {
        None => Ok(()),
        Some(s) => Err(StoreError::Refused {
            message: format!(
                "schedule {} backs up {what} to {}: a disk's chain is kept in one place: \
                 end it first (cm backup unschedule {}) to keep it at {target}",
                s.name, s.target, s.name
            ),
            field: "to",
        }),
    }
}

#[cfg(test)]
#[path = "backup_targets_tests.rs"]
mod tests;
