//! Columns to values and back: enums as their wire strings, lists as JSON.

use super::super::{Result, StoreError};
use cm_api::agent::{ObservedState, Power};
use cm_api::instance::{Accel, RestartPolicy};
use cm_api::words::ResolvedAccel;
use serde::de::DeserializeOwned;
use uuid::Uuid;

pub fn uuid(s: &str) -> Result<Uuid> {
    Uuid::parse_str(s).map_err(|e| StoreError::Corrupt(format!("uuid '{s}': {e}")))
}

pub fn json<T: DeserializeOwned>(what: &str, s: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

pub fn to_json<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt(format!("encode: {e}")))
}

pub fn power(s: &str) -> Result<Power> {
    match s {
        "running" => Ok(Power::Running),
        "stopped" => Ok(Power::Stopped),
        _ => Err(StoreError::Corrupt(format!("power '{s}'"))),
    }
}

pub fn observed(s: Option<String>) -> Result<Option<ObservedState>> {
    match s {
        None => Ok(None),
        Some(s) => ObservedState::parse(&s)
            .map(Some)
            .ok_or_else(|| StoreError::Corrupt(format!("observed state '{s}'"))),
    }
}

/// What a host said QEMU runs with (`kvm`, `tcg`).
pub fn resolved_accel(s: Option<String>) -> Result<Option<ResolvedAccel>> {
    match s {
        None => Ok(None),
        Some(s) => ResolvedAccel::parse(&s)
            .map(Some)
            .ok_or_else(|| StoreError::Corrupt(format!("accel '{s}'"))),
    }
}

pub fn restart_policy(s: &str) -> Result<RestartPolicy> {
    s.parse().map_err(StoreError::Corrupt)
}

pub fn accel(s: &str) -> Result<Accel> {
    s.parse().map_err(StoreError::Corrupt)
}

/// SQLite integers are i64; ours are never negative.
pub fn u(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

pub fn i(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A row type decoded by column name. The names are looked up once per
/// statement ([`FromRow::Cols`], made by [`columns!`]), then each row is
/// read at those positions: by name, without a name search per value.
pub trait FromRow: Sized {
    type Cols;
    fn cols(stmt: &rusqlite::Statement<'_>) -> rusqlite::Result<Self::Cols>;
    fn from_row(r: &rusqlite::Row<'_>, c: &Self::Cols) -> Result<Self>;
}

/// `columns!(Cols { a, b, c })`: a struct of the positions of the columns
/// named `a`, `b`, `c` in a statement, found by name (an unknown name is an
/// error at the statement, not a wrong value).
macro_rules! columns {
    ($name:ident { $($col:ident),* $(,)? }) => {
        pub struct $name { $(pub $col: usize,)* }
        impl $name {
            pub fn of(s: &rusqlite::Statement<'_>) -> rusqlite::Result<$name> {
                Ok($name { $($col: s.column_index(stringify!($col))?,)* })
            }
        }
    };
}
pub(crate) use columns;

/// Every row of a (cached) statement.
pub fn all<T: FromRow>(
    c: &rusqlite::Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<T>> {
    let mut stmt = c.prepare_cached(sql)?;
    let cols = T::cols(&stmt)?;
    let mut rows = stmt.query(params)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        out.push(T::from_row(r, &cols)?);
    }
    Ok(out)
}

/// The first row of a (cached) statement, if any.
pub fn first<T: FromRow>(
    c: &rusqlite::Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Option<T>> {
    let mut stmt = c.prepare_cached(sql)?;
    let cols = T::cols(&stmt)?;
    let mut rows = stmt.query(params)?;
    match rows.next()? {
        Some(r) => Ok(Some(T::from_row(r, &cols)?)),
        None => Ok(None),
    }
}

pub fn opt_json<T: DeserializeOwned + Default>(what: &str, s: Option<String>) -> Result<T> {
    s.as_deref()
        .map(|s| json(what, s))
        .transpose()
        .map(Option::unwrap_or_default)
}

/// A TEXT column, borrowed from the row (no copy for values parsed at once).
pub fn text<'a>(r: &'a rusqlite::Row<'_>, i: usize) -> Result<&'a str> {
    r.get_ref(i)?
        .as_str()
        .map_err(|e| StoreError::Corrupt(format!("column {i}: {e}")))
}
