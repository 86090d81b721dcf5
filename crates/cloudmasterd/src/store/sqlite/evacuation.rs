//! Dead hosts: forgetting one (with its instances, when forced) and moving
//! its instances elsewhere, to be rebuilt from their images.

use super::codec::i;
use super::{hosts, instances, log};
use crate::store::*;
use cm_api::ErrorCode;
use rusqlite::{params, Connection};

/// Forget a host, revoke its token; with `force`, forget its instances too.
pub fn delete(
    t: &Connection,
    name: &str,
    force: bool,
    now: Millis,
) -> Result<(HostRow, Vec<InstanceRow>)> {
    let host = hosts::get(t, name)?;
    let hid = host.id.to_string();
    let rows = instances::query(t, &format!("i.host_id = {}", instances::P1), &[&hid])?;
    let volumes: i64 = t.query_row(
        "SELECT COUNT(*) FROM volumes WHERE host_id = ?1",
        [&hid],
        |r| r.get(0),
    )?;
    if volumes > 0 && !force {
        return Err(StoreError::Conflict(format!(
            "host '{}' still has {volumes} volume(s): delete them, or remove the host with \
             --force, which forgets them",
            host.name
        )));
    }
    if !rows.is_empty() && !force {
        let live = rows.iter().filter(|r| !r.desired.deleted).count();
        return Err(StoreError::Conflict(format!(
            "host '{}' still has {} instance(s) ({live} not deleted): evacuate them \
             (cm host evacuate {}), delete them, or remove the host with --force, \
             which forgets them",
            host.name,
            rows.len(),
            host.name
        )));
    }
    let gone = ErrorBody {
        code: ErrorCode::HostUnavailable,
        message: format!("host {} was removed from the cloud", host.name),
        field: None,
    };
    for r in &rows {
        let id = r.id.to_string();
        let mut stmt =
            t.prepare("SELECT id FROM operations WHERE target_id = ?1 AND status = 'running'")?;
        let ops: Vec<String> = stmt
            .query_map([&id], |row| row.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        for op in ops {
            log::finish_operation(
                t,
                super::codec::uuid(&op)?,
                OperationStatus::Failed,
                "host removed",
                Some(&gone),
                now,
            )?;
        }
        // Its config record goes with it, as with a delete.
        t.execute("DELETE FROM configs WHERE instance_id = ?1", [&id])?;
        t.execute("DELETE FROM instances WHERE id = ?1", [&id])?;
    }
    let gone_volumes: Vec<String> = t
        .prepare("SELECT id FROM volumes WHERE host_id = ?1")?
        .query_map([&hid], |row| row.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for v in gone_volumes {
        t.execute(
            "UPDATE operations SET status = 'failed', progress = 'host removed', error = ?2,
                updated_at = ?3 WHERE target_id = ?1 AND status = 'running'",
            params![v, super::codec::to_json(&gone)?, now],
        )?;
    }
    t.execute("DELETE FROM volumes WHERE host_id = ?1", [&hid])?;
    // Its backup chains were on its disk: they go with it.
    t.execute(
        "UPDATE operations SET status = 'failed', progress = 'host removed', error = ?2,
            updated_at = ?3
         WHERE target_id IN (SELECT id FROM backups WHERE host_id = ?1) AND status = 'running'",
        params![&hid, super::codec::to_json(&gone)?, now],
    )?;
    t.execute("DELETE FROM backups WHERE host_id = ?1", [&hid])?;
    t.execute("DELETE FROM tokens WHERE host_id = ?1", [&hid])?;
    t.execute("DELETE FROM host_orphans WHERE host_id = ?1", [&hid])?;
    t.execute("DELETE FROM hosts WHERE id = ?1", [&hid])?;
    Ok((
        host,
        rows.into_iter().filter(|r| !r.desired.deleted).collect(),
    ))
}

/// Move every live instance of a host to other hosts, all or nothing.
pub fn evacuate(
    t: &Connection,
    name: &str,
    force: bool,
    is_down: &dyn Fn(&HostRow) -> bool,
    place: &EvacuationPlacer<'_>,
    now: Millis,
) -> Result<(HostRow, Vec<Moved>)> {
    let host = hosts::get(t, name)?;
    if !force && !is_down(&host) {
        return Err(StoreError::Refused {
            message: format!(
                "host {} is not down: evacuating it would run its instances twice. \
                 Stop its agent first, or force it (its VMs are then stopped and kept \
                 as orphans when it next hears from the master)",
                host.name
            ),
            field: "force",
        });
    }
    let hid = host.id.to_string();
    let mut stmt = t.prepare(
        "SELECT name FROM instances i WHERE host_id = ?1 AND deleted = 0 AND (holds_data = 1
            OR EXISTS (SELECT 1 FROM volumes v WHERE v.instance_id = i.id OR v.root_of = i.id))
         ORDER BY name",
    )?;
    let keep: Vec<String> = stmt
        .query_map([&hid], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    if !keep.is_empty() {
        return Err(StoreError::Conflict(format!(
            "instance(s) {} on host {} hold data marked to be kept (or volumes of that \
             host): they are not rebuilt elsewhere from their image",
            keep.join(", "),
            host.name
        )));
    }
    // Deleted instances stay: their host removes their files if it returns.
    let rows = instances::query(
        t,
        &format!("i.host_id = {} AND i.deleted = 0", instances::P1),
        &[&hid],
    )?;
    let mut moved = Vec::new();
    for row in rows {
        let caps: Vec<HostCapacity> = hosts::capacities(t)?
            .into_iter()
            .filter(|c| c.id != host.id)
            .collect();
        let to = place(&row, &caps).map_err(|e| e.of_instance(&row.name))?;
        let running = row.desired.power == Power::Running;
        let boot_gen = if running {
            row.desired.boot_gen + 1
        } else {
            row.desired.boot_gen
        };
        // A new VM from the image: nothing observed yet, no restart pending.
        t.execute(
            "UPDATE instances SET host_id = ?2, boot_gen = ?3, obs_state = NULL, obs_reason = NULL,
                obs_boot_gen = 0, obs_reboot_gen = 0, obs_pid = NULL, obs_accel = NULL,
                obs_since = NULL, running_since = NULL, next_restart_at = NULL, backoff_step = 0,
                guest_seq = NULL, guest_seen_at = NULL, guest_services = NULL, guest_liveness = NULL,
                updated_at = ?4
             WHERE id = ?1",
            params![row.id.to_string(), to.to_string(), i(boot_gen), now],
        )?;
        hosts::bump_generation(t, to)?;
        let op = if running {
            let op = new_operation(
                cm_api::words::OperationKind::InstanceEvacuate,
                &row.name,
                row.id,
                "placed on a new host; rebuilding from its image",
            );
            log::insert_operation(t, &op, boot_gen)?;
            Some(op)
        } else {
            None
        };
        moved.push(Moved {
            row: instances::by_id(t, row.id)?,
            op,
        });
    }
    hosts::bump_generation(t, host.id)?;
    Ok((host, moved))
}
