//! The volume facts of a host's report: its files, the disks its VMs
//! hold, and the purge of deleted volumes whose file is gone.

use super::codec::i;
use super::hosts;
use super::volumes::{by_id, query};
use crate::store::volume::*;
use crate::store::*;
use cm_api::agent::{AttachmentState, ObservedVolume};
use rusqlite::{params, Connection};
use std::collections::HashMap;

fn state_word(s: AttachmentState) -> &'static str {
    match s {
        AttachmentState::Attached => "attached",
        AttachmentState::Detaching => "detaching",
    }
}

pub fn record_report(
    t: &Connection,
    host: HostId,
    files: &[ObservedVolume],
    observed: &[ObservedInstance],
    now: Millis,
) -> Result<VolumeReport> {
    let applied = hosts::get(t, &host.to_string())?.applied_generation;
    let files: HashMap<uuid::Uuid, &ObservedVolume> = files.iter().map(|f| (f.id, f)).collect();
    let mut holders = HashMap::new();
    for o in observed {
        for a in &o.volumes {
            holders.entry(a.volume).or_insert((InstanceId(o.id), a));
        }
    }
    let mut out = VolumeReport::default();
    for before in query(t, "v.host_id = ?1", &[&host])? {
        let file = files.get(&before.id.uuid());
        if before.deleted && file.is_none() && applied >= before.deleted_gen.unwrap_or(u64::MAX) {
            t.execute(
                "DELETE FROM operations WHERE target_id = ?1 AND status != 'running'",
                [before.id],
            )?;
            t.execute("DELETE FROM volumes WHERE id = ?1", [before.id])?;
            out.purged.push(before);
            continue;
        }
        let fresh = applied >= before.intent_gen;
        let held = holders.get(&before.id.uuid());
        let facts = VolumeFacts {
            size_bytes: file.map(|f| f.size_bytes),
            allocated_bytes: file.map(|f| f.allocated_bytes),
            error: file.and_then(|f| f.error.clone()).filter(|_| fresh),
            holder: held.map(|(i, _)| (*i, String::new())),
            attach_state: held.map(|(_, a)| a.state),
            attach_error: held.and_then(|(_, a)| a.error.clone()).filter(|_| fresh),
        };
        let same = facts.size_bytes == before.facts.size_bytes
            && facts.allocated_bytes == before.facts.allocated_bytes
            && facts.error == before.facts.error
            && facts.holder.as_ref().map(|h| h.0) == before.facts.holder.as_ref().map(|h| h.0)
            && facts.attach_state == before.facts.attach_state
            && facts.attach_error == before.facts.attach_error;
        if same {
            continue;
        }
        t.execute(
            "UPDATE volumes SET obs_size_bytes = ?2, obs_allocated = ?3, obs_error = ?4,
                obs_instance_id = ?5, obs_attach_state = ?6, obs_attach_error = ?7, updated_at = ?8
             WHERE id = ?1",
            params![
                before.id,
                facts.size_bytes.map(i),
                facts.allocated_bytes.map(i),
                facts.error,
                facts.holder.as_ref().map(|h| h.0),
                facts.attach_state.map(state_word),
                facts.attach_error,
                now
            ],
        )?;
        let after = by_id(t, before.id)?;
        out.changed.push(VolumeChanged { before, after });
    }
    Ok(out)
}
