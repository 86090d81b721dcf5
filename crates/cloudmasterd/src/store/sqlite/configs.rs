//! The rendezvous cache (seed 003): config records and their domains.

use super::codec::{i, json, to_json, u, uuid};
use crate::store::*;
use cm_api::boot::{Domain, Heartbeat, ServiceState};
use rusqlite::{params, Connection, OptionalExtension, Row};
use sha2::{Digest, Sha256};

const COLS: &str =
    "uuid, domain, dynamic, assigned, instance_id, length(body), body_sha256, version,
    secret_epoch, trust_hash IS NOT NULL, my_conf_addr, status, reason, parameter_map, config_hosts,
    hb_seq, hb_at, hb_services, created_at, updated_at, bound_instance";

struct Raw {
    s: [String; 6],
    opt_s: [Option<String>; 5],
    b: [bool; 3],
    n: [i64; 5],
    opt_n: [Option<i64>; 2],
}

fn row(r: &Row<'_>) -> rusqlite::Result<Raw> {
    Ok(Raw {
        s: [
            r.get(0)?,
            r.get(1)?,
            r.get(6)?,
            r.get(11)?,
            r.get(13)?,
            r.get(14)?,
        ],
        opt_s: [r.get(4)?, r.get(10)?, r.get(12)?, r.get(17)?, r.get(20)?],
        b: [r.get(2)?, r.get(3)?, r.get(9)?],
        n: [r.get(5)?, r.get(7)?, r.get(8)?, r.get(18)?, r.get(19)?],
        opt_n: [r.get(15)?, r.get(16)?],
    })
}

fn decode(raw: Raw) -> Result<ConfigRow> {
    Ok(ConfigRow {
        uuid: uuid(&raw.s[0])?,
        domain: raw.s[1].clone(),
        dynamic: raw.b[0],
        assigned: raw.b[1],
        instance_id: raw.opt_s[0]
            .as_deref()
            .map(uuid)
            .transpose()?
            .map(InstanceId),
        bound_instance: raw.opt_s[4]
            .as_deref()
            .map(uuid)
            .transpose()?
            .map(InstanceId),
        body_size: u(raw.n[0]),
        body_sha256: raw.s[2].clone(),
        version: u(raw.n[1]),
        secret_epoch: u(raw.n[2]),
        trust_set: raw.b[2],
        my_conf_addr: raw.opt_s[1].clone(),
        status: raw.s[3].clone(),
        reason: raw.opt_s[2].clone(),
        parameter_map: json("parameter_map", &raw.s[4])?,
        config_hosts: json("config_hosts", &raw.s[5])?,
        hb_seq: raw.opt_n[0].map(u),
        hb_at: raw.opt_n[1],
        hb_services: raw.opt_s[3]
            .as_deref()
            .map(|s| json("services", s))
            .transpose()?
            .unwrap_or_default(),
        created_at: raw.n[3],
        updated_at: raw.n[4],
    })
}

pub fn not_found(uuid: Uuid) -> StoreError {
    StoreError::NotFound {
        what: "config",
        name: uuid.to_string(),
    }
}

pub fn get(c: &Connection, id: Uuid) -> Result<ConfigRow> {
    let raw = c
        .query_row(
            &format!("SELECT {COLS} FROM configs WHERE uuid = ?1"),
            [id.to_string()],
            row,
        )
        .optional()?
        .ok_or_else(|| not_found(id))?;
    decode(raw)
}

pub fn list(c: &Connection, domain: Option<&str>) -> Result<Vec<ConfigRow>> {
    let mut stmt = c.prepare(&format!(
        "SELECT {COLS} FROM configs WHERE (?1 IS NULL OR domain = ?1) ORDER BY domain, created_at, uuid"
    ))?;
    let rows = stmt.query_map([domain], row)?;
    let mut out = Vec::new();
    for r in rows {
        out.push(decode(r?)?);
    }
    Ok(out)
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
    c.query_row(
        "SELECT version, body, status FROM configs WHERE uuid = ?1",
        [id.to_string()],
        |r| Ok((u(r.get(0)?), r.get(1)?, r.get(2)?)),
    )
    .optional()?
    .ok_or_else(|| not_found(id))
}

pub fn secret(c: &Connection, id: Uuid) -> Result<Option<SecretHash>> {
    Ok(c.query_row(
        "SELECT secret_salt, secret_hash, secret_epoch FROM configs WHERE uuid = ?1",
        [id.to_string()],
        |r| {
            Ok(SecretHash {
                salt: r.get(0)?,
                hash: r.get(1)?,
                epoch: u(r.get(2)?),
            })
        },
    )
    .optional()?)
}

/// A trust key's salt and hash, both unset until the first update.
type TrustColumns = (Option<Vec<u8>>, Option<Vec<u8>>);

pub fn trust(c: &Connection, id: Uuid) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
    let v: Option<TrustColumns> = c
        .query_row(
            "SELECT trust_salt, trust_hash FROM configs WHERE uuid = ?1",
            [id.to_string()],
            |r| Ok((r.get(0)?, r.get(1)?)),
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
    let mut stmt = t.prepare(&format!(
        "SELECT {COLS} FROM configs WHERE updated_at < ?1 AND (hb_at IS NULL OR hb_at < ?1)
         AND (instance_id IS NULL OR instance_id NOT IN (SELECT id FROM instances WHERE deleted = 0))
         AND (bound_instance IS NULL OR bound_instance NOT IN (SELECT id FROM instances WHERE deleted = 0))"
    ))?;
    let rows = stmt.query_map([before], row)?;
    let mut gone = Vec::new();
    for r in rows {
        gone.push(decode(r?)?);
    }
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
            (SELECT COUNT(*) FROM configs WHERE domain = d.name AND dynamic = 1),
            (SELECT COUNT(*) FROM configs WHERE domain = d.name AND dynamic = 1 AND assigned = 0)
         FROM config_domains d ORDER BY d.name",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(Domain {
            name: r.get(0)?,
            created_at: to_ts(r.get(1)?),
            dynamic_total: u(r.get(2)?) as u32,
            dynamic_free: u(r.get(3)?) as u32,
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
                salt: r.get(0)?,
                hash: r.get(1)?,
                epoch: u(r.get(2)?),
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

pub fn guest_beats(
    t: &Connection,
    host_id: HostId,
    beats: &[(InstanceId, u64, Millis, Vec<ServiceState>)],
) -> Result<()> {
    for (id, seq, seen, services) in beats {
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
    Ok(())
}
