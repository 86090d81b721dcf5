//! What a host remembers about each VM across its own restarts, in the VM's
//! directory (`state.json`, replaced atomically).

use cm_api::agent::DesiredInstance;
use cm_api::words::{KnownStopReason, ResolvedAccel, StopReason};
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LocalState {
    /// The last desired spec received for it.
    pub spec: DesiredInstance,
    /// `boot_gen` of the current or last boot (0 = never booted).
    pub boot_gen: u64,
    /// The last `reboot_gen` applied.
    pub reboot_gen: u64,
    /// True from a launch until a stop this agent handled: a VM found dead
    /// while this is set has crashed.
    pub running: bool,
    /// Why it is not running, once it stopped or failed.
    pub reason: Option<StopReason>,
    /// Whether the last boot failed before QEMU ran (an error, not a stop).
    pub failed: bool,
    /// `kvm` or `tcg`, what the last boot used.
    pub accel: Option<ResolvedAccel>,
}

impl LocalState {
    pub fn new(spec: DesiredInstance) -> LocalState {
        LocalState {
            spec,
            boot_gen: 0,
            reboot_gen: 0,
            running: false,
            reason: Some(KnownStopReason::New.into()),
            failed: false,
            accel: None,
        }
    }

    pub fn load(path: &Path) -> std::io::Result<LocalState> {
        let text = std::fs::read_to_string(path)?;
        serde_json::from_str(&text)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    }

    /// Write to a temporary file, sync, rename over: the old or the new state
    /// survives a crash, never half of one.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let data = serde_json::to_vec_pretty(self)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        durable_fs::write_atomic(path, &data, 0o644)
    }
}
