//! Instances: desired state (owned here) and observed state (from reports).

use super::codec::{self, i, json, to_json, u, uuid};
use super::hosts;
use super::log::insert_operation;
use crate::store::*;
use rusqlite::{params, Connection, OptionalExtension, Row};

pub const COLS: &str = "i.id, i.name, i.image_id, img.name, i.flavor, i.memory_mib, i.vcpus, i.disk_gib,
    i.host_id, h.name, i.ports, i.restart_policy, i.accel, i.stop_timeout_secs,
    i.desired_power, i.boot_gen, i.reboot_gen, i.stop_timeout_now, i.deleted, i.deleted_gen,
    i.obs_state, i.obs_reason, i.obs_boot_gen, i.obs_reboot_gen, i.obs_pid, i.obs_accel, i.obs_since,
    i.running_since, i.restart_count, i.backoff_step, i.next_restart_at, i.created_at, i.updated_at,
    i.dynamic_domain, i.guest_seq, i.guest_seen_at, i.guest_services, c.status, c.reason";

pub const FROM: &str =
    "instances i JOIN images img ON img.id = i.image_id JOIN hosts h ON h.id = i.host_id
    LEFT JOIN configs c ON c.instance_id = i.id";

/// The raw columns, decoded in `decode` (rusqlite's closure cannot return our error).
pub struct Raw {
    s: [String; 10],
    flavor: Option<String>,
    n: [i64; 12],
    opt_n: [Option<i64>; 6],
    obs_state: Option<String>,
    obs_reason: Option<String>,
    obs_accel: Option<String>,
    deleted: bool,
    /// dynamic domain, guest services, config status, config reason
    extra_s: [Option<String>; 4],
    /// guest seq, guest seen at
    extra_n: [Option<i64>; 2],
}

pub fn row(r: &Row<'_>) -> rusqlite::Result<Raw> {
    Ok(Raw {
        s: [
            r.get(0)?,  // id
            r.get(1)?,  // name
            r.get(2)?,  // image id
            r.get(3)?,  // image name
            r.get(8)?,  // host id
            r.get(9)?,  // host name
            r.get(10)?, // ports
            r.get(11)?, // restart policy
            r.get(12)?, // accel
            r.get(14)?, // desired power
        ],
        flavor: r.get(4)?,
        n: [
            r.get(5)?,  // memory
            r.get(6)?,  // vcpus
            r.get(7)?,  // disk
            r.get(13)?, // stop timeout
            r.get(15)?, // boot gen
            r.get(16)?, // reboot gen
            r.get(22)?, // obs boot gen
            r.get(23)?, // obs reboot gen
            r.get(28)?, // restart count
            r.get(29)?, // backoff step
            r.get(31)?, // created
            r.get(32)?, // updated
        ],
        opt_n: [
            r.get(17)?, // stop timeout now
            r.get(19)?, // deleted gen
            r.get(24)?, // obs pid
            r.get(26)?, // obs since
            r.get(27)?, // running since
            r.get(30)?, // next restart
        ],
        obs_state: r.get(20)?,
        obs_reason: r.get(21)?,
        obs_accel: r.get(25)?,
        deleted: r.get(18)?,
        extra_s: [r.get(33)?, r.get(36)?, r.get(37)?, r.get(38)?],
        extra_n: [r.get(34)?, r.get(35)?],
    })
}

pub fn decode(raw: Raw) -> Result<InstanceRow> {
    Ok(InstanceRow {
        id: uuid(&raw.s[0])?,
        name: raw.s[1].clone(),
        image_id: uuid(&raw.s[2])?,
        image_name: raw.s[3].clone(),
        flavor: raw.flavor,
        memory_mib: u(raw.n[0]),
        vcpus: u(raw.n[1]) as u32,
        disk_gib: u(raw.n[2]),
        host_id: uuid(&raw.s[4])?,
        host_name: raw.s[5].clone(),
        ports: json("ports", &raw.s[6])?,
        restart_policy: codec::restart_policy(&raw.s[7])?,
        accel: codec::accel(&raw.s[8])?,
        stop_timeout_secs: u(raw.n[3]) as u32,
        desired_power: codec::power(&raw.s[9])?,
        boot_gen: u(raw.n[4]),
        reboot_gen: u(raw.n[5]),
        stop_timeout_now: raw.opt_n[0].map(|v| u(v) as u32),
        deleted: raw.deleted,
        deleted_gen: raw.opt_n[1].map(u),
        obs_state: codec::observed(raw.obs_state)?,
        obs_reason: raw.obs_reason,
        obs_boot_gen: u(raw.n[6]),
        obs_reboot_gen: u(raw.n[7]),
        obs_pid: raw.opt_n[2].map(|v| u(v) as u32),
        obs_accel: raw.obs_accel,
        obs_since: raw.opt_n[3],
        running_since: raw.opt_n[4],
        restart_count: u(raw.n[8]) as u32,
        backoff_step: u(raw.n[9]) as u32,
        next_restart_at: raw.opt_n[5],
        created_at: raw.n[10],
        updated_at: raw.n[11],
        dynamic_domain: raw.extra_s[0].clone(),
        guest_seq: raw.extra_n[0].map(u),
        guest_seen_at: raw.extra_n[1],
        guest_services: raw.extra_s[1]
            .as_deref()
            .map(|s| json("guest services", s))
            .transpose()?
            .unwrap_or_default(),
        config_status: raw.extra_s[2].clone(),
        config_reason: raw.extra_s[3].clone(),
    })
}

