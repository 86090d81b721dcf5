//! How `cm` finds a master running on the same machine without being told.
//!
//! On start the master writes `master.toml` into the local runtime
//! directory: its URL and where its admin token is. `cm` reads it when
//! neither flags, environment nor a config file name a master.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The pointer file the master writes and `cm` reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MasterPointer {
    pub url: String,
    pub token_file: PathBuf,
}

pub const POINTER_FILE: &str = "master.toml";

/// `$CM_RUNTIME_DIR`, else `/run/cloudmaster` for root, else
/// `$XDG_RUNTIME_DIR/cloudmaster`, else `/tmp/cloudmaster-$UID`.
pub fn runtime_dir(uid: u32) -> PathBuf {
    if let Some(d) = std::env::var_os("CM_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    if uid == 0 {
        return PathBuf::from("/run/cloudmaster");
    }
    if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("cloudmaster");
    }
    PathBuf::from(format!("/tmp/cloudmaster-{uid}"))
}
