//! What the agent's loops (agent.rs) drive: the VMs of a real host
//! (`vm::Vms`, QEMU) or of a simulated one (`sim`, no QEMU). The agent talks
//! to the master the same way whichever it drives.

use crate::vm::Vms;
use cm_api::agent::{
    DesiredState, ObservedBackup, ObservedExport, ObservedInstance, ObservedVolume, OrphanVm,
};
use cm_api::host::HostFacts;
use cm_api::instance::ConsoleLog;
use cm_api::words::KnownStopReason;
use std::time::Duration;
use tokio::sync::Notify;
use uuid::Uuid;

/// The VMs of one host, as the agent sees them.
pub trait Runtime: Send + Sync + 'static {
    /// Hand each VM its part of the master's desired state.
    fn apply(&self, desired: &DesiredState);
    /// Stop every VM and keep its files (the master refused this host).
    fn orphan_all(&self, why: KnownStopReason);
    /// The end of a VM's serial log (may block: called off the runtime).
    fn console_tail(&self, id: Uuid, max_bytes: u64) -> Result<ConsoleLog, String>;
    /// What a report carries: the desired state's VMs, and the orphans.
    fn report(&self) -> (Vec<ObservedInstance>, Vec<OrphanVm>);
    /// Every volume file the host has (`HostReport.volumes`).
    fn volumes(&self) -> Vec<ObservedVolume> {
        Vec::new()
    }
    /// The exports that failed (`HostReport.exports`).
    fn exports(&self) -> Vec<ObservedExport> {
        Vec::new()
    }
    /// Every backup of the host's chains (`HostReport.backups`).
    fn backups(&self) -> Vec<ObservedBackup> {
        Vec::new()
    }
    /// Notified when an observed state changes.
    fn changed(&self) -> &Notify;
    /// Whether a report now would be complete: every VM found at the
    /// agent's start has said its state (a VM missing from a report is
    /// one the host no longer has, to the master).
    fn settled(&self) -> bool {
        true
    }
    /// How a report went (counted by the simulator; nothing on a real host).
    fn reported(&self, _ok: bool, _took: Duration) {}
    /// Whether its agent is held silent: no reports, no long-polls (a
    /// simulated host told `mute HOST`; never a real host).
    fn muted(&self) -> bool {
        false
    }
}

/// What a host measures about itself for each report.
pub trait Facts: Send + Sync + 'static {
    fn gather(&self) -> HostFacts;
}

impl Runtime for Vms {
    fn apply(&self, desired: &DesiredState) {
        Vms::apply(self, desired)
    }

    fn orphan_all(&self, why: KnownStopReason) {
        Vms::orphan_all(self, why)
    }

    fn console_tail(&self, id: Uuid, max_bytes: u64) -> Result<ConsoleLog, String> {
        Vms::console_tail(self, id, max_bytes)
    }

    fn report(&self) -> (Vec<ObservedInstance>, Vec<OrphanVm>) {
        self.ctx.report()
    }

    fn volumes(&self) -> Vec<ObservedVolume> {
        self.ctx.volumes.report()
    }

    fn exports(&self) -> Vec<ObservedExport> {
        self.ctx.volumes.export_errors()
    }

    fn backups(&self) -> Vec<ObservedBackup> {
        self.ctx.volumes.chains.report()
    }

    fn changed(&self) -> &Notify {
        &self.ctx.changed
    }

    fn settled(&self) -> bool {
        self.ctx.settled()
    }
}
