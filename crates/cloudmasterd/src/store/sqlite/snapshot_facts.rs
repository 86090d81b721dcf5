//! The snapshot facts of a host's report: the snapshots each disk holds
//! (or could not take), the reverts applied, and the purge of deleted
//! snapshots their host no longer holds.

use super::codec::i;
use super::hosts;
use super::snapshots::{by_id, consistency_word, query, reverts};
use crate::store::snapshot::*;
use crate::store::*;
use cm_api::agent::{ObservedSnapshot, ObservedVolume};
use rusqlite::{params, Connection};
use std::collections::HashMap;
use uuid::Uuid;

/// What a report says of one disk.
struct Disk<'a> {
    snapshots: &'a [ObservedSnapshot],
    reverted_gen: u64,
    revert_error: Option<&'a String>,
}

fn disks<'a>(
    files: &'a [ObservedVolume],
    observed: &'a [ObservedInstance],
) -> HashMap<Uuid, Disk<'a>> {
    let mut out = HashMap::new();
    for f in files {
        out.insert(
            f.id,
            Disk {
                snapshots: &f.snapshots,
                reverted_gen: f.reverted_gen,
                revert_error: f.revert_error.as_ref(),
            },
        );
    }
    for o in observed {
        out.insert(
            o.id,
            Disk {
                snapshots: &o.root_snapshots,
                reverted_gen: o.root_reverted_gen,
                revert_error: o.root_revert_error.as_ref(),
            },
        );
    }
    out
}

pub fn record_report(
    t: &Connection,
    host: HostId,
    files: &[ObservedVolume],
    observed: &[ObservedInstance],
    now: Millis,
) -> Result<SnapshotReport> {
    let applied = hosts::get(t, &host.to_string())?.applied_generation;
    let disks = disks(files, observed);
    let mut out = SnapshotReport::default();
    for before in query(t, "s.host_id = ?1", &[&host])? {
        let disk = disks.get(&before.disk_id);
        let seen = disk.and_then(|d| d.snapshots.iter().find(|o| o.id == before.id));
        if before.deleted {
            if seen.is_none() && applied >= before.deleted_gen.unwrap_or(u64::MAX) {
                t.execute(
                    "DELETE FROM operations WHERE target_id = ?1 AND status != 'running'",
                    [before.id.to_string()],
                )?;
                t.execute(
                    "DELETE FROM disk_reverts WHERE snapshot_id = ?1",
                    [before.id.to_string()],
                )?;
                t.execute(
                    "DELETE FROM snapshots WHERE id = ?1",
                    [before.id.to_string()],
                )?;
                out.purged.push(before);
            }
            continue;
        }
        let fresh = applied >= before.intent_gen;
        let facts = match seen {
            Some(o) => SnapshotFacts {
                consistency: o.consistency,
                size_bytes: o.consistency.map(|_| o.size_bytes),
                error: o.error.clone().filter(|_| fresh),
            },
            // A disk the report does not hold (yet): nothing new of it.
            None if disk.is_none() => continue,
            None => SnapshotFacts::default(),
        };
        if facts == before.facts {
            continue;
        }
        t.execute(
            "UPDATE snapshots SET obs_consistency = ?2, obs_size_bytes = ?3, obs_error = ?4,
                 updated_at = ?5 WHERE id = ?1",
            params![
                before.id.to_string(),
                facts.consistency.map(consistency_word),
                facts.size_bytes.map(i),
                facts.error,
                now
            ],
        )?;
        let after = by_id(t, before.id)?;
        out.changed.push(SnapshotChanged { before, after });
    }
    for before in reverts(t, "host_id = ?1", &[&host])? {
        let Some(d) = disks.get(&before.disk_id) else {
            continue;
        };
        let fresh = applied >= before.intent_gen;
        let error = d
            .revert_error
            .cloned()
            .filter(|_| fresh && d.reverted_gen < before.gen);
        if d.reverted_gen == before.applied && error == before.error {
            continue;
        }
        t.execute(
            "UPDATE disk_reverts SET obs_gen = ?2, obs_error = ?3, updated_at = ?4
             WHERE disk_id = ?1",
            params![before.disk_id.to_string(), i(d.reverted_gen), error, now],
        )?;
        let mut after = before.clone();
        after.applied = d.reverted_gen;
        after.error = error;
        let name = by_id(t, after.snapshot)
            .map(|s| s.name)
            .unwrap_or_else(|_| after.snapshot.to_string());
        out.reverts.push(Reverted {
            before,
            after,
            name,
        });
    }
    Ok(out)
}
