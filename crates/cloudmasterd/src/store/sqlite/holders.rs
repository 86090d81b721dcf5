//! Who holds a record and who may speak for it (issue 9, points 12 and
//! 17): dynamic records handed out and held by an instance across its
//! reboots, released when it is deleted; the instance a record is tied to;
//! the trust key replaced by a re-key; the NoCloud credential's window.

use super::codec::{u, uuid};
use super::configs::{get, not_found};
use crate::store::*;
use rusqlite::{params, Connection, OptionalExtension};

pub fn assign_dynamic(
    t: &Connection,
    domain: &str,
    holder: Option<InstanceId>,
    now: Millis,
    fresh: &SecretMaker<'_>,
) -> Result<Option<ConfigRow>> {
    // An instance that holds a record already gets it again (a reboot).
    if let Some(i) = holder {
        let held: Option<String> = t
            .query_row(
                "UPDATE configs SET status = 'assigned', updated_at = ?3
                 WHERE domain = ?1 AND dynamic = 1 AND bound_instance = ?2 RETURNING uuid",
                params![domain, i.to_string(), now],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(id) = held {
            return Ok(Some(get(t, uuid(&id)?)?));
        }
    }
    // One writer at a time (IMMEDIATE transactions): first come, first served,
    // and no record is ever handed out twice. A record handed out anew gets a
    // new secret, so whoever held it before has nothing left of it.
    let taken: Option<(String, i64)> = t
        .query_row(
            "UPDATE configs SET assigned = 1, status = 'assigned', bound_instance = ?3,
                secret_epoch = secret_epoch + 1, updated_at = ?2
             WHERE uuid = (SELECT uuid FROM configs WHERE domain = ?1 AND dynamic = 1 AND assigned = 0
                           ORDER BY created_at, uuid LIMIT 1)
             RETURNING uuid, secret_epoch",
            params![domain, now, holder.map(|h| h.to_string())],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let Some((id, epoch)) = taken else {
        return Ok(None);
    };
    let id = uuid(&id)?;
    let secret = fresh(id, u(epoch));
    t.execute(
        "UPDATE configs SET secret_salt = ?2, secret_hash = ?3 WHERE uuid = ?1",
        params![id.to_string(), secret.salt, secret.hash],
    )?;
    Ok(Some(get(t, id)?))
}

/// The dynamic record `instance` holds goes back to its domain's pool, with
/// nothing of its last guest left on it (address, parameters, trust key).
pub fn release_held(t: &Connection, instance: InstanceId, now: Millis) -> Result<Option<Uuid>> {
    let id: Option<String> = t
        .query_row(
            "UPDATE configs SET assigned = 0, bound_instance = NULL, status = 'registered',
                reason = NULL, my_conf_addr = NULL, parameter_map = '{}', trust_salt = NULL,
                trust_hash = NULL, hb_seq = NULL, hb_at = NULL, hb_services = NULL,
                nocloud_boot = NULL, nocloud_opened_at = NULL, nocloud_done = 0, updated_at = ?2
             WHERE bound_instance = ?1 RETURNING uuid",
            params![instance.to_string(), now],
            |r| r.get(0),
        )
        .optional()?;
    id.as_deref().map(uuid).transpose()
}

/// The live instance a record is tied to (made for it, or held by it).
pub fn owner(c: &Connection, id: Uuid) -> Result<Option<RecordOwner>> {
    Ok(c.prepare_cached(
        "SELECT i.id, i.boot_gen, i.reboot_gen FROM configs c
         JOIN instances i ON i.id = COALESCE(c.instance_id, c.bound_instance)
         WHERE c.uuid = CAST(?1 AS TEXT) AND i.deleted = 0",
    )?
    .query_row([id.to_string()], |r| {
        Ok(RecordOwner {
            instance: r.get(0)?,
            boot_gen: u(r.get(1)?),
            reboot_gen: u(r.get(2)?),
        })
    })
    .optional()?)
}

pub fn replace_trust(t: &Connection, id: Uuid, salt: &[u8], hash: &[u8]) -> Result<()> {
    let n = t.execute(
        "UPDATE configs SET trust_salt = ?2, trust_hash = ?3 WHERE uuid = ?1",
        params![id.to_string(), salt, hash],
    )?;
    if n == 0 {
        return Err(not_found(id));
    }
    Ok(())
}

/// A use of the NoCloud credential during `boot`: opens that boot's window
/// at its first use; says whether the window is still open (not spent, and
/// opened less than `window` ago). `spend` closes it after this use.
pub fn nocloud_use(
    t: &Connection,
    id: Uuid,
    boot: &str,
    now: Millis,
    window: Millis,
    spend: bool,
) -> Result<bool> {
    let cur: Option<(Option<String>, Option<i64>, bool)> = t
        .query_row(
            "SELECT nocloud_boot, nocloud_opened_at, nocloud_done FROM configs WHERE uuid = ?1",
            [id.to_string()],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    let (was, opened, done) = cur.ok_or_else(|| not_found(id))?;
    let open = if was.as_deref() == Some(boot) {
        !done && now - opened.unwrap_or(now) < window
    } else {
        t.execute(
            "UPDATE configs SET nocloud_boot = ?2, nocloud_opened_at = ?3, nocloud_done = 0 WHERE uuid = ?1",
            params![id.to_string(), boot, now],
        )?;
        true
    };
    if spend {
        t.execute(
            "UPDATE configs SET nocloud_done = 1 WHERE uuid = ?1",
            [id.to_string()],
        )?;
    }
    Ok(open)
}
