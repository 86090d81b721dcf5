//! Settings, tokens, operations and the event log.

use super::codec::{self, columns, json, text, to_json, u, uuid, FromRow};
use crate::store::*;
use cm_api::event::{Event, EventDetail};
use cm_api::words::{EngineAction, EventKind, EventType, OperationKind};
use rusqlite::{params, Connection, OptionalExtension, Row};

pub fn get_setting(c: &Connection, key: &str) -> Result<Option<String>> {
    Ok(
        c.query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| {
            r.get(0)
        })
        .optional()?,
    )
}

pub fn set_setting(c: &Connection, key: &str, value: &str) -> Result<()> {
    c.execute(
        "INSERT INTO settings (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        params![key, value],
    )?;
    Ok(())
}

pub fn insert_token(
    c: &Connection,
    hash: &str,
    kind: TokenKind,
    host_id: Option<HostId>,
) -> Result<()> {
    c.execute(
        "INSERT INTO tokens (hash, kind, host_id, created_at) VALUES (?1, ?2, ?3, ?4)",
        params![
            hash,
            kind.as_str(),
            host_id.map(|h| h.to_string()),
            now_ms()
        ],
    )?;
    Ok(())
}

pub fn all_tokens(c: &Connection) -> Result<Vec<(String, TokenRow)>> {
    let mut stmt = c.prepare("SELECT hash, kind, host_id FROM tokens")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, Option<String>>(2)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (hash, kind, host) = row?;
        let kind = TokenKind::parse(&kind)
            .ok_or_else(|| StoreError::Corrupt(format!("token kind '{kind}'")))?;
        let host_id = host.as_deref().map(uuid).transpose()?.map(HostId);
        out.push((hash, TokenRow { kind, host_id }));
    }
    Ok(out)
}

const OP_COLS: &str =
    "id, kind, target, target_id, status, progress, error, want, created_at, updated_at";

columns!(OpCols {
    id,
    kind,
    target,
    target_id,
    status,
    progress,
    error,
    want,
    created_at,
    updated_at,
});

impl FromRow for OperationRow {
    type Cols = OpCols;
    fn cols(stmt: &rusqlite::Statement<'_>) -> rusqlite::Result<OpCols> {
        OpCols::of(stmt)
    }
    fn from_row(r: &Row<'_>, c: &OpCols) -> Result<OperationRow> {
        let status = match text(r, c.status)? {
            "running" => OperationStatus::Running,
            "succeeded" => OperationStatus::Succeeded,
            "failed" => OperationStatus::Failed,
            other => return Err(StoreError::Corrupt(format!("operation status '{other}'"))),
        };
        let kind = text(r, c.kind)?;
        Ok(OperationRow {
            op: Operation {
                id: uuid(text(r, c.id)?)?,
                kind: OperationKind::parse(kind)
                    .ok_or_else(|| StoreError::Corrupt(format!("operation kind '{kind}'")))?,
                target: r.get(c.target)?,
                target_id: uuid(text(r, c.target_id)?)?,
                status,
                progress: r.get(c.progress)?,
                error: r
                    .get::<_, Option<String>>(c.error)?
                    .as_deref()
                    .map(|e| json("operation error", e))
                    .transpose()?,
                created_at: to_ts(r.get(c.created_at)?),
                updated_at: to_ts(r.get(c.updated_at)?),
            },
            want: u(r.get(c.want)?),
        })
    }
}

pub fn insert_operation(c: &Connection, op: &Operation, want: u64) -> Result<()> {
    c.execute(
        &format!(
            "INSERT INTO operations ({OP_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
        ),
        params![
            op.id.to_string(),
            op.kind.as_str(),
            op.target,
            op.target_id.to_string(),
            op.status.as_str(),
            op.progress,
            op.error.as_ref().map(to_json).transpose()?,
            super::codec::i(want),
            cm_api::time::timestamp_ms(op.created_at),
            cm_api::time::timestamp_ms(op.updated_at),
        ],
    )?;
    Ok(())
}

pub fn list_operations(c: &Connection, limit: u32) -> Result<Vec<Operation>> {
    let rows: Vec<OperationRow> = codec::all(
        c,
        &format!("SELECT {OP_COLS} FROM operations ORDER BY created_at DESC LIMIT ?1"),
        [limit],
    )?;
    Ok(rows.into_iter().map(|r| r.op).collect())
}

pub fn get_operation(c: &Connection, id: Uuid) -> Result<OperationRow> {
    codec::first(
        c,
        &format!("SELECT {OP_COLS} FROM operations WHERE id = ?1"),
        [id.to_string()],
    )?
    .ok_or_else(|| StoreError::NotFound {
        what: "operation",
        name: id.to_string(),
    })
}

pub fn running_operations(c: &Connection) -> Result<Vec<OperationRow>> {
    codec::all(
        c,
        &format!("SELECT {OP_COLS} FROM operations WHERE status = 'running' ORDER BY created_at"),
        [],
    )
}

