//! Instances: desired state (owned here) and observed state (from reports).

use super::codec::{self, columns, i, json, to_json, u, FromRow};
use super::hosts;
use super::log::insert_operation;
use crate::store::*;
use cm_api::words::StopReason;
use rusqlite::{params, Connection, OptionalExtension, Row};

pub const COLS: &str = "i.id, i.name, i.image_id, img.name AS image_name, i.flavor, i.memory_mib,
    i.vcpus, i.disk_gib, i.host_id, h.name AS host_name, i.ports, i.restart_policy, i.accel,
    i.stop_timeout_secs, i.desired_power, i.boot_gen, i.reboot_gen, i.stop_timeout_now, i.deleted,
    i.deleted_gen, i.obs_state, i.obs_reason, i.obs_boot_gen, i.obs_reboot_gen, i.obs_pid,
    i.obs_accel, i.obs_since, i.running_since, i.restart_count, i.backoff_step, i.next_restart_at,
    i.created_at, i.updated_at, i.dynamic_domain, i.guest_seq, i.guest_seen_at, i.guest_services,
    i.deployable_id, i.slot, i.health, i.guest_liveness, c.status AS config_status, c.reason AS config_reason,
    (SELECT json_group_array(name) FROM (SELECT name FROM volumes
        WHERE instance_id = i.id ORDER BY attach_pos)) AS volume_names,
    (SELECT name FROM volumes WHERE root_of = i.id) AS root_volume";

/// The first parameter of a query that joins, as text. A bare `?1` lets
/// SQLite's constant propagation depend on the bound value's type, and then
/// every new binding re-prepares the statement (a parse per request, the
/// most of `GET /v1/instances/{name}`'s time); a typed parameter does not.
pub const P1: &str = "CAST(?1 AS TEXT)";

pub const FROM: &str =
    "instances i JOIN images img ON img.id = i.image_id JOIN hosts h ON h.id = i.host_id
    LEFT JOIN configs c ON c.instance_id = i.id";

columns!(Cols {
    id,
    name,
    image_id,
    image_name,
    flavor,
    memory_mib,
    vcpus,
    disk_gib,
    host_id,
    host_name,
    ports,
    restart_policy,
    accel,
    stop_timeout_secs,
    desired_power,
    boot_gen,
    reboot_gen,
    stop_timeout_now,
    deleted,
    deleted_gen,
    obs_state,
    obs_reason,
    obs_boot_gen,
    obs_reboot_gen,
    obs_pid,
    obs_accel,
    obs_since,
    running_since,
    restart_count,
    backoff_step,
    next_restart_at,
    created_at,
    updated_at,
    dynamic_domain,
    guest_seq,
    guest_seen_at,
    guest_services,
    deployable_id,
    slot,
    health,
    guest_liveness,
    config_status,
    config_reason,
    volume_names,
    root_volume,
});

