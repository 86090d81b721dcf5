//! cm-guest's own settings, from `/etc/cm-guest.toml` in the image.

use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The program that applies configs in formats other than cm-guest's own.
    #[serde(default)]
    pub handler: Option<PathBuf>,
    /// Seconds between heartbeats.
    #[serde(default = "default_heartbeat")]
    pub heartbeat_secs: u64,
    /// Where cm-guest keeps what it needs across restarts.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// Seconds the handler may run before it is killed (with its children).
    #[serde(default = "default_handler_timeout")]
    pub handler_timeout_secs: u64,
}

fn default_heartbeat() -> u64 {
    2
}

fn default_handler_timeout() -> u64 {
    600
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/cm-guest")
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            handler: None,
            heartbeat_secs: default_heartbeat(),
            state_dir: default_state_dir(),
            handler_timeout_secs: default_handler_timeout(),
        }
    }
}

impl Settings {
    /// `root/etc/cm-guest.toml`, or the defaults when there is none.
    pub fn load(root: &Path) -> Result<Settings, String> {
        let path = root.join("etc/cm-guest.toml");
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                toml::from_str(&text).map_err(|e| format!("{}: {}", path.display(), e.message()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Settings::default()),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_have_defaults_and_refuse_unknown_keys() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(Settings::load(d.path()).unwrap(), Settings::default());
        std::fs::create_dir_all(d.path().join("etc")).unwrap();
        std::fs::write(
            d.path().join("etc/cm-guest.toml"),
            "handler = \"/bin/h\"\nheartbeat_secs = 5\n",
        )
        .unwrap();
        let s = Settings::load(d.path()).unwrap();
        assert_eq!(
            (s.handler.as_deref(), s.heartbeat_secs),
            (Some(Path::new("/bin/h")), 5)
        );
        std::fs::write(d.path().join("etc/cm-guest.toml"), "handlr = 1\n").unwrap();
        assert!(Settings::load(d.path())
            .unwrap_err()
            .contains("unknown field"));
    }
}
