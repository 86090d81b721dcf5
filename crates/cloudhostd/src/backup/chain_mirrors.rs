//! A chain's copy over ssh, as the chains' tasks keep it (docs/host.md,
//! "Backup chains over ssh"): copied after each change, fetched back when
//! the chain lost backups the master saw made, and the state of each copy
//! (in memory) for the reports. The rsync is backup/mirror.rs.

use super::{chain_name, disk_of, Chain, Chains};
use cm_api::agent::DesiredChain;
use std::collections::HashSet;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// How long after a failed copy to (or fetch from) a mirror it is tried
/// again.
#[cfg(not(test))]
pub(super) const MIRROR_RETRY: Duration = Duration::from_secs(30);
#[cfg(test)]
pub(super) const MIRROR_RETRY: Duration = Duration::from_secs(1);

/// What this agent knows of a chain's copy over ssh (in memory: after a
/// restart the chain is copied again, which rsync makes cheap).
#[derive(Debug, Default)]
pub(super) struct Mirror {
    /// The target last copied to.
    pub(super) target: String,
    /// The chain changed since the last good copy.
    pub(super) dirty: bool,
    /// The backups the last good copy held.
    pub(super) copied: HashSet<Uuid>,
    /// Why the last copy or fetch failed.
    pub(super) error: Option<String>,
    /// Not tried again before this.
    pub(super) retry_at: Option<Instant>,
}

impl Mirror {
    pub(super) fn due(&self) -> bool {
        self.retry_at.is_none_or(|t| Instant::now() >= t)
    }
}

impl Chains {
    /// Whether the master gives the chain a mirror.
    pub fn mirrored(&self, name: &str) -> bool {
        self.mirror_of(name).is_some()
    }

    /// The chain's `mirror`, when the master gives it one.
    fn mirror_of(&self, name: &str) -> Option<String> {
        let s = self.state();
        let c = s
            .wanted
            .iter()
            .find(|c| chain_name(c.disk.of, c.disk.disk) == name)?;
        c.mirror.clone()
    }

    /// Whether the chain holds every backup the master saw made (and may
    /// be worked on and copied): one it lost is fetched back from its
    /// mirror first. A chain that lost one and has no mirror only goes on
    /// (nothing is made again, nothing copied).
    pub(super) fn fetch_lost(&self, chain: &Chain, name: &str, want: &DesiredChain) -> bool {
        let Some(target) = &want.mirror else {
            return true;
        };
        let lost = |chain: &Chain| -> Vec<Uuid> {
            let files = chain.list().unwrap_or_default();
            want.made
                .iter()
                .filter(|id| !want.deleted.contains(id) && !files.iter().any(|f| f.id == **id))
                .copied()
                .collect()
        };
        if lost(chain).is_empty() {
            return true;
        }
        if let Err(e) = self.pull(chain, name, target) {
            tracing::warn!("backup chain {name}: {e}");
            return false;
        }
        let still = lost(chain);
        if still.is_empty() {
            return true;
        }
        let e = format!("the copy at {target} lacks backup(s) {still:?} too");
        tracing::warn!("backup chain {name}: {e}");
        self.mirror_failed(name, target, e);
        false
    }

    /// Fetch the chain's files from `target` (the error is recorded).
    fn pull(&self, chain: &Chain, name: &str, target: &str) -> Result<(), String> {
        let ssh = self.state().ssh.clone();
        let r = match cm_api::backup_target::Target::parse(target) {
            Ok(cm_api::backup_target::Target::Ssh(t)) => {
                ssh.pull(chain, name, &t).map_err(|e| e.to_string())
            }
            _ => Err(format!("the master gave {target:?}, not an ssh target")),
        };
        match &r {
            Ok(()) => tracing::info!("backup chain {name}: fetched from {target}"),
            Err(e) => self.mirror_failed(name, target, format!("fetching: {e}")),
        }
        r
    }

    fn mirror_failed(&self, name: &str, target: &str, error: String) {
        let mut s = self.state();
        let m = s.mirrors.entry(name.to_string()).or_default();
        m.target = target.to_string();
        m.dirty = true;
        m.error = Some(error);
        m.retry_at = Some(Instant::now() + MIRROR_RETRY);
    }

    /// Copy the chain to its mirror when it changed since the last good
    /// copy (or never was, by this agent).
    pub(super) fn copy(&self, chain: &Chain, name: &str, want: &DesiredChain) {
        let Some(target) = &want.mirror else { return };
        let ssh = {
            let s = self.state();
            if let Some(m) = s.mirrors.get(name) {
                if m.target == *target && !m.dirty && m.error.is_none() {
                    return;
                }
            }
            s.ssh.clone()
        };
        let r = match cm_api::backup_target::Target::parse(target) {
            Ok(cm_api::backup_target::Target::Ssh(t)) => {
                ssh.push(chain, name, &t).map_err(|e| e.to_string())
            }
            _ => Err(format!("the master gave {target:?}, not an ssh target")),
        };
        match r {
            Ok(()) => {
                let copied = chain
                    .list()
                    .map(|f| f.iter().map(|f| f.id).collect())
                    .unwrap_or_default();
                tracing::info!("backup chain {name}: copied to {target}");
                let mut s = self.state();
                s.mirrors.insert(
                    name.to_string(),
                    Mirror {
                        target: target.clone(),
                        copied,
                        ..Mirror::default()
                    },
                );
            }
            Err(e) => {
                tracing::warn!("backup chain {name}: {e}");
                self.mirror_failed(name, target, e);
            }
        }
    }

    /// Before a restore flattens backup `id`: a chain that lacks it
    /// fetches it from its mirror, if it has one.
    pub fn fetch_for_restore(&self, chain: &Chain, name: &str, id: Uuid) -> Result<(), String> {
        if chain.find(id).is_ok() {
            return Ok(());
        }
        let Some(target) = self.mirror_of(name) else {
            return Ok(());
        };
        self.pull(chain, name, &target)?;
        if let Some(disk) = disk_of(name) {
            self.refresh(chain, name, disk);
        }
        Ok(())
    }
}
