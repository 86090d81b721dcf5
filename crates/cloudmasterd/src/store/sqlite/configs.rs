//! The rendezvous cache (seed 003): config records and their domains.

use super::codec::{self, columns, i, json, text, to_json, u, uuid, FromRow};
use crate::store::*;
use cm_api::boot::{Domain, Heartbeat, ServiceState};
use rusqlite::{params, Connection, OptionalExtension, Row};
use sha2::{Digest, Sha256};

const COLS: &str =
    "uuid, domain, dynamic, assigned, instance_id, length(body) AS body_size, body_sha256, version,
    secret_epoch, trust_hash IS NOT NULL AS trust_set, my_conf_addr, status, reason, parameter_map,
    config_hosts, hb_seq, hb_at, hb_services, created_at, updated_at, bound_instance";

columns!(Cols {
    uuid,
    domain,
    dynamic,
    assigned,
    instance_id,
    body_size,
    body_sha256,
    version,
    secret_epoch,
    trust_set,
    my_conf_addr,
    status,
    reason,
    parameter_map,
    config_hosts,
    hb_seq,
    hb_at,
    hb_services,
    created_at,
    updated_at,
    bound_instance,
});

impl FromRow for ConfigRow {
    type Cols = Cols;
    fn cols(stmt: &rusqlite::Statement<'_>) -> rusqlite::Result<Cols> {
        Cols::of(stmt)
    }
    fn from_row(r: &Row<'_>, c: &Cols) -> Result<ConfigRow> {
        Ok(ConfigRow {
            uuid: uuid(text(r, c.uuid)?)?,
            domain: r.get(c.domain)?,
            dynamic: r.get(c.dynamic)?,
            assigned: r.get(c.assigned)?,
            instance_id: r.get(c.instance_id)?,
            bound_instance: r.get(c.bound_instance)?,
            body_size: u(r.get(c.body_size)?),
            body_sha256: r.get(c.body_sha256)?,
            version: u(r.get(c.version)?),
            secret_epoch: u(r.get(c.secret_epoch)?),
            trust_set: r.get(c.trust_set)?,
            my_conf_addr: r.get(c.my_conf_addr)?,
            status: r.get(c.status)?,
            reason: r.get(c.reason)?,
            parameter_map: json("parameter_map", text(r, c.parameter_map)?)?,
            config_hosts: json("config_hosts", text(r, c.config_hosts)?)?,
            hb_seq: r.get::<_, Option<i64>>(c.hb_seq)?.map(u),
            hb_at: r.get(c.hb_at)?,
            hb_services: codec::opt_json("services", r.get(c.hb_services)?)?,
            created_at: r.get(c.created_at)?,
            updated_at: r.get(c.updated_at)?,
        })
    }
}

pub fn not_found(uuid: Uuid) -> StoreError {
    StoreError::NotFound {
        what: "config",
        name: uuid.to_string(),
    }
}

pub fn get(c: &Connection, id: Uuid) -> Result<ConfigRow> {
    codec::first(
        c,
        &format!("SELECT {COLS} FROM configs WHERE uuid = ?1"),
        [id.to_string()],
    )?
    .ok_or_else(|| not_found(id))
}

pub fn list(c: &Connection, domain: Option<&str>) -> Result<Vec<ConfigRow>> {
    codec::all(
        c,
        &format!(
            "SELECT {COLS} FROM configs WHERE (?1 IS NULL OR domain = ?1) ORDER BY domain, created_at, uuid"
        ),
        [domain],
    )
}

pub fn insert(t: &Connection, new: &NewConfig, now: Millis) -> Result<ConfigRow> {
    let exists: Option<i64> = t
        .query_row(
            "SELECT 1 FROM configs WHERE uuid = ?1",
            [new.uuid.to_string()],
            |r| r.get(0),
        )
        .optional()?;
    if exists.is_some() {
        return Err(StoreError::AlreadyExists(format!(
            "config {} exists already",
            new.uuid
        )));
    }
    t.execute(
        "INSERT INTO configs (uuid, domain, dynamic, instance_id, body, body_sha256, secret_epoch, secret_salt,
            secret_hash, status, parameter_map, config_hosts, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'registered', ?10, ?11, ?12, ?12)",
        params![
            new.uuid.to_string(),
            new.domain,
            new.dynamic,
            new.instance_id.map(|i| i.to_string()),
            new.body,
            hex::encode(Sha256::digest(&new.body)),
            i(new.secret.epoch),
            new.secret.salt,
            new.secret.hash,
            to_json(&new.parameter_map)?,
            to_json(&new.config_hosts)?,
            now
        ],
    )?;
    get(t, new.uuid)
}

pub fn body(c: &Connection, id: Uuid) -> Result<(u64, Vec<u8>, String)> {
    c.prepare_cached("SELECT version, body, status FROM configs WHERE uuid = ?1")?
        .query_row([id.to_string()], |r| {
            Ok((u(r.get("version")?), r.get("body")?, r.get("status")?))
        })
        .optional()?
        .ok_or_else(|| not_found(id))
}

