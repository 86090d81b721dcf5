//! Words a guest agent reports: the state of each of its services.

use serde::{Deserialize, Serialize};
use std::fmt;

words! {
    /// The service states cm-guest reports (docs/boot-protocol.md).
    pub enum KnownServiceStatus {
        /// Launched; its health check has not passed yet.
        Starting = "starting",
        /// Up, and its check (if any) passes.
        Running = "running",
        /// Up, but its check fails.
        Unhealthy = "unhealthy",
        /// Exited; restarted after a back-off.
        Failed = "failed",
        /// Stopped because its config no longer has it.
        Stopped = "stopped",
        /// The agent could not read its status.
        Unknown = "unknown",
    }
}

open_words! {
    /// A service's state in a heartbeat. A guest is outside the cloud's
    /// control, so a word of its own (a newer agent's) is kept as it came.
    pub enum ServiceStatus {
        Known(KnownServiceStatus),
        /// A word the guest reported that is none of the known ones.
        Reported(String),
    }
    schema = ", or a word the guest reported";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_states_are_the_words_guests_have_always_sent() {
        let want = [
            (KnownServiceStatus::Starting, "starting"),
            (KnownServiceStatus::Running, "running"),
            (KnownServiceStatus::Unhealthy, "unhealthy"),
            (KnownServiceStatus::Failed, "failed"),
            (KnownServiceStatus::Stopped, "stopped"),
            (KnownServiceStatus::Unknown, "unknown"),
        ];
        assert_eq!(want.len(), KnownServiceStatus::ALL.len());
        for (k, word) in want {
            let j = serde_json::to_string(&ServiceStatus::from(k)).unwrap();
            assert_eq!(j, format!("\"{word}\""));
            assert_eq!(serde_json::from_str::<ServiceStatus>(&j).unwrap(), k);
        }
        let s: ServiceStatus = serde_json::from_str("\"degraded\"").unwrap();
        assert_eq!(s, ServiceStatus::Reported("degraded".into()));
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"degraded\"");
    }
}
