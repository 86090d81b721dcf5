//! Hosts, their reports, and what each must run.

use super::codec::{self, columns, i, json, text, to_json, u, FromRow};
use super::instances;
use crate::store::*;
use cm_api::agent::ObservedState;
use cm_api::words::{ResolvedAccel, StopReason};
use rusqlite::{params, Connection, OptionalExtension, Row};
use std::collections::{HashMap, HashSet};

const COLS: &str = "h.id, h.name, h.enabled, h.reserved_mib, h.facts, h.last_seen, h.registered_at,
    h.generation, h.applied_generation,
    (SELECT COALESCE(SUM(memory_mib), 0) FROM instances WHERE host_id = h.id) AS promised_mib,
    (SELECT COUNT(*) FROM instances WHERE host_id = h.id AND deleted = 0) AS instance_count,
    (SELECT COUNT(*) FROM volumes WHERE host_id = h.id AND deleted = 0) AS volume_count,
    (SELECT COALESCE(SUM(MAX(size_bytes - COALESCE(obs_allocated, 0), 0)), 0)
     FROM volumes WHERE host_id = h.id AND deleted = 0) AS volume_unallocated";

columns!(Cols {
    id,
    name,
    enabled,
    reserved_mib,
    facts,
    last_seen,
    registered_at,
    generation,
    applied_generation,
    promised_mib,
    instance_count,
    volume_count,
    volume_unallocated,
});

impl FromRow for HostRow {
    type Cols = Cols;
    fn cols(stmt: &rusqlite::Statement<'_>) -> rusqlite::Result<Cols> {
        Cols::of(stmt)
    }
    fn from_row(r: &Row<'_>, c: &Cols) -> Result<HostRow> {
        Ok(HostRow {
            id: r.get(c.id)?,
            name: r.get(c.name)?,
            enabled: r.get(c.enabled)?,
            reserved_mib: u(r.get(c.reserved_mib)?),
            facts: json("host facts", text(r, c.facts)?)?,
            last_seen: r.get(c.last_seen)?,
            registered_at: r.get(c.registered_at)?,
            generation: u(r.get(c.generation)?),
            applied_generation: u(r.get(c.applied_generation)?),
            promised_mib: u(r.get(c.promised_mib)?),
            instance_count: u32::try_from(u(r.get(c.instance_count)?)).unwrap_or(u32::MAX),
            volume_count: u32::try_from(u(r.get(c.volume_count)?)).unwrap_or(u32::MAX),
            volume_unallocated_mib: u(r.get(c.volume_unallocated)?)
                .div_ceil(cm_api::volume::VOLUME_SIZE_UNIT),
        })
    }
}

pub fn register(
    t: &Connection,
    name: &str,
    token_hash: &str,
    facts: &HostFacts,
    reserved_mib: u64,
) -> Result<HostId> {
    let existing: Option<String> = t
        .query_row("SELECT id FROM hosts WHERE name = ?1", [name], |r| r.get(0))
        .optional()?;
    if existing.is_some() {
        // A host is its credential, not its name: whoever holds the join
        // token must not take over a registered host and its instances.
        return Err(StoreError::Conflict(format!(
            "host {name} is registered; `cm host remove {name}` first"
        )));
    }
    let now = now_ms();
    let id = HostId::new_v4();
    t.execute(
        "INSERT INTO hosts (id, name, reserved_mib, facts, last_seen, registered_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
        params![id.to_string(), name, i(reserved_mib), to_json(facts)?, now],
    )?;
    super::log::insert_token(t, token_hash, TokenKind::Host, Some(id))?;
    Ok(id)
}

pub fn list_sql() -> String {
    format!("SELECT {COLS} FROM hosts h ORDER BY h.name")
}

pub fn list(c: &Connection) -> Result<Vec<HostRow>> {
    codec::all(c, &list_sql(), [])
}