pub fn finish_operation(
    c: &Connection,
    id: Uuid,
    status: OperationStatus,
    progress: &str,
    error: Option<&ErrorBody>,
    now: Millis,
) -> Result<()> {
    c.execute(
        "UPDATE operations SET status = ?2, progress = ?3, error = ?4, updated_at = ?5
         WHERE id = ?1 AND status = 'running'",
        params![
            id.to_string(),
            status.as_str(),
            progress,
            error.map(to_json).transpose()?,
            now
        ],
    )?;
    Ok(())
}

pub fn set_operation_progress(c: &Connection, id: Uuid, progress: &str, now: Millis) -> Result<()> {
    c.execute(
        "UPDATE operations SET progress = ?2, updated_at = ?3 WHERE id = ?1 AND status = 'running'",
        params![id.to_string(), progress, now],
    )?;
    Ok(())
}

pub fn append_event(
    c: &Connection,
    kind: EventKind,
    target: &str,
    message: &str,
    now: Millis,
) -> Result<Event> {
    append_event_detail(c, kind, target, message, &EventDetail::default(), now)
}

/// An event with the policy engine's structured part, in the caller's
/// transaction (so an action and its event commit together).
pub fn append_event_detail(
    c: &Connection,
    kind: EventKind,
    target: &str,
    message: &str,
    d: &EventDetail,
    now: Millis,
) -> Result<Event> {
    let counters = if d.counters.is_empty() {
        None
    } else {
        Some(to_json(&d.counters)?)
    };
    c.execute(
        "INSERT INTO events (time, kind, target, message, deployable, generation, object,
            from_state, to_state, reason, action, counters)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        params![
            now,
            kind.as_str(),
            target,
            message,
            d.deployable,
            d.generation.map(codec::i),
            d.object,
            d.from,
            d.to,
            d.reason,
            d.action.map(|a| a.as_str()),
            counters
        ],
    )?;
    Ok(Event {
        detail: d.clone(),
        seq: c.last_insert_rowid(),
        time: to_ts(now),
        kind: kind.into(),
        target: target.to_string(),
        message: message.to_string(),
    })
}

/// Events after `since`, of one type (tests; the API filters by deployable too).
#[cfg(test)]
pub fn events_since(
    c: &Connection,
    since: i64,
    kind: Option<&str>,
    limit: u32,
) -> Result<Vec<Event>> {
    events_filtered(
        c,
        since,
        &EventFilter {
            kind: kind.map(str::to_string),
            deployable: None,
        },
        limit,
    )
}

pub fn events_filtered(
    c: &Connection,
    since: i64,
    f: &EventFilter,
    limit: u32,
) -> Result<Vec<Event>> {
    let mut stmt = c.prepare_cached(
        "SELECT seq, time, kind, target, message, deployable, generation, object,
                from_state, to_state, reason, action, counters FROM events
         WHERE seq > ?1 AND (?2 IS NULL OR kind = ?2) AND (?3 IS NULL OR deployable = ?3)
         ORDER BY seq LIMIT ?4",
    )?;
    let mut rows = stmt.query(params![since, f.kind, f.deployable, limit])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let counters: Option<String> = r.get("counters")?;
        out.push(Event {
            seq: r.get("seq")?,
            time: to_ts(r.get("time")?),
            // A type this version does not know (a newer master wrote it) stays readable.
            kind: EventType::from(r.get::<_, String>("kind")?),
            target: r.get("target")?,
            message: r.get("message")?,
            detail: EventDetail {
                deployable: r.get("deployable")?,
                generation: r.get::<_, Option<i64>>("generation")?.map(u),
                object: r.get("object")?,
                from: r.get("from_state")?,
                to: r.get("to_state")?,
                reason: r.get("reason")?,
                // An action word this version does not know is left out.
                action: r
                    .get::<_, Option<String>>("action")?
                    .and_then(|w| EngineAction::parse(&w)),
                counters: codec::opt_json("event counters", counters)?,
            },
        });
    }
    Ok(out)
}

pub fn last_event_seq(c: &Connection) -> Result<i64> {
    Ok(c.query_row("SELECT COALESCE(MAX(seq), 0) FROM events", [], |r| r.get(0))?)
}

/// Settings key: the highest event seq retention removed.
const PRUNED_THROUGH: &str = "events_pruned_through";

pub fn events_pruned_through(c: &Connection) -> Result<i64> {
    Ok(get_setting(c, PRUNED_THROUGH)?
        .and_then(|v| v.parse().ok())
        .unwrap_or(0))
}