/// A guest's fetch in one statement: the record's secret (None for an
/// unknown uuid) goes to `allow`, and only when it says yes are the version,
/// the body and the status read (SQLite reads a column's pages only when it
/// is asked for, so a refused caller never costs the body's read).
pub fn fetch(
    c: &Connection,
    id: Uuid,
    allow: &mut dyn FnMut(Option<&SecretHash>) -> bool,
) -> Result<Option<(u64, Vec<u8>, String)>> {
    let found = c
        .prepare_cached(
            "SELECT secret_salt, secret_hash, secret_epoch, version, status, body \
             FROM configs WHERE uuid = ?1",
        )?
        .query_row([id.to_string()], |r| {
            let secret = SecretHash {
                salt: r.get("secret_salt")?,
                hash: r.get("secret_hash")?,
                epoch: u(r.get("secret_epoch")?),
            };
            if !allow(Some(&secret)) {
                return Ok(None);
            }
            Ok(Some((
                u(r.get("version")?),
                r.get("body")?,
                r.get("status")?,
            )))
        })
        .optional()?;
    match found {
        Some(answer) => Ok(answer),
        None => {
            // The same check for an unknown uuid.
            allow(None);
            Ok(None)
        }
    }
}

pub fn secret(c: &Connection, id: Uuid) -> Result<Option<SecretHash>> {
    Ok(c.prepare_cached(
        "SELECT secret_salt, secret_hash, secret_epoch FROM configs WHERE uuid = ?1",
    )?
    .query_row([id.to_string()], |r| {
        Ok(SecretHash {
            salt: r.get("secret_salt")?,
            hash: r.get("secret_hash")?,
            epoch: u(r.get("secret_epoch")?),
        })
    })
    .optional()?)
}

/// A trust key's salt and hash, both unset until the first update.
type TrustColumns = (Option<Vec<u8>>, Option<Vec<u8>>);

pub fn trust(c: &Connection, id: Uuid) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
    let v: Option<TrustColumns> = c
        .query_row(
            "SELECT trust_salt, trust_hash FROM configs WHERE uuid = ?1",
            [id.to_string()],
            |r| Ok((r.get("trust_salt")?, r.get("trust_hash")?)),
        )
        .optional()?;
    match v {
        None => Err(not_found(id)),
        Some((Some(s), Some(h))) => Ok(Some((s, h))),
        Some(_) => Ok(None),
    }
}

pub fn set_trust(t: &Connection, id: Uuid, salt: &[u8], hash: &[u8]) -> Result<bool> {
    let n = t.execute(
        "UPDATE configs SET trust_salt = ?2, trust_hash = ?3 WHERE uuid = ?1 AND trust_hash IS NULL",
        params![id.to_string(), salt, hash],
    )?;
    Ok(n == 1)
}

pub fn set_body(t: &Connection, id: Uuid, body: &[u8], now: Millis) -> Result<ConfigRow> {
    let n = t.execute(
        "UPDATE configs SET body = ?2, body_sha256 = ?3, version = version + 1, updated_at = ?4 WHERE uuid = ?1",
        params![id.to_string(), body, hex::encode(Sha256::digest(body)), now],
    )?;
    if n == 0 {
        return Err(not_found(id));
    }
    get(t, id)
}

pub fn update_cache(t: &Connection, id: Uuid, upd: &CacheUpdate, now: Millis) -> Result<ConfigRow> {
    let n = t.execute(
        "UPDATE configs SET my_conf_addr = COALESCE(?2, my_conf_addr), parameter_map = ?3, status = ?4,
            reason = ?5, updated_at = ?6 WHERE uuid = ?1",
        params![id.to_string(), upd.my_conf_addr, to_json(&upd.parameter_map)?, upd.status, upd.reason, now],
    )?;
    if n == 0 {
        return Err(not_found(id));
    }
    get(t, id)
}

pub fn mark_fetched(t: &Connection, id: Uuid, now: Millis) -> Result<()> {
    t.execute(
        "UPDATE configs SET status = 'fetched', updated_at = ?2 WHERE uuid = ?1 AND status IN ('registered', 'assigned')",
        params![id.to_string(), now],
    )?;
    Ok(())
}

pub fn remove(t: &Connection, id: Uuid) -> Result<ConfigRow> {
    let rec = get(t, id)?;
    t.execute("DELETE FROM configs WHERE uuid = ?1", [id.to_string()])?;
    Ok(rec)
}

