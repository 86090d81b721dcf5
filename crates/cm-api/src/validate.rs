//! Input rules shared by the master (which enforces them) and `cm` (which
//! can reject early with the same message).

use crate::ApiError;

/// Names of instances, hosts, images and flavors: a DNS label (RFC 1123),
/// so that an instance name can also be its guest hostname. Dots are allowed
/// for flavors (`m1.small`) and images (`debian-12.7`).
pub fn name(field: &str, value: &str, allow_dots: bool) -> Result<(), ApiError> {
    let bad = |why: &str| {
        Err(ApiError::invalid(
            field,
            format!("invalid {field} '{}': {why}", printable(value)),
        ))
    };
    if value.is_empty() {
        return bad("must not be empty");
    }
    if value.len() > 63 {
        return bad("at most 63 characters");
    }
    let first = value.as_bytes()[0];
    let last = value.as_bytes()[value.len() - 1];
    if !first.is_ascii_lowercase() && !first.is_ascii_digit() {
        return bad("must start with a lowercase letter or digit");
    }
    if !last.is_ascii_lowercase() && !last.is_ascii_digit() {
        return bad("must end with a lowercase letter or digit");
    }
    for c in value.chars() {
        let ok =
            c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || (allow_dots && c == '.');
        if !ok {
            return bad(if allow_dots {
                "only lowercase letters, digits, '-' and '.' are allowed"
            } else {
                "only lowercase letters, digits and '-' are allowed"
            });
        }
    }
    Ok(())
}

/// Show a user's string in an error without letting control characters
/// through to a terminal or a log.
pub fn printable(value: &str) -> String {
    let mut s: String = value
        .chars()
        .take(80)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if value.chars().count() > 80 {
        s.push('…');
    }
    s
}

/// Memory sizes accepted for an instance, in MiB.
pub const MIN_MEMORY_MIB: u64 = 64;
pub const MAX_MEMORY_MIB: u64 = 4 * 1024 * 1024;
/// vCPUs accepted for an instance.
pub const MAX_VCPUS: u32 = 255;

pub fn memory_mib(field: &str, v: u64) -> Result<(), ApiError> {
    if !(MIN_MEMORY_MIB..=MAX_MEMORY_MIB).contains(&v) {
        return Err(ApiError::invalid(
            field,
            format!("memory must be between {MIN_MEMORY_MIB} and {MAX_MEMORY_MIB} MiB, got {v}"),
        ));
    }
    Ok(())
}

pub fn vcpus(field: &str, v: u32) -> Result<(), ApiError> {
    if !(1..=MAX_VCPUS).contains(&v) {
        return Err(ApiError::invalid(
            field,
            format!("vcpus must be between 1 and {MAX_VCPUS}, got {v}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_labels() {
        for ok in ["a", "web-1", "0db", "x".repeat(63).as_str()] {
            assert!(name("name", ok, false).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-a",
            "a-",
            "A",
            "a_b",
            "a b",
            "a.b",
            "é",
            &"x".repeat(64),
        ] {
            let e = name("name", bad, false).unwrap_err();
            assert_eq!(e.error.field.as_deref(), Some("name"), "{bad}");
        }
        name("flavor", "m1.small", true).unwrap();
    }

    #[test]
    fn printable_strips_control_characters() {
        assert_eq!(printable("a\u{1b}[31mb"), "a?[31mb");
        assert!(printable(&"y".repeat(200)).ends_with('…'));
    }

    #[test]
    fn sizes() {
        memory_mib("memory_mib", 128).unwrap();
        assert!(memory_mib("memory_mib", 1).is_err());
        assert!(vcpus("vcpus", 0).is_err());
        vcpus("vcpus", 2).unwrap();
    }
}