impl FromRow for InstanceRow {
    type Cols = Cols;
    fn cols(stmt: &rusqlite::Statement<'_>) -> rusqlite::Result<Cols> {
        Cols::of(stmt)
    }
    fn from_row(r: &Row<'_>, c: &Cols) -> Result<InstanceRow> {
        let n = |i: usize| -> Result<u64> { Ok(u(r.get(i)?)) };
        let small = |i: usize| -> Result<u32> { Ok(u32::try_from(n(i)?).unwrap_or(u32::MAX)) };
        let opt = |i: usize| -> Result<Option<u64>> { Ok(r.get::<_, Option<i64>>(i)?.map(u)) };
        let opt_small = |i: usize| -> Result<Option<u32>> {
            Ok(opt(i)?.map(|v| u32::try_from(v).unwrap_or(u32::MAX)))
        };
        let config_status: Option<String> = r.get(c.config_status)?;
        Ok(InstanceRow {
            id: r.get(c.id)?,
            name: r.get(c.name)?,
            host_id: r.get(c.host_id)?,
            host_name: r.get(c.host_name)?,
            spec: InstanceSpec {
                image_id: r.get(c.image_id)?,
                image_name: r.get(c.image_name)?,
                flavor: r.get(c.flavor)?,
                memory_mib: n(c.memory_mib)?,
                vcpus: small(c.vcpus)?,
                disk_gib: n(c.disk_gib)?,
                ports: json("ports", codec::text(r, c.ports)?)?,
                restart_policy: codec::restart_policy(codec::text(r, c.restart_policy)?)?,
                accel: codec::accel(codec::text(r, c.accel)?)?,
                stop_timeout_secs: small(c.stop_timeout_secs)?,
                dynamic_domain: r.get(c.dynamic_domain)?,
                owner: match (r.get(c.deployable_id)?, r.get::<_, Option<String>>(c.slot)?) {
                    (Some(deployable), Some(slot)) => Some(Owner { deployable, slot }),
                    _ => None,
                },
                health: codec::opt_json("health policy", r.get(c.health)?)?,
            },
            desired: Desired {
                power: codec::power(codec::text(r, c.desired_power)?)?,
                boot_gen: n(c.boot_gen)?,
                reboot_gen: n(c.reboot_gen)?,
                stop_timeout_now: opt_small(c.stop_timeout_now)?,
                deleted: r.get(c.deleted)?,
                deleted_gen: opt(c.deleted_gen)?,
            },
            observed: Observed {
                state: codec::observed(r.get(c.obs_state)?)?,
                reason: r
                    .get::<_, Option<String>>(c.obs_reason)?
                    .map(StopReason::from),
                boot_gen: n(c.obs_boot_gen)?,
                reboot_gen: n(c.obs_reboot_gen)?,
                pid: opt_small(c.obs_pid)?,
                accel: codec::resolved_accel(r.get(c.obs_accel)?)?,
                since: r.get(c.obs_since)?,
            },
            restart: RestartState {
                running_since: r.get(c.running_since)?,
                count: small(c.restart_count)?,
                backoff_step: small(c.backoff_step)?,
                next_at: r.get(c.next_restart_at)?,
            },
            guest: GuestState {
                seq: opt(c.guest_seq)?,
                seen_at: r.get(c.guest_seen_at)?,
                services: codec::opt_json("guest services", r.get(c.guest_services)?)?,
                liveness: r
                    .get::<_, Option<String>>(c.guest_liveness)?
                    .and_then(|w| cm_api::words::GuestLiveness::parse(&w)),
            },
            config: match config_status {
                Some(status) => Some(ConfigState {
                    status,
                    reason: r.get(c.config_reason)?,
                }),
                None => None,
            },
            volumes: json("volume names", codec::text(r, c.volume_names)?)?,
            root_volume: r.get(c.root_volume)?,
            created_at: r.get(c.created_at)?,
            updated_at: r.get(c.updated_at)?,
        })
    }
}

pub fn query(
    c: &Connection,
    where_: &str,
    args: &[&dyn rusqlite::ToSql],
) -> Result<Vec<InstanceRow>> {
    codec::all(
        c,
        &format!("SELECT {COLS} FROM {FROM} WHERE {where_} ORDER BY i.name, i.created_at"),
        args,
    )
}

pub fn list(c: &Connection) -> Result<Vec<InstanceRow>> {
    query(c, "1 = 1", &[])
}

pub fn by_id(c: &Connection, id: InstanceId) -> Result<InstanceRow> {
    codec::first(
        c,
        &format!("SELECT {COLS} FROM {FROM} WHERE i.id = {P1}"),
        [id],
    )?
    .ok_or_else(|| StoreError::NotFound {
        what: "instance",
        name: id.to_string(),
    })
}

/// By id, or by name among live instances (a deleting one is found by id only
/// when a live one has taken its name).
/// One instance by id or by name (the live one first, then the newest).
pub fn get_sql() -> String {
    format!(
        "SELECT {COLS} FROM {FROM} WHERE i.id = {P1} OR i.name = {P1}
         ORDER BY (i.id = {P1}) DESC, i.deleted ASC, i.created_at DESC LIMIT 1"
    )
}

pub fn get(c: &Connection, name_or_id: &str) -> Result<InstanceRow> {
    codec::first(c, &get_sql(), [name_or_id])?.ok_or_else(|| StoreError::NotFound {
        what: "instance",
        name: name_or_id.to_string(),
    })
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
    let host_id = place(&capacity)?;
    t.execute(
        "INSERT INTO instances (id, name, image_id, flavor, memory_mib, vcpus, disk_gib, host_id, ports,
            restart_policy, accel, stop_timeout_secs, desired_power, boot_gen, created_at, updated_at, dynamic_domain,
            deployable_id, slot, health)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, 'running', 1, ?13, ?13, ?14, ?15, ?16, ?17)",
        params![
            new.id,
            new.name,
            new.image_id,
            new.flavor,
            i(new.memory_mib),
            new.vcpus,
            i(new.disk_gib),
            host_id,
            to_json(&new.ports)?,
            new.restart_policy.as_str(),
            new.accel.as_str(),
            new.stop_timeout_secs,
            now,
            new.dynamic_domain,
            new.owner.as_ref().map(|o| o.deployable),
            new.owner.as_ref().map(|o| o.slot.as_str()),
            new.health.as_ref().map(to_json).transpose()?,
        ],
    )?;
    if let Some(c) = config {
        super::configs::insert(t, c, now)?;
    }
    super::volume_changes::attach_at_create(t, new.id, host_id, &new.volumes, now)?;
    if let Some(root) = &new.root {
        super::roots::create_root(t, new.id, new.image_id, host_id, root, now)?;
    }
    hosts::bump_generation(t, host_id)?;
    insert_operation(t, op, 1)?;
    by_id(t, new.id)
}