pub fn get(c: &Connection, name_or_id: &str) -> Result<HostRow> {
    codec::first(
        c,
        &format!("SELECT {COLS} FROM hosts h WHERE h.name = ?1 OR h.id = ?1"),
        [name_or_id],
    )?
    .ok_or_else(|| StoreError::NotFound {
        what: "host",
        name: name_or_id.to_string(),
    })
}

pub fn liveness(c: &Connection, id: HostId) -> Result<HostLiveness> {
    c.prepare_cached("SELECT last_seen, enabled FROM hosts WHERE id = ?1")?
        .query_row([id.to_string()], |r| {
            Ok(HostLiveness {
                last_seen: r.get(0)?,
                enabled: r.get(1)?,
            })
        })
        .optional()?
        .ok_or_else(|| StoreError::NotFound {
            what: "host",
            name: id.to_string(),
        })
}

/// Every host's liveness, without the sums over instances `list` makes.
pub fn all_liveness(c: &Connection) -> Result<Vec<(HostId, HostLiveness)>> {
    let mut stmt = c.prepare_cached("SELECT id, last_seen, enabled FROM hosts")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get(0)?,
            HostLiveness {
                last_seen: r.get(1)?,
                enabled: r.get(2)?,
            },
        ))
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub fn update(
    t: &Connection,
    name: &str,
    enabled: Option<bool>,
    reserved_mib: Option<u64>,
) -> Result<HostRow> {
    let host = get(t, name)?;
    if let Some(e) = enabled {
        t.execute(
            "UPDATE hosts SET enabled = ?2 WHERE id = ?1",
            params![host.id.to_string(), e],
        )?;
    }
    if let Some(r) = reserved_mib {
        t.execute(
            "UPDATE hosts SET reserved_mib = ?2 WHERE id = ?1",
            params![host.id.to_string(), i(r)],
        )?;
    }
    get(t, &host.id.to_string())
}

pub fn generation(c: &Connection, host_id: HostId) -> Result<u64> {
    let g: i64 = c
        .query_row(
            "SELECT generation FROM hosts WHERE id = ?1",
            [host_id.to_string()],
            |r| r.get(0),
        )
        .optional()?
        .ok_or_else(|| StoreError::NotFound {
            what: "host",
            name: host_id.to_string(),
        })?;
    Ok(u(g))
}

pub fn bump_generation(t: &Connection, host_id: HostId) -> Result<u64> {
    let g: i64 = t.query_row(
        "UPDATE hosts SET generation = generation + 1 WHERE id = ?1 RETURNING generation",
        [host_id.to_string()],
        |r| r.get(0),
    )?;
    Ok(u(g))
}

pub fn capacities(c: &Connection) -> Result<Vec<HostCapacity>> {
    let hosts = list(c)?;
    let mut ports: HashMap<HostId, Vec<u16>> = HashMap::new();
    // Most instances forward no port: only the others are read and parsed.
    let mut stmt = c.prepare_cached("SELECT host_id, ports FROM instances WHERE ports <> '[]'")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, HostId>(0)?, r.get::<_, String>(1)?)))?;
    for r in rows {
        let (host, p) = r?;
        let list: Vec<cm_api::instance::PortForward> = json("ports", &p)?;
        ports
            .entry(host)
            .or_default()
            .extend(list.iter().map(|p| p.host));
    }
    Ok(hosts
        .into_iter()
        .map(|h| HostCapacity {
            ports_in_use: ports.remove(&h.id).unwrap_or_default(),
            id: h.id,
            name: h.name,
            enabled: h.enabled,
            last_seen: h.last_seen,
            memory_total_mib: h.facts.memory_total_mib,
            reserved_mib: h.reserved_mib,
            promised_mib: h.promised_mib,
            instance_count: h.instance_count,
            kvm_usable: h.facts.accel == ResolvedAccel::Kvm,
        })
        .collect())
}

