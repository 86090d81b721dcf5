//! Hosts, their reports, and what each must run.

use super::codec::{i, json, to_json, u, uuid};
use super::instances;
use crate::store::*;
use rusqlite::{params, Connection, OptionalExtension, Row};
use std::collections::{HashMap, HashSet};

const COLS: &str = "h.id, h.name, h.enabled, h.reserved_mib, h.facts, h.last_seen, h.registered_at,
    h.generation, h.applied_generation,
    (SELECT COALESCE(SUM(memory_mib), 0) FROM instances WHERE host_id = h.id),
    (SELECT COUNT(*) FROM instances WHERE host_id = h.id AND deleted = 0)";

type Raw = (
    String,
    String,
    bool,
    i64,
    String,
    Option<i64>,
    i64,
    i64,
    i64,
    i64,
    i64,
);

fn row(r: &Row<'_>) -> rusqlite::Result<Raw> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
        r.get(8)?,
        r.get(9)?,
        r.get(10)?,
    ))
}

fn decode(raw: Raw) -> Result<HostRow> {
    Ok(HostRow {
        id: uuid(&raw.0)?,
        name: raw.1,
        enabled: raw.2,
        reserved_mib: u(raw.3),
        facts: json("host facts", &raw.4)?,
        last_seen: raw.5,
        registered_at: raw.6,
        generation: u(raw.7),
        applied_generation: u(raw.8),
        promised_mib: u(raw.9),
        instance_count: u(raw.10) as u32,
    })
}

pub fn register(
    t: &Connection,
    name: &str,
    token_hash: &str,
    facts: &HostFacts,
    reserved_mib: u64,
) -> Result<Uuid> {
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
    let id = Uuid::new_v4();
    t.execute(
        "INSERT INTO hosts (id, name, reserved_mib, facts, last_seen, registered_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
        params![id.to_string(), name, i(reserved_mib), to_json(facts)?, now],
    )?;
    super::log::insert_token(t, token_hash, TokenKind::Host, Some(id))?;
    Ok(id)
}

pub fn list(c: &Connection) -> Result<Vec<HostRow>> {
    let mut stmt = c.prepare(&format!("SELECT {COLS} FROM hosts h ORDER BY h.name"))?;
    let rows = stmt.query_map([], row)?;
    let mut out = Vec::new();
    for r in rows {
        out.push(decode(r?)?);
    }
    Ok(out)
}

pub fn get(c: &Connection, name_or_id: &str) -> Result<HostRow> {
    let raw = c
        .query_row(
            &format!("SELECT {COLS} FROM hosts h WHERE h.name = ?1 OR h.id = ?1"),
            [name_or_id],
            row,
        )
        .optional()?
        .ok_or_else(|| StoreError::NotFound {
            what: "host",
            name: name_or_id.to_string(),
        })?;
    decode(raw)
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

pub fn generation(c: &Connection, host_id: Uuid) -> Result<u64> {
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

pub fn bump_generation(t: &Connection, host_id: Uuid) -> Result<u64> {
    let g: i64 = t.query_row(
        "UPDATE hosts SET generation = generation + 1 WHERE id = ?1 RETURNING generation",
        [host_id.to_string()],
        |r| r.get(0),
    )?;
    Ok(u(g))
}

pub fn capacities(c: &Connection) -> Result<Vec<HostCapacity>> {
    let hosts = list(c)?;
    let mut ports: HashMap<Uuid, Vec<u16>> = HashMap::new();
    let mut stmt = c.prepare("SELECT host_id, ports FROM instances")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
    for r in rows {
        let (host, p) = r?;
        let list: Vec<cm_api::instance::PortForward> = json("ports", &p)?;
        ports
            .entry(uuid(&host)?)
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
            kvm_usable: h.facts.accel == "kvm",
        })
        .collect())
}

pub fn record_report(
    t: &Connection,
    host_id: Uuid,
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
    let rows = instances::query(t, "i.host_id = ?1", &[&hid])?;
    let seen: HashSet<Uuid> = observed.iter().map(|o| o.id).collect();
    let by_id: HashMap<Uuid, &ObservedInstance> = observed.iter().map(|o| (o.id, o)).collect();
    let mut out = ReportOutcome::default();
    for before in rows {
        if before.deleted && !seen.contains(&before.id) {
            if applied >= before.deleted_gen.unwrap_or(u64::MAX) {
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
        let (state, reason, boot, reboot, pid, accel, since) = match by_id.get(&before.id) {
            Some(o) => (
                Some(o.state.as_str()),
                o.reason.clone(),
                o.boot_gen,
                o.reboot_gen,
                o.pid,
                o.accel.clone(),
                Some((o.since.unix_timestamp_nanos() / 1_000_000) as i64),
            ),
            // The host does not have it (yet, or any more): it is pending.
            None => (
                None,
                None,
                before.obs_boot_gen,
                before.obs_reboot_gen,
                None,
                None,
                None,
            ),
        };
        let same = before.obs_state.map(|s| s.as_str()) == state
            && before.obs_reason == reason
            && before.obs_boot_gen == boot
            && before.obs_reboot_gen == reboot
            && before.obs_pid == pid
            && before.obs_accel == accel;
        if same {
            continue;
        }
        let became_running = state == Some("running")
            && (before.obs_state != Some(cm_api::agent::ObservedState::Running)
                || before.obs_boot_gen != boot);
        let running_since = if became_running {
            since.or(Some(now))
        } else {
            before.running_since
        };
        t.execute(
            "UPDATE instances SET obs_state = ?2, obs_reason = ?3, obs_boot_gen = ?4, obs_reboot_gen = ?5,
                obs_pid = ?6, obs_accel = ?7, obs_since = ?8, running_since = ?9, updated_at = ?10
             WHERE id = ?1",
            params![
                before.id.to_string(),
                state,
                reason,
                i(boot),
                i(reboot),
                pid,
                accel,
                since,
                running_since,
                now
            ],
        )?;
        let after = instances::by_id(t, before.id)?;
        out.changed.push(ObservedChange { before, after });
    }
    Ok(out)
}

pub fn desired(c: &Connection, host_id: Uuid) -> Result<(u64, Vec<InstanceRow>)> {
    let g = generation(c, host_id)?;
    let rows = instances::query(
        c,
        "i.host_id = ?1 AND i.deleted = 0",
        &[&host_id.to_string()],
    )?;
    Ok((g, rows))
}