pub fn query(
    c: &Connection,
    where_: &str,
    args: &[&dyn rusqlite::ToSql],
) -> Result<Vec<InstanceRow>> {
    let mut stmt = c.prepare(&format!(
        "SELECT {COLS} FROM {FROM} WHERE {where_} ORDER BY i.name, i.created_at"
    ))?;
    let rows = stmt.query_map(args, row)?;
    let mut out = Vec::new();
    for r in rows {
        out.push(decode(r?)?);
    }
    Ok(out)
}

pub fn list(c: &Connection) -> Result<Vec<InstanceRow>> {
    query(c, "1 = 1", &[])
}

pub fn by_id(c: &Connection, id: Uuid) -> Result<InstanceRow> {
    let raw = c
        .query_row(
            &format!("SELECT {COLS} FROM {FROM} WHERE i.id = ?1"),
            [id.to_string()],
            row,
        )
        .optional()?
        .ok_or_else(|| StoreError::NotFound {
            what: "instance",
            name: id.to_string(),
        })?;
    decode(raw)
}

/// By id, or by name among live instances (a deleting one is found by id only
/// when a live one has taken its name).
pub fn get(c: &Connection, name_or_id: &str) -> Result<InstanceRow> {
    let raw = c
        .query_row(
            &format!(
                "SELECT {COLS} FROM {FROM} WHERE i.id = ?1 OR i.name = ?1
                 ORDER BY (i.id = ?1) DESC, i.deleted ASC, i.created_at DESC LIMIT 1"
            ),
            [name_or_id],
            row,
        )
        .optional()?
        .ok_or_else(|| StoreError::NotFound {
            what: "instance",
            name: name_or_id.to_string(),
        })?;
    decode(raw)
}

pub fn create(
    t: &Connection,
    new: &NewInstance,
    config: Option<&NewConfig>,
    place: &Placer<'_>,
    op: &Operation,
    now: Millis,
) -> Result<InstanceRow> {
    let taken: Option<String> = t
        .query_row(
            "SELECT id FROM instances WHERE name = ?1 AND deleted = 0",
            [&new.name],
            |r| r.get(0),
        )
        .optional()?;
    if taken.is_some() {
        return Err(StoreError::AlreadyExists(format!(
            "instance '{}' exists already",
            new.name
        )));
    }
    let capacity = hosts::capacities(t)?;
    let host_id = place(&capacity).map_err(StoreError::Refused)?;
    t.execute(
        "INSERT INTO instances (id, name, image_id, flavor, memory_mib, vcpus, disk_gib, host_id, ports,
            restart_policy, accel, stop_timeout_secs, desired_power, boot_gen, created_at, updated_at, dynamic_domain)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, 'running', 1, ?13, ?13, ?14)",
        params![
            new.id.to_string(),
            new.name,
            new.image_id.to_string(),
            new.flavor,
            i(new.memory_mib),
            new.vcpus,
            i(new.disk_gib),
            host_id.to_string(),
            to_json(&new.ports)?,
            new.restart_policy.as_str(),
            new.accel.as_str(),
            new.stop_timeout_secs,
            now,
            new.dynamic_domain
        ],
    )?;
    if let Some(c) = config {
        super::configs::insert(t, c, now)?;
    }
    hosts::bump_generation(t, host_id)?;
    insert_operation(t, op, 1)?;
    by_id(t, new.id)
}

