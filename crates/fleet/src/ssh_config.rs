//! The ssh_config file cm hands ssh (`-F`) for one run: the user's own
//! configuration first, then cm's defaults after it.
//!
//! ssh keeps the first value it reads for an option, and a `-o` on the
//! command line beats every file. So cm must not pass as `-o` anything the
//! user may have set (`StrictHostKeyChecking no` in a `Match` block, say):
//! its defaults go in a `Host *` block *after* an `Include` of the user's
//! files, where they fill in only what the user left unset. Without
//! `--ssh-config` the included files are the two ssh reads by itself
//! (`~/.ssh/config`, then `/etc/ssh/ssh_config`); with it, that one file,
//! as `ssh -F FILE` reads only FILE.

use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

/// Seconds ssh waits for a connection unless the user's config (or
/// `--connect-timeout`) says otherwise.
pub const DEFAULT_CONNECT_TIMEOUT: u64 = 10;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--ssh-config {0}: {1}")]
    Unreadable(String, std::io::Error),
    #[error("--ssh-config {0}: a path with a quote or a line break cannot be given to ssh")]
    BadPath(String),
    #[error("writing cm's ssh configuration: {0}")]
    Write(std::io::Error),
}

/// The file of one run. Removed when the run ends (ssh reads it only when
/// it starts, control masters included).
#[derive(Debug)]
pub struct RunConfig {
    file: tempfile::TempPath,
    /// Identifies what ssh reads, for naming control sockets: the text,
    /// and when each included file was last changed.
    pub fingerprint: String,
}

impl RunConfig {
    /// `user_config`: `--ssh-config`, if given (`none` as for `ssh -F none`).
    pub fn write(user_config: Option<&Path>) -> Result<RunConfig, ConfigError> {
        let includes: Vec<String> = match user_config {
            Some(p) if p == Path::new("none") => Vec::new(),
            Some(p) => {
                let shown = p.display().to_string();
                let abs = std::path::absolute(p)
                    .map_err(|e| ConfigError::Unreadable(shown.clone(), e))?;
                // An Include of a missing file is silently skipped; ssh -F
                // of one is an error, and so is it here.
                std::fs::File::open(&abs).map_err(|e| ConfigError::Unreadable(shown.clone(), e))?;
                let s = abs.display().to_string();
                if s.contains(['"', '\n', '\r']) {
                    return Err(ConfigError::BadPath(shown));
                }
                vec![s]
            }
            None => vec!["~/.ssh/config".into(), "/etc/ssh/ssh_config".into()],
        };
        let text = render(&includes);
        let mut f = tempfile::Builder::new()
            .prefix("cm-ssh-config-")
            .tempfile()
            .map_err(ConfigError::Write)?;
        f.write_all(text.as_bytes()).map_err(ConfigError::Write)?;
        let mut h = Sha256::new();
        h.update(text.as_bytes());
        for inc in &includes {
            h.update(changed(inc).as_bytes());
        }
        Ok(RunConfig {
            file: f.into_temp_path(),
            fingerprint: hex(&h.finalize()),
        })
    }

    pub fn path(&self) -> &Path {
        &self.file
    }
}

/// The file's text: the includes, then cm's defaults.
pub fn render(includes: &[String]) -> String {
    let mut s = String::from(
        "# Written by cm for one run (docs/fleet.md, Transport): your ssh\n\
         # configuration first, so that what it sets wins, then cm's defaults.\n",
    );
    for i in includes {
        s.push_str(&format!("Include \"{i}\"\n"));
    }
    s.push_str(&format!(
        "Host *\n    ConnectTimeout {DEFAULT_CONNECT_TIMEOUT}\n"
    ));
    s
}

/// When an included file last changed ("" when it does not exist), so that
/// an edited ssh configuration gets new control masters.
fn changed(include: &str) -> String {
    let path = match (include.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(include),
    };
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| format!("{include}@{}", d.as_nanos()))
        .unwrap_or_default()
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// What ssh makes of an option for a host, by `ssh -G` (no connection).
    fn resolved(args: &[&str], option: &str) -> String {
        let out = Command::new("ssh")
            .arg("-G")
            .args(args)
            .arg("node.example")
            .output()
            .expect("ssh -G");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{option} ")).map(str::to_string))
            .unwrap_or_default()
    }

    #[test]
    fn the_users_settings_win_over_cms_defaults_even_in_match_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let user = dir.path().join("user.cfg");
        std::fs::write(
            &user,
            "Match host node.*\n  StrictHostKeyChecking no\n  ConnectTimeout 3\nHost other\n  Port 2222\n",
        )
        .unwrap();
        let rc = RunConfig::write(Some(&user)).unwrap();
        let f = rc.path().to_str().unwrap();
        assert_eq!(resolved(&["-F", f], "stricthostkeychecking"), "false");
        assert_eq!(resolved(&["-F", f], "connecttimeout"), "3");
        // A Match or Host block left open in the user's file does not swallow
        // cm's defaults.
        std::fs::write(&user, "Host other\n  Port 2222\n").unwrap();
        let rc = RunConfig::write(Some(&user)).unwrap();
        let f = rc.path().to_str().unwrap();
        assert_eq!(resolved(&["-F", f], "connecttimeout"), "10");
        assert_eq!(resolved(&["-F", f], "port"), "22");
        // An explicit -o still beats everything.
        assert_eq!(
            resolved(&["-F", f, "-o", "ConnectTimeout=7"], "connecttimeout"),
            "7"
        );
    }

    #[test]
    fn a_missing_or_unquotable_config_is_an_error_and_none_includes_nothing() {
        let e = RunConfig::write(Some(Path::new("/nonexistent/ssh.cfg"))).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("--ssh-config /nonexistent/ssh.cfg:"),
            "{e}"
        );
        let none = RunConfig::write(Some(Path::new("none"))).unwrap();
        let text = std::fs::read_to_string(none.path()).unwrap();
        assert!(!text.contains("Include"), "{text}");
        let dflt = render(&["~/.ssh/config".into(), "/etc/ssh/ssh_config".into()]);
        assert!(
            dflt.contains("Include \"~/.ssh/config\"\nInclude \"/etc/ssh/ssh_config\"\nHost *\n")
        );
    }

    #[test]
    fn the_fingerprint_changes_when_the_users_file_does() {
        let dir = tempfile::tempdir().unwrap();
        let user = dir.path().join("user.cfg");
        std::fs::write(&user, "Port 22\n").unwrap();
        let a = RunConfig::write(Some(&user)).unwrap().fingerprint;
        assert_eq!(a, RunConfig::write(Some(&user)).unwrap().fingerprint);
        let later = std::time::SystemTime::now() + std::time::Duration::from_secs(5);
        std::fs::File::options()
            .write(true)
            .open(&user)
            .unwrap()
            .set_modified(later)
            .unwrap();
        assert_ne!(a, RunConfig::write(Some(&user)).unwrap().fingerprint);
    }
}