pub fn record_report(
    t: &Connection,
    host_id: HostId,
    facts: &HostFacts,
    applied_generation: u64,
    observed: &[ObservedInstance],
    now: Millis,
) -> Result<ReportOutcome> {
    let hid = host_id.to_string();
    let updated = t.execute(
        "UPDATE hosts SET facts = ?2, last_seen = ?3, applied_generation = MAX(applied_generation, ?4) WHERE id = ?1",
        params![hid, to_json(facts)?, now, i(applied_generation)],
    )?;
    if updated == 0 {
        return Err(StoreError::NotFound {
            what: "host",
            name: hid,
        });
    }
    let applied = u(t.query_row(
        "SELECT applied_generation FROM hosts WHERE id = ?1",
        [&hid],
        |r| r.get(0),
    )?);
    let rows = instances::query(t, &format!("i.host_id = {}", instances::P1), &[&hid])?;
    let seen: HashSet<InstanceId> = observed.iter().map(|o| InstanceId(o.id)).collect();
    let by_id: HashMap<InstanceId, &ObservedInstance> =
        observed.iter().map(|o| (InstanceId(o.id), o)).collect();
    let mut out = ReportOutcome::default();
    for before in rows {
        if before.desired.deleted && !seen.contains(&before.id) {
            if applied >= before.desired.deleted_gen.unwrap_or(u64::MAX) {
                t.execute(
                    "DELETE FROM operations WHERE target_id = ?1 AND status != 'running'",
                    [before.id.to_string()],
                )?;
                t.execute(
                    "DELETE FROM instances WHERE id = ?1",
                    [before.id.to_string()],
                )?;
                out.purged.push(before);
            }
            continue;
        }
        let (state, reason, boot, reboot, pid, accel, since, liveness) = match by_id.get(&before.id)
        {
            Some(o) => (
                Some(o.state),
                o.reason.clone(),
                o.boot_gen,
                o.reboot_gen,
                o.pid,
                o.accel,
                Some(cm_api::time::timestamp_ms(o.since)),
                o.liveness,
            ),
            // The host does not have it (yet, or any more): it is pending.
            None => (
                None,
                None,
                before.observed.boot_gen,
                before.observed.reboot_gen,
                None,
                None,
                None,
                None,
            ),
        };
        let same = before.observed.state == state
            && before.observed.reason == reason
            && before.observed.boot_gen == boot
            && before.observed.reboot_gen == reboot
            && before.observed.pid == pid
            && before.observed.accel == accel
            // The host's judgement of its guest's beats (vm/watch.rs).
            && before.guest.liveness == liveness;
        if same {
            continue;
        }
        let became_running = state == Some(ObservedState::Running)
            && (before.observed.state != Some(ObservedState::Running)
                || before.observed.boot_gen != boot);
        let running_since = if became_running {
            since.or(Some(now))
        } else {
            before.restart.running_since
        };
        t.execute(
            "UPDATE instances SET obs_state = ?2, obs_reason = ?3, obs_boot_gen = ?4, obs_reboot_gen = ?5,
                obs_pid = ?6, obs_accel = ?7, obs_since = ?8, running_since = ?9, updated_at = ?10,
                guest_liveness = ?11
             WHERE id = ?1",
            params![
                before.id.to_string(),
                state.map(ObservedState::as_str),
                reason.as_ref().map(StopReason::as_str),
                i(boot),
                i(reboot),
                pid,
                accel.map(ResolvedAccel::as_str),
                since,
                running_since,
                now,
                liveness.map(cm_api::words::GuestLiveness::as_str),
            ],
        )?;
        let after = instances::by_id(t, before.id)?;
        out.changed.push(ObservedChange { before, after });
    }
    Ok(out)
}

pub fn desired(c: &Connection, host_id: HostId) -> Result<(u64, Vec<InstanceRow>)> {
    let g = generation(c, host_id)?;
    let rows = instances::query(
        c,
        &format!("i.host_id = {} AND i.deleted = 0", instances::P1),
        &[&host_id.to_string()],
    )?;
    Ok((g, rows))
}