/// Apply a desired-state change in the caller's transaction.
pub fn change(
    t: &Connection,
    id: Uuid,
    change: DesiredChange,
    op: Option<&Operation>,
    now: Millis,
) -> Result<Changed> {
    let row = by_id(t, id)?;
    if row.deleted && !matches!(change, DesiredChange::Delete) {
        return Err(StoreError::Conflict(format!(
            "instance '{}' is being deleted",
            row.name
        )));
    }
    let mut want = 0u64;
    let effective = match change {
        DesiredChange::Start => {
            use cm_api::agent::ObservedState as O;
            let start_pending = row.boot_gen > row.obs_boot_gen;
            let current_boot_up = row.obs_boot_gen == row.boot_gen
                && matches!(row.obs_state, Some(O::Running | O::Starting | O::Preparing));
            if row.desired_power == Power::Running && (start_pending || current_boot_up) {
                want = row.boot_gen;
                false
            } else {
                want = row.boot_gen + 1;
                t.execute(
                    "UPDATE instances SET desired_power = 'running', boot_gen = ?2, stop_timeout_now = NULL,
                        next_restart_at = NULL, backoff_step = 0, updated_at = ?3 WHERE id = ?1",
                    params![id.to_string(), i(want), now],
                )?;
                true
            }
        }
        DesiredChange::Stop { timeout_secs } => {
            let already = row.desired_power == Power::Stopped
                && matches!(
                    row.obs_state,
                    Some(cm_api::agent::ObservedState::Stopped) | None
                );
            t.execute(
                "UPDATE instances SET desired_power = 'stopped', stop_timeout_now = ?2, next_restart_at = NULL,
                    updated_at = ?3 WHERE id = ?1",
                params![id.to_string(), timeout_secs, now],
            )?;
            !already
        }
        DesiredChange::Reboot => {
            if row.desired_power != Power::Running {
                return Err(StoreError::Conflict(format!(
                    "instance '{}' is stopped: start it instead",
                    row.name
                )));
            }
            want = row.reboot_gen + 1;
            t.execute(
                "UPDATE instances SET reboot_gen = ?2, updated_at = ?3 WHERE id = ?1",
                params![id.to_string(), i(want), now],
            )?;
            true
        }
        DesiredChange::Delete => {
            if row.deleted {
                false
            } else {
                let host_gen = hosts::generation(t, row.host_id)? + 1;
                // Its config record goes with it: its guest can no longer fetch.
                t.execute(
                    "DELETE FROM configs WHERE instance_id = ?1",
                    [id.to_string()],
                )?;
                // A dynamic record it held goes back to its domain's pool.
                super::holders::release_held(t, id, now)?;
                t.execute(
                    "UPDATE instances SET deleted = 1, deleted_gen = ?2, desired_power = 'stopped',
                        next_restart_at = NULL, updated_at = ?3 WHERE id = ?1",
                    params![id.to_string(), i(host_gen), now],
                )?;
                true
            }
        }
        DesiredChange::Restart {
            expected_boot_gen,
            backoff_step,
        } => {
            if row.boot_gen != expected_boot_gen || row.desired_power != Power::Running {
                false
            } else {
                want = row.boot_gen + 1;
                t.execute(
                    "UPDATE instances SET boot_gen = ?2, restart_count = restart_count + 1, backoff_step = ?3,
                        next_restart_at = NULL, updated_at = ?4 WHERE id = ?1",
                    params![id.to_string(), i(want), backoff_step, now],
                )?;
                true
            }
        }
        DesiredChange::GiveUp => {
            t.execute(
                "UPDATE instances SET desired_power = 'stopped', next_restart_at = NULL, updated_at = ?2 WHERE id = ?1",
                params![id.to_string(), now],
            )?;
            row.desired_power != Power::Stopped
        }
        DesiredChange::ScheduleRestart { at } => {
            t.execute(
                "UPDATE instances SET next_restart_at = ?2, updated_at = ?3 WHERE id = ?1",
                params![id.to_string(), at, now],
            )?;
            // Nothing for the host to do until the restart is due.
            if let Some(op) = op {
                insert_operation(t, op, want)?;
            }
            return Ok(Changed {
                row: by_id(t, id)?,
                effective: true,
            });
        }
    };
    if effective {
        hosts::bump_generation(t, row.host_id)?;
    }
    if let Some(op) = op {
        insert_operation(t, op, want)?;
    }
    Ok(Changed {
        row: by_id(t, id)?,
        effective,
    })
}

pub fn down(c: &Connection) -> Result<Vec<InstanceRow>> {
    query(
        c,
        "i.deleted = 0 AND i.desired_power = 'running' AND i.obs_state IN ('stopped', 'error')
         AND i.obs_boot_gen >= i.boot_gen",
        &[],
    )
}
