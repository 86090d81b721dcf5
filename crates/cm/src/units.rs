//! Sizes as people type them: `512`, `512M`, `2G`, `1GiB`.

/// Parse a memory size into MiB. A bare number is MiB.
pub fn parse_mib(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a size (examples: 512, 512M, 2G)"))?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "m" | "mb" | "mib" => 1,
        "g" | "gb" | "gib" => 1024,
        "t" | "tb" | "tib" => 1024 * 1024,
        _ => return Err(format!("'{s}' has an unknown unit (use M or G)")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("'{s}' is too large"))
}

/// Parse a volume size into bytes: a bare number or `M` is MiB, `G` GiB,
/// `T` TiB (volumes are whole MiB).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    parse_mib(s)?
        .checked_mul(1 << 20)
        .ok_or_else(|| format!("'{s}' is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_sizes() {
        assert_eq!(parse_bytes("10G"), Ok(10 << 30));
        assert_eq!(parse_bytes("512M"), Ok(512 << 20));
        assert_eq!(parse_bytes("1"), Ok(1 << 20));
        parse_bytes("99999999999999999T").unwrap_err();
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_mib("512"), Ok(512));
        assert_eq!(parse_mib("512M"), Ok(512));
        assert_eq!(parse_mib("2G"), Ok(2048));
        assert_eq!(parse_mib("1GiB"), Ok(1024));
        parse_mib("x").unwrap_err();
        parse_mib("5Q").unwrap_err();
        parse_mib("").unwrap_err();
    }
}
