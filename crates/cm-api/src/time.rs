//! Time in milliseconds, the one way every crate reads the clock as a
//! number: since the Unix epoch for stored and reported instants, as a
//! plain count for durations. Saturating, never a panic: a clock before
//! 1970 reads as negative milliseconds (or 0 where the type is unsigned),
//! a duration too long for 64 bits as the largest value.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (negative before it), as the master
/// stores them.
pub type Millis = i64;

/// Now, in milliseconds since the Unix epoch.
pub fn now_ms() -> Millis {
    ms_since_epoch(SystemTime::now())
}

/// `t` in milliseconds since the Unix epoch, saturating.
pub fn ms_since_epoch(t: SystemTime) -> Millis {
    match t.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_millis()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_millis())
            .map(|ms| -ms)
            .unwrap_or(i64::MIN),
    }
}

/// The length of `d` in whole milliseconds, saturating at `u64::MAX`.
pub fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The length of `d` in whole milliseconds as a [`Millis`], to add to or
/// subtract from an instant; saturating at `i64::MAX`.
pub fn duration_millis(d: Duration) -> Millis {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Now, in seconds since the Unix epoch with a fraction (0 before it).
pub fn now_secs_f64() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// A wire [`crate::Timestamp`] as milliseconds since the epoch
/// (saturating at the ends of `Millis`).
pub fn timestamp_ms(t: crate::Timestamp) -> Millis {
    Millis::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or_else(|_| {
        if t.unix_timestamp() < 0 {
            Millis::MIN
        } else {
            Millis::MAX
        }
    })
}

/// Milliseconds since the epoch as a wire [`crate::Timestamp`] (the epoch
/// itself if out of its range).
pub fn to_timestamp(ms: Millis) -> crate::Timestamp {
    ::time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(::time::OffsetDateTime::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn now_is_after_this_code_was_written_and_agrees_with_the_timestamp_type() {
        let ms = now_ms();
        // 2026-01-01T00:00:00Z
        assert!(ms > 1_767_225_600_000, "{ms}");
        let ts = to_timestamp(ms);
        let back = ts.unix_timestamp_nanos() / 1_000_000;
        assert_eq!(back, i128::from(ms));
        assert!((now_secs_f64() * 1000.0 - ms as f64).abs() < 60_000.0);
    }

    #[test]
    fn instants_and_durations_saturate() {
        assert_eq!(ms_since_epoch(UNIX_EPOCH), 0);
        assert_eq!(
            ms_since_epoch(UNIX_EPOCH - Duration::from_millis(1500)),
            -1500
        );
        assert_eq!(ms_since_epoch(UNIX_EPOCH + Duration::from_millis(7)), 7);
        assert_eq!(duration_ms(Duration::from_micros(2999)), 2);
        assert_eq!(duration_ms(Duration::MAX), u64::MAX);
        assert_eq!(duration_millis(Duration::from_secs(3)), 3000);
        assert_eq!(duration_millis(Duration::MAX), i64::MAX);
        assert_eq!(to_timestamp(i64::MAX), ::time::OffsetDateTime::UNIX_EPOCH);
    }
}