pub fn prune_events(c: &Connection, before: Millis, keep: u64, batch: u64) -> Result<u64> {
    let (min, max, old): (i64, i64, Option<i64>) = c.query_row(
        "SELECT COALESCE(MIN(seq), 0), COALESCE(MAX(seq), 0),
                (SELECT MAX(seq) FROM events WHERE time < ?1)
         FROM events",
        [before],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    // Never the newest: seqs stay increasing and `since` stays meaningful.
    let keep = i64::try_from(keep.max(1)).unwrap_or(i64::MAX);
    let through = old.unwrap_or(0).max(max.saturating_sub(keep)).min(max - 1);
    if through < min || min == 0 {
        return Ok(0);
    }
    let batch = i64::try_from(batch.max(1)).unwrap_or(i64::MAX);
    let upto = through.min(min.saturating_add(batch - 1));
    let n = c.execute("DELETE FROM events WHERE seq <= ?1", [upto])?;
    if upto > events_pruned_through(c)? {
        set_setting(c, PRUNED_THROUGH, &upto.to_string())?;
    }
    Ok(n as u64)
}

pub fn prune_operations(c: &Connection, before: Millis, keep: u64, batch: u64) -> Result<u64> {
    let keep = i64::try_from(keep).unwrap_or(i64::MAX);
    let batch = i64::try_from(batch.max(1)).unwrap_or(i64::MAX);
    let n = c.execute(
        "DELETE FROM operations WHERE id IN (
             SELECT id FROM operations
             WHERE status != 'running'
               AND (updated_at < ?1 OR id IN (
                    SELECT id FROM operations ORDER BY created_at DESC LIMIT -1 OFFSET ?2))
             LIMIT ?3)",
        params![before, keep, batch],
    )?;
    Ok(n as u64)
}

#[cfg(test)]
mod retention_tests {
    use super::*;
    use crate::store::sqlite::SqliteStore;
    use cm_api::words::{EventKind, OperationKind};

    #[test]
    fn prune_keeps_the_newest_events_and_running_operations() {
        let s = SqliteStore::in_memory().unwrap();
        let c = s.conn.lock().unwrap();
        for i in 0..50 {
            append_event(&c, EventKind::HostState, "t", "m", 1000 + i).unwrap();
        }
        // By count, in batches of 7.
        let mut removed = 0;
        loop {
            let n = prune_events(&c, 0, 10, 7).unwrap();
            if n == 0 {
                break;
            }
            assert!(n <= 7);
            removed += n;
        }
        assert_eq!(removed, 40);
        assert_eq!(events_pruned_through(&c).unwrap(), 40);
        assert_eq!(events_since(&c, 0, None, 100).unwrap()[0].seq, 41);
        // By age: everything is old, but the newest event stays.
        prune_events(&c, Millis::MAX, 1000, 1000).unwrap();
        let left = events_since(&c, 0, None, 100).unwrap();
        assert_eq!(left.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![50]);
        assert_eq!(
            append_event(&c, EventKind::HostState, "t", "m", 5000)
                .unwrap()
                .seq,
            51
        );

        // Operations: the newest 4 and every running one are kept.
        for i in 0..20 {
            let mut op = new_operation(OperationKind::InstanceStart, "x", Uuid::new_v4(), "p");
            op.created_at = to_ts(1000 * i);
            op.updated_at = to_ts(1000 * i);
            op.status = if i % 5 == 0 {
                OperationStatus::Running
            } else {
                OperationStatus::Succeeded
            };
            insert_operation(&c, &op, 1).unwrap();
        }
        assert_eq!(prune_operations(&c, 0, 4, 1000).unwrap(), 12);
        assert_eq!(list_operations(&c, 100).unwrap().len(), 8);
        assert_eq!(prune_operations(&c, Millis::MAX, 1000, 1000).unwrap(), 4);
        let left = list_operations(&c, 100).unwrap();
        assert_eq!(left.len(), 4);
        assert!(left.iter().all(|o| o.status == OperationStatus::Running));
    }

    /// Token kinds are the store's words (its CHECK constraint has the same
    /// two); none is read as another (any kind but `admin` was read as a host
    /// token before).
    #[test]
    fn token_kinds_are_the_stores_words() {
        let s = SqliteStore::in_memory().unwrap();
        let c = s.conn.lock().unwrap();
        for k in TokenKind::ALL {
            assert_eq!(TokenKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(
            TokenKind::ALL.map(TokenKind::as_str),
            ["admin", "host"],
            "the words the store has always kept"
        );
        let host = HostId(uuid::Uuid::new_v4());
        insert_token(&c, "h1", TokenKind::Host, Some(host)).unwrap();
        insert_token(&c, "h2", TokenKind::Admin, None).unwrap();
        let mut got: Vec<(String, TokenKind)> = all_tokens(&c)
            .unwrap()
            .into_iter()
            .map(|(h, t)| (h, t.kind))
            .collect();
        got.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            got,
            [
                ("h1".to_string(), TokenKind::Host),
                ("h2".to_string(), TokenKind::Admin)
            ]
        );
        let e = c
            .execute(
                "INSERT INTO tokens (hash, kind, created_at) VALUES ('h3', 'reader', 0)",
                [],
            )
            .unwrap_err();
        assert!(e.to_string().contains("CHECK constraint failed"), "{e}");
    }
}