pub fn remove_stale(t: &Connection, before: Millis) -> Result<Vec<ConfigRow>> {
    // A record of an instance that still exists (made for it, or a dynamic
    // record it holds) is never stale: its guest needs it again at its next
    // boot, however long ago its last update was. Nor is one whose guest
    // heartbeated since `before`.
    let gone: Vec<ConfigRow> = codec::all(
        t,
        &format!(
            "SELECT {COLS} FROM configs WHERE updated_at < ?1 AND (hb_at IS NULL OR hb_at < ?1)
         AND (instance_id IS NULL OR instance_id NOT IN (SELECT id FROM instances WHERE deleted = 0))
         AND (bound_instance IS NULL OR bound_instance NOT IN (SELECT id FROM instances WHERE deleted = 0))"
        ),
        [before],
    )?;
    for g in &gone {
        t.execute("DELETE FROM configs WHERE uuid = ?1", [g.uuid.to_string()])?;
    }
    Ok(gone)
}

pub fn heartbeat(t: &Connection, id: Uuid, hb: &Heartbeat, now: Millis) -> Result<()> {
    let n = t.execute(
        "UPDATE configs SET hb_seq = ?2, hb_at = ?3, hb_services = ?4, updated_at = ?3 WHERE uuid = ?1",
        params![id.to_string(), i(hb.seq), now, to_json(&hb.services)?],
    )?;
    if n == 0 {
        return Err(not_found(id));
    }
    Ok(())
}

pub fn insert_domain(t: &Connection, name: &str, secret: &SecretHash, now: Millis) -> Result<()> {
    let res = t.execute(
        "INSERT INTO config_domains (name, secret_epoch, secret_salt, secret_hash, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![name, i(secret.epoch), secret.salt, secret.hash, now],
    );
    match res {
        Err(rusqlite::Error::SqliteFailure(e, _))
            if e.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            Err(StoreError::AlreadyExists(format!(
                "domain '{name}' exists already"
            )))
        }
        other => other.map(|_| ()).map_err(Into::into),
    }
}

pub fn list_domains(c: &Connection) -> Result<Vec<Domain>> {
    let mut stmt = c.prepare(
        "SELECT d.name, d.created_at,
            (SELECT COUNT(*) FROM configs WHERE domain = d.name AND dynamic = 1) AS dynamic_total,
            (SELECT COUNT(*) FROM configs WHERE domain = d.name AND dynamic = 1 AND assigned = 0)
                AS dynamic_free
         FROM config_domains d ORDER BY d.name",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(Domain {
            name: r.get("name")?,
            created_at: to_ts(r.get("created_at")?),
            dynamic_total: u32::try_from(u(r.get("dynamic_total")?)).unwrap_or(u32::MAX),
            dynamic_free: u32::try_from(u(r.get("dynamic_free")?)).unwrap_or(u32::MAX),
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub fn domain_secret(c: &Connection, name: &str) -> Result<Option<SecretHash>> {
    Ok(c.query_row(
        "SELECT secret_salt, secret_hash, secret_epoch FROM config_domains WHERE name = ?1",
        [name],
        |r| {
            Ok(SecretHash {
                salt: r.get("secret_salt")?,
                hash: r.get("secret_hash")?,
                epoch: u(r.get("secret_epoch")?),
            })
        },
    )
    .optional()?)
}

pub fn delete_domain(t: &Connection, name: &str) -> Result<()> {
    let n: i64 = t.query_row(
        "SELECT COUNT(*) FROM configs WHERE domain = ?1 AND dynamic = 1",
        [name],
        |r| r.get(0),
    )?;
    if n > 0 {
        return Err(StoreError::Conflict(format!(
            "domain '{name}' still has {n} dynamic record(s)"
        )));
    }
    let gone = t.execute("DELETE FROM config_domains WHERE name = ?1", [name])?;
    if gone == 0 {
        return Err(StoreError::NotFound {
            what: "domain",
            name: name.to_string(),
        });
    }
    Ok(())
}

/// Record relayed beats; the owners of instances whose services changed
/// state (a name or a state, not a detail) are returned, to be woken.
pub fn guest_beats(
    t: &Connection,
    host_id: HostId,
    beats: &[(InstanceId, u64, Millis, Vec<ServiceState>)],
) -> Result<Vec<cm_api::ids::DeployableId>> {
    let states = |v: &[ServiceState]| -> Vec<(String, cm_api::words::ServiceStatus)> {
        v.iter()
            .map(|s| (s.name.clone(), s.state.clone()))
            .collect()
    };
    let mut owners = Vec::new();
    for (id, seq, seen, services) in beats {
        let before: Option<(Option<String>, Option<cm_api::ids::DeployableId>)> = t
            .query_row(
                "SELECT guest_services, deployable_id FROM instances WHERE id = ?1 AND host_id = ?2",
                params![id.to_string(), host_id.to_string()],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        if let Some((old, Some(owner))) = before {
            let old: Vec<ServiceState> = codec::opt_json("guest services", old)?;
            if states(&old) != states(services) && !owners.contains(&owner) {
                owners.push(owner);
            }
        }
        t.execute(
            "UPDATE instances SET guest_seq = ?3, guest_seen_at = ?4, guest_services = ?5
             WHERE id = ?1 AND host_id = ?2",
            params![
                id.to_string(),
                host_id.to_string(),
                i(*seq),
                seen,
                to_json(services)?
            ],
        )?;
    }
    Ok(owners)
}
