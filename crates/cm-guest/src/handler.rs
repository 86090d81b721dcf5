//! A config in another format goes to the handler program named in
//! /etc/cm-guest.toml: the config on its stdin, `CM_CONFIG_VERSION` in its
//! environment; exit 0 is `configured`; `key=value` lines on its stdout go
//! into the parameter map; otherwise the last line of its stderr is the reason.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

pub fn run(handler: &Path, body: &[u8], version: u64) -> Result<BTreeMap<String, String>, String> {
    let mut child = Command::new(handler)
        .env("CM_CONFIG_VERSION", version.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("handler {}: {e}", handler.display()))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A handler that does not read all of its input is not an error.
        let _ = stdin.write_all(body);
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("handler {}: {e}", handler.display()))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err.lines().last().unwrap_or("").trim();
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
    Ok(String::from_utf8_lossy(&out.stdout)
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
        let params = run(&h, b"{\"app\": 1}", 7).unwrap();
        assert_eq!(std::fs::read(&seen).unwrap(), b"{\"app\": 1}");
        assert_eq!(params["handled"], "yes");
        assert_eq!(params["version"], "7");
    }

    #[test]
    fn a_failing_handler_gives_its_reason() {
        let d = tempfile::tempdir().unwrap();
        let h = script(d.path(), "echo 'unknown key: frobnicate' >&2; exit 2");
        let e = run(&h, b"x", 1).unwrap_err();
        assert!(e.contains("unknown key: frobnicate"), "{e}");
        assert!(run(Path::new("/nonexistent/handler"), b"x", 1).is_err());
    }
}