/// Apply a desired-state change in the caller's transaction.
pub fn change(
    t: &Connection,
    id: InstanceId,
    change: DesiredChange,
    op: Option<&Operation>,
    now: Millis,
) -> Result<Changed> {
    let row = by_id(t, id)?;
    if row.desired.deleted && !matches!(change, DesiredChange::Delete) {
        return Err(StoreError::Conflict(format!(
            "instance '{}' is being deleted",
            row.name
        )));
    }
    let mut want = 0u64;
    let effective = match change {
        DesiredChange::Start => {
            use cm_api::agent::ObservedState as O;
            let start_pending = row.desired.boot_gen > row.observed.boot_gen;
            let current_boot_up = row.observed.boot_gen == row.desired.boot_gen
                && matches!(
                    row.observed.state,
                    Some(O::Running | O::Starting | O::Preparing)
                );
            if row.desired.power == Power::Running && (start_pending || current_boot_up) {
                want = row.desired.boot_gen;
                false
            } else {
                want = row.desired.boot_gen + 1;
                t.execute(
                    "UPDATE instances SET desired_power = 'running', boot_gen = ?2, stop_timeout_now = NULL,
                        next_restart_at = NULL, backoff_step = 0, updated_at = ?3 WHERE id = ?1",
                    params![id, i(want), now],
                )?;
                true
            }
        }
        DesiredChange::Stop { timeout_secs } => {
            let already = row.desired.power == Power::Stopped
                && matches!(
                    row.observed.state,
                    Some(cm_api::agent::ObservedState::Stopped) | None
                );
            t.execute(
                "UPDATE instances SET desired_power = 'stopped', stop_timeout_now = ?2, next_restart_at = NULL,
                    updated_at = ?3 WHERE id = ?1",
                params![id, timeout_secs, now],
            )?;
            !already
        }
        DesiredChange::Reboot => {
            if row.desired.power != Power::Running {
                return Err(StoreError::Conflict(format!(
                    "instance '{}' is stopped: start it instead",
                    row.name
                )));
            }
            want = row.desired.reboot_gen + 1;
            t.execute(
                "UPDATE instances SET reboot_gen = ?2, updated_at = ?3 WHERE id = ?1",
                params![id, i(want), now],
            )?;
            true
        }
        DesiredChange::Delete => {
            if row.desired.deleted {
                false
            } else {
                super::snapshot_changes::refuse_with_snapshots(
                    t,
                    id.uuid(),
                    &format!("instance '{}'", row.name),
                )?;
                let host_gen = hosts::generation(t, row.host_id)? + 1;
                // Its config record goes with it: its guest can no longer fetch.
                t.execute("DELETE FROM configs WHERE instance_id = ?1", [id])?;
                // A dynamic record it held goes back to its domain's pool.
                super::holders::release_held(t, id, now)?;
                // Its volumes stay, detached (docs/storage.md).
                super::volume_changes::release_instance(t, id, now)?;
                super::roots::release_root(t, id, now)?;
                t.execute(
                    "UPDATE instances SET deleted = 1, deleted_gen = ?2, desired_power = 'stopped',
                        next_restart_at = NULL, updated_at = ?3 WHERE id = ?1",
                    params![id, i(host_gen), now],
                )?;
                true
            }
        }
        DesiredChange::Restart {
            expected_boot_gen,
            backoff_step,
        } => {
            if row.desired.boot_gen != expected_boot_gen || row.desired.power != Power::Running {
                false
            } else {
                want = row.desired.boot_gen + 1;
                t.execute(
                    "UPDATE instances SET boot_gen = ?2, restart_count = restart_count + 1, backoff_step = ?3,
                        next_restart_at = NULL, updated_at = ?4 WHERE id = ?1",
                    params![id, i(want), backoff_step, now],
                )?;
                true
            }
        }
        DesiredChange::GiveUp => {
            t.execute(
                "UPDATE instances SET desired_power = 'stopped', next_restart_at = NULL, updated_at = ?2 WHERE id = ?1",
                params![id, now],
            )?;
            row.desired.power != Power::Stopped
        }
        DesiredChange::ScheduleRestart { at } => {
            t.execute(
                "UPDATE instances SET next_restart_at = ?2, updated_at = ?3 WHERE id = ?1",
                params![id, at, now],
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
         AND i.obs_boot_gen >= i.boot_gen AND i.deployable_id IS NULL",
        &[],
    )
}
