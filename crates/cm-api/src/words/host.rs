//! Words a host sends about its VMs: why one stopped, what it runs with.

use serde::{Deserialize, Serialize};
use std::fmt;

words! {
    /// The stop reasons a host sets itself (`ObservedInstance::reason`).
    /// The restart policy reads these.
    pub enum KnownStopReason {
        /// QEMU exited without being asked to and without a guest poweroff.
        Crashed = "crashed",
        /// The guest powered itself off.
        GuestPoweroff = "guest poweroff",
        /// Stopped because the master asked (ACPI shutdown honoured).
        Stopped = "stopped",
        /// Stopped because the master asked, forced off (at once, or because
        /// the guest ignored the ACPI shutdown until the timeout).
        Forced = "stopped (forced off)",
        /// Never started yet.
        New = "not started",
        /// Stopped by its host: the master's desired state does not have it.
        Orphaned = "stopped: not in the master's desired state (an orphan)",
        /// Stopped by its host: the master refused the host's token.
        HostRefused = "stopped: the master refused this host's token",
    }
}

open_words! {
    /// Why a VM is not running, as its host saw it: a known reason, or the
    /// text of an error (state `error`: the VM could not be prepared or
    /// launched).
    pub enum StopReason {
        Known(KnownStopReason),
        /// Free text: an error, or a reason of a newer host.
        Text(String),
    }
    schema = ", or the text of an error";
}

words! {
    /// What QEMU runs with on a host: what `auto` resolved to there, or what
    /// an instance asked for (`HostFacts::accel`, `ObservedInstance::accel`).
    pub enum ResolvedAccel {
        Kvm = "kvm",
        Tcg = "tcg",
    }
}

impl Default for ResolvedAccel {
    /// TCG works everywhere; KVM only where a probe proved it.
    fn default() -> Self {
        ResolvedAccel::Tcg
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_reasons_are_the_words_hosts_have_always_sent() {
        let want = [
            (KnownStopReason::Crashed, "crashed"),
            (KnownStopReason::GuestPoweroff, "guest poweroff"),
            (KnownStopReason::Stopped, "stopped"),
            (KnownStopReason::Forced, "stopped (forced off)"),
            (KnownStopReason::New, "not started"),
            (
                KnownStopReason::Orphaned,
                "stopped: not in the master's desired state (an orphan)",
            ),
            (
                KnownStopReason::HostRefused,
                "stopped: the master refused this host's token",
            ),
        ];
        assert_eq!(want.len(), KnownStopReason::ALL.len());
        for (k, word) in want {
            let j = serde_json::to_string(&StopReason::from(k)).unwrap();
            assert_eq!(j, serde_json::to_string(word).unwrap());
            assert_eq!(serde_json::from_str::<StopReason>(&j).unwrap(), k);
            assert_eq!(serde_json::to_string(&k).unwrap(), j);
        }
        let e: StopReason = serde_json::from_str("\"qemu failed: no such file\"").unwrap();
        assert_eq!(e, StopReason::Text("qemu failed: no such file".into()));
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            "\"qemu failed: no such file\""
        );
    }

    #[test]
    fn accels_are_kvm_and_tcg() {
        let want = [(ResolvedAccel::Kvm, "kvm"), (ResolvedAccel::Tcg, "tcg")];
        assert_eq!(want.len(), ResolvedAccel::ALL.len());
        for (a, word) in want {
            let j = serde_json::to_string(&a).unwrap();
            assert_eq!(j, format!("\"{word}\""));
            assert_eq!(serde_json::from_str::<ResolvedAccel>(&j).unwrap(), a);
            assert_eq!(ResolvedAccel::parse(word), Some(a));
        }
        let e = serde_json::from_str::<ResolvedAccel>("\"auto\"").unwrap_err();
        assert!(e.to_string().contains("unknown variant `auto`"), "{e}");
    }
}
