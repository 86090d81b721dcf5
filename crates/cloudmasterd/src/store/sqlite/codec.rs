//! Columns to values and back: enums as their wire strings, lists as JSON.

use super::super::{Result, StoreError};
use cm_api::agent::{ObservedState, Power};
use cm_api::instance::{Accel, RestartPolicy};
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

pub fn restart_policy(s: &str) -> Result<RestartPolicy> {
    s.parse().map_err(StoreError::Corrupt)
}

pub fn accel(s: &str) -> Result<Accel> {
    s.parse().map_err(StoreError::Corrupt)
}

/// SQLite integers are i64; ours are never negative.
pub fn u(v: i64) -> u64 {
    v.max(0) as u64
}

pub fn i(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}
