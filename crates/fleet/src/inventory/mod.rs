//! The inventory: which nodes there are, how to reach them over SSH, their
//! groups, and the balancer ("referee") in front of them.
//!
//! Two formats: the seed's `cloudManager.ini` as is (`ini.rs`) and a native
//! TOML inventory (`native.rs`). Found at `--inventory`, `$CM_INVENTORY`,
//! else `/etc/cloudManager.ini`.

mod ini;
mod native;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// How to reach a node over SSH; unset fields are left to ssh (and so to
/// `~/.ssh/config` or `--ssh-config`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SshSettings {
    pub user: Option<String>,
    pub port: Option<u16>,
    pub identity: Option<PathBuf>,
    /// Extra options for ssh, each passed as `-o OPTION`.
    pub options: Vec<String>,
}

impl SshSettings {
    /// `self`, with what it leaves unset taken from `other`.
    pub fn or(&self, other: &SshSettings) -> SshSettings {
        let mut options = other.options.clone();
        options.extend(self.options.iter().cloned());
        SshSettings {
            user: self.user.clone().or_else(|| other.user.clone()),
            port: self.port.or(other.port),
            identity: self.identity.clone().or_else(|| other.identity.clone()),
            options,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub name: String,
    /// Address or host name ssh connects to.
    pub host: String,
    /// The node's web port in the balancer (the seed's `A=10.0.2.12:80`).
    pub web_port: Option<u16>,
    /// This node's own SSH settings, merged with its groups' and the defaults.
    pub ssh: SshSettings,
    /// The node's name in the balancer, when not its own name.
    pub balancer_name: Option<String>,
}

/// Which balancer takes nodes in and out of the pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefereeKind {
    /// HAProxy's runtime API (the default).
    Haproxy {
        /// `unix:/path` (or a bare path) or `tcp:HOST:PORT`.
        socket: String,
        backend: String,
        /// Where `show servers state` is saved after each change, for
        /// `load-server-state-from-file` across reloads.
        state_file: Option<PathBuf>,
    },
    /// Apache mod_proxy_balancer: a block in a file cm owns part of.
    Apache {
        config: PathBuf,
        cluster_id: String,
        folder: String,
        check_command: String,
        reload_command: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Referee {
    /// Where it runs: `local`/loopback means this machine, else reached over SSH.
    pub host: String,
    pub ssh: SshSettings,
    pub kind: RefereeKind,
}

impl Referee {
    pub fn is_local(&self) -> bool {
        matches!(
            self.host.as_str(),
            "local" | "localhost" | "127.0.0.1" | "::1"
        )
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inventory {
    /// In the file's order.
    pub nodes: Vec<Node>,
    pub groups: BTreeMap<String, Vec<String>>,
    pub referee: Option<Referee>,
    pub source: PathBuf,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InventoryError {
    #[error("{path}:{line}: {msg}")]
    At {
        path: String,
        line: usize,
        msg: String,
    },
    #[error("{path}: {msg}")]
    File { path: String, msg: String },
    #[error(
        "no inventory: give --inventory FILE, set CM_INVENTORY, or write /etc/cloudManager.ini"
    )]
    Missing,
}

impl Inventory {
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// Parse `text` (from `path`): TOML when the name ends in `.toml`, else INI.
    pub fn parse(path: &Path, text: &str) -> Result<Inventory, InventoryError> {
        let is_toml = path.extension().map(|e| e == "toml").unwrap_or(false);
        let mut inv = if is_toml {
            native::parse(path, text)?
        } else {
            ini::parse(path, text)?
        };
        inv.source = path.to_path_buf();
        Ok(inv)
    }

    pub fn load(path: &Path) -> Result<Inventory, InventoryError> {
        let text = std::fs::read_to_string(path).map_err(|e| InventoryError::File {
            path: path.display().to_string(),
            msg: e.to_string(),
        })?;
        Inventory::parse(path, &text)
    }

    /// `--inventory`, then `$CM_INVENTORY`, then `/etc/cloudManager.ini`.
    pub fn find(flag: Option<&Path>) -> Result<Inventory, InventoryError> {
        if let Some(p) = flag {
            return Inventory::load(p);
        }
        if let Some(p) = std::env::var_os("CM_INVENTORY").filter(|p| !p.is_empty()) {
            return Inventory::load(Path::new(&p));
        }
        let etc = Path::new("/etc/cloudManager.ini");
        if etc.exists() {
            return Inventory::load(etc);
        }
        Err(InventoryError::Missing)
    }
}

/// Node and group names: letters, digits, `-`, `_`, `.`.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}
