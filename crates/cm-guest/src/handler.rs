//! A config in another format goes to the handler program named in
//! /etc/cm-guest.toml: the config on its stdin, `CM_CONFIG_VERSION` in its
//! environment; exit 0 is `configured`; `key=value` lines on its stdout go
//! into the parameter map; otherwise the last line of its stderr is the reason.

use crate::run::{self, Job, Keep, RunError};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// The most of a handler's stdout read for parameters (the start of it),
/// and of its stderr kept for the reason (the end of it).
const MAX_STDOUT: usize = 1024 * 1024;
const STDERR_TAIL: usize = 8 * 1024;

pub fn run(
    handler: &Path,
    body: &[u8],
    version: u64,
    timeout: Duration,
) -> Result<BTreeMap<String, String>, String> {
    let mut cmd = Command::new(handler);
    cmd.env("CM_CONFIG_VERSION", version.to_string());
    // Its stdin is fed while its outputs are read: a handler that answers
    // before it has read everything cannot deadlock against us.
    let out = run::run(Job {
        cmd,
        stdin: Some(body),
        stdout: Keep::Head(MAX_STDOUT),
        stderr: Keep::Tail(STDERR_TAIL),
        timeout,
        cancel: None,
    })
    .map_err(|e| match e {
        RunError::TimedOut(_) => format!(
            "handler {} timed out after {}s",
            handler.display(),
            timeout.as_secs()
        ),
        e => format!("handler {}: {e}", handler.display()),
    })?;
    if !out.status.success() {
        let last = out.stderr.last_line();
        return Err(format!(
            "handler {} failed ({}){}",
            handler.display(),
            out.status,
            if last.is_empty() {
                String::new()
            } else {
                format!(": {last}")
            }
        ));
    }
    if out.stdout.truncated {
        return Err(format!(
            "handler {} wrote more than {MAX_STDOUT} bytes of parameters",
            handler.display()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout.bytes)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .filter(|(k, _)| !k.is_empty())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const T: Duration = Duration::from_secs(60);

    fn script(dir: &Path, body: &str) -> std::path::PathBuf {
        let p = dir.join("handler");
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    #[test]
    fn a_handler_gets_the_config_and_gives_parameters() {
        let d = tempfile::tempdir().unwrap();
        let seen = d.path().join("seen");
        let h = script(
            d.path(),
            &format!(
                "cat > {}; echo handled=yes; echo version=$CM_CONFIG_VERSION",
                seen.display()
            ),
        );
        let params = run(&h, b"{\"app\": 1}", 7, T).unwrap();
        assert_eq!(std::fs::read(&seen).unwrap(), b"{\"app\": 1}");
        assert_eq!(params["handled"], "yes");
        assert_eq!(params["version"], "7");
    }

    #[test]
    fn a_failing_handler_gives_its_reason() {
        let d = tempfile::tempdir().unwrap();
        let h = script(d.path(), "echo 'unknown key: frobnicate' >&2; exit 2");
        let e = run(&h, b"x", 1, T).unwrap_err();
        assert!(e.contains("unknown key: frobnicate"), "{e}");
        run(Path::new("/nonexistent/handler"), b"x", 1, T).unwrap_err();
    }

    #[test]
    fn a_chatty_handler_neither_hangs_nor_grows_us() {
        let d = tempfile::tempdir().unwrap();
        // Answers before reading its (large) input, and writes a lot to stderr.
        let h = script(
            d.path(),
            "echo ok=1; head -c 500000 /dev/zero >&2; cat > /dev/null; echo done=yes",
        );
        let body = vec![b'c'; 3 << 20];
        let t = std::time::Instant::now();
        let params = run(&h, &body, 1, T).unwrap();
        assert_eq!(
            (params["ok"].as_str(), params["done"].as_str()),
            ("1", "yes")
        );
        assert!(t.elapsed() < Duration::from_secs(30));
        let h = script(d.path(), "sleep 30");
        let e = run(&h, b"", 1, Duration::from_secs(1)).unwrap_err();
        assert!(e.contains("timed out after 1s"), "{e}");
    }
}
