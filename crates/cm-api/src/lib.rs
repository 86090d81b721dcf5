//! Wire types of cloudmaster: every JSON body that crosses a process boundary.
//!
//! `cloudmasterd`, `cloudhostd`, `cm` and the tests all use these types, so a
//! field renamed here is renamed everywhere at compile time. The modules follow
//! the REST resources of DESIGN.md §3.

pub mod agent;
pub mod answer;
pub mod backup;
pub mod backup_target;
pub mod boot;
pub mod deploy;
pub mod error;
pub mod event;
pub mod host;
pub mod ids;
pub mod image;
pub mod instance;
pub mod local;
pub mod operation;
pub mod snapshot;
pub mod time;
pub mod upload;
pub mod validate;
pub mod volume;
pub mod words;

pub use error::{ApiError, ErrorBody, ErrorCode};

/// The default port of the master's REST API (seed 000).
pub const DEFAULT_PORT: u16 = 8107;

/// Timestamps on the wire are RFC 3339 strings in UTC.
pub type Timestamp = ::time::OffsetDateTime;

/// Serde helpers for RFC 3339 timestamps.
pub mod ts {
    pub use ::time::serde::rfc3339::option;
    pub use ::time::serde::rfc3339::{deserialize, serialize};
}

/// Format a timestamp for people: `2026-11-23 04:22:46Z`.
pub fn human_time(t: &Timestamp) -> String {
    let fmt = ::time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]Z");
    t.to_offset(::time::UtcOffset::UTC)
        .format(&fmt)
        .unwrap_or_else(|_| t.to_string())
}

/// Seconds between `t` and now, rounded down, never negative.
pub fn age_secs(t: &Timestamp) -> u64 {
    let d = ::time::OffsetDateTime::now_utc() - *t;
    u64::try_from(d.whole_seconds()).unwrap_or(0)
}
