//! Idempotency keys: the first answer to a keyed request (crate::idempotency).

use crate::store::*;
use rusqlite::{params, Connection, OptionalExtension};

/// The live record of `key` for `principal` (None when absent or expired).
pub fn get(
    c: &Connection,
    principal: &str,
    key: &str,
    now: Millis,
) -> Result<Option<IdempotencyRecord>> {
    Ok(c.query_row(
        "SELECT principal, key, method, path, body_sha256, status, response, withheld,
            created_at, expires_at
         FROM idempotency_keys WHERE principal = ?1 AND key = ?2 AND expires_at > ?3",
        params![principal, key, now],
        |r| {
            Ok(IdempotencyRecord {
                principal: r.get("principal")?,
                key: r.get("key")?,
                method: r.get("method")?,
                path: r.get("path")?,
                body_sha256: r.get("body_sha256")?,
                status: r.get("status")?,
                response: r.get("response")?,
                withheld: r.get("withheld")?,
                created_at: r.get("created_at")?,
                expires_at: r.get("expires_at")?,
            })
        },
    )
    .optional()?)
}

/// Record `rec` unless a live record of its key exists; true when written.
/// An expired record of the same key is replaced. A record never keeps an
/// answer that holds a secret: it is `withheld` instead.
pub fn insert(t: &Connection, rec: &IdempotencyRecord) -> Result<bool> {
    let withheld = rec.withheld || crate::idempotency::holds_secret(&rec.response);
    let response: &[u8] = if withheld { &[] } else { &rec.response };
    t.execute(
        "DELETE FROM idempotency_keys WHERE principal = ?1 AND key = ?2 AND expires_at <= ?3",
        params![rec.principal, rec.key, rec.created_at],
    )?;
    let n = t.execute(
        "INSERT OR IGNORE INTO idempotency_keys
            (principal, key, method, path, body_sha256, status, response, withheld,
             created_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![
            rec.principal,
            rec.key,
            rec.method,
            rec.path,
            rec.body_sha256,
            rec.status,
            response,
            withheld,
            rec.created_at,
            rec.expires_at
        ],
    )?;
    Ok(n == 1)
}

/// Write the answer of a keyed change in the change's own transaction,
/// rendered from the row it wrote. A live record of the key means the change
/// was made already under it: refuse, so the transaction rolls back.
pub fn record_in_tx(t: &Connection, keyed: &KeyedAnswer, row: &InstanceRow) -> Result<()> {
    let mut rec = keyed.record.clone();
    rec.response =
        (keyed.render)(row).map_err(|e| StoreError::Corrupt(format!("encode answer: {e}")))?;
    record_answer(t, &rec)
}

/// Record a rendered answer in the caller's transaction; a key recorded
/// already is a `Conflict` (the change is undone with it).
pub fn record_answer(t: &Connection, rec: &IdempotencyRecord) -> Result<()> {
    if insert(t, rec)? {
        Ok(())
    } else {
        Err(StoreError::Conflict(format!(
            "Idempotency-Key '{}' was used already",
            cm_api::validate::printable(&rec.key)
        )))
    }
}

/// Remove expired records, then the oldest beyond `keep`; how many went.
pub fn purge(t: &Connection, now: Millis, keep: u64) -> Result<u64> {
    let expired = t.execute("DELETE FROM idempotency_keys WHERE expires_at <= ?1", [now])?;
    let over = t.execute(
        "DELETE FROM idempotency_keys WHERE rowid IN
            (SELECT rowid FROM idempotency_keys ORDER BY created_at DESC LIMIT -1 OFFSET ?1)",
        [i64::try_from(keep).unwrap_or(i64::MAX)],
    )?;
    Ok((expired + over) as u64)
}
