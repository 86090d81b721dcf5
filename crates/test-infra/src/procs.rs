//! What every user of this machine sees of its processes: their command
//! lines (`ps -eo args`, `/proc/PID/cmdline`).

/// Every process whose command line contains one of `needles`, as
/// `PID: ARGS` (arguments joined with spaces).
pub fn showing(needles: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        // A process may end while we look: then it shows nothing.
        let Ok(raw) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args = String::from_utf8_lossy(&raw).replace('\0', " ");
        if needles.iter().any(|n| !n.is_empty() && args.contains(n)) {
            out.push(format!("{name}: {}", args.trim_end()));
        }
    }
    out
}

/// `ps -eo args`, for a second opinion on what `showing` read.
pub fn ps_args() -> String {
    std::process::Command::new("ps")
        .args(["-eo", "args"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn our_own_command_line_is_seen() {
        let me = std::env::args().next().unwrap_or_default();
        let seen = super::showing(&[&me]);
        assert!(seen
            .iter()
            .any(|l| l.starts_with(&format!("{}:", std::process::id()))));
        assert!(super::showing(&["no process has this in its args \u{1}"]).is_empty());
    }
}
