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

/// A length of time as people write it in a spec: `"500ms"`, `"5s"`,
/// `"2m"`, `"1h"`, or a bare number of seconds. Kept in milliseconds;
/// written back as the shortest exact form (`"5s"`, `"1500ms"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Dur(u64);

impl Dur {
    pub const fn from_millis(ms: u64) -> Dur {
        Dur(ms)
    }
    pub const fn from_secs(s: u64) -> Dur {
        Dur(s.saturating_mul(1000))
    }
    pub const fn as_millis(self) -> u64 {
        self.0
    }
    pub fn as_duration(self) -> Duration {
        Duration::from_millis(self.0)
    }
    /// As a [`Millis`] to add to an instant, saturating.
    pub fn millis(self) -> Millis {
        i64::try_from(self.0).unwrap_or(i64::MAX)
    }

    /// Read `"500ms"`, `"5s"`, `"2m"`, `"1h"` or `"30"` (seconds).
    pub fn parse(text: &str) -> Result<Dur, String> {
        let t = text.trim();
        let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(digits);
        let n: u64 = num
            .parse()
            .map_err(|_| format!("'{text}' is not a duration (500ms, 5s, 2m, 1h)"))?;
        let scale = match unit.trim() {
            "ms" => 1,
            "" | "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            _ => return Err(format!("'{text}' is not a duration (500ms, 5s, 2m, 1h)")),
        };
        n.checked_mul(scale)
            .map(Dur)
            .ok_or_else(|| format!("'{text}' is too long"))
    }
}

impl std::fmt::Display for Dur {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = self.0;
        if ms != 0 && ms.is_multiple_of(3_600_000) {
            write!(f, "{}h", ms / 3_600_000)
        } else if ms != 0 && ms.is_multiple_of(60_000) {
            write!(f, "{}m", ms / 60_000)
        } else if ms.is_multiple_of(1000) {
            write!(f, "{}s", ms / 1000)
        } else {
            write!(f, "{ms}ms")
        }
    }
}

impl serde::Serialize for Dur {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Dur {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Dur, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Dur;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a duration: 500ms, 5s, 2m, 1h, or a number of seconds")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Dur, E> {
                v.checked_mul(1000)
                    .map(Dur)
                    .ok_or_else(|| E::custom("too long"))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Dur, E> {
                let v = u64::try_from(v).map_err(|_| E::custom("a duration cannot be negative"))?;
                self.visit_u64(v)
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Dur, E> {
                Dur::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for Dur {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .description(Some("A duration: 500ms, 5s, 2m, 1h"))
            .into()
    }
}
#[cfg(feature = "openapi")]
impl utoipa::ToSchema for Dur {}

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

    #[test]
    fn durations_read_as_people_write_them_and_back() {
        for (text, ms, back) in [
            ("500ms", 500, "500ms"),
            ("5s", 5000, "5s"),
            ("30", 30_000, "30s"),
            ("2m", 120_000, "2m"),
            ("1h", 3_600_000, "1h"),
            ("90s", 90_000, "90s"),
            ("0", 0, "0s"),
        ] {
            let d = Dur::parse(text).unwrap();
            assert_eq!(d.as_millis(), ms, "{text}");
            assert_eq!(d.to_string(), back, "{text}");
        }
        for bad in ["", "s", "5 sec", "-1s", "1.5s", "99999999999999999999h"] {
            assert!(Dur::parse(bad).is_err(), "{bad}");
        }
    }
}
