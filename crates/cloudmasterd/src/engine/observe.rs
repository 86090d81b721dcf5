//! What a slot's instance looks like now, from store rows alone: the
//! ladder's input. Pure: the host's judgement of heartbeats
//! (`GuestState.liveness`), the VM's observed state and the host's
//! liveness become one [`Health`].

use crate::store::{HostId, HostRow, InstanceRow, Millis};
use cm_api::agent::ObservedState as O;
use cm_api::host::HostState;
use cm_api::words::{GuestLiveness, KnownServiceStatus as K, ServiceStatus};
use std::time::Duration;

/// A slot's instance, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// No instance (never made, deleted, or gone from the store).
    Missing,
    /// Started, not yet running with heartbeats and services.
    Booting,
    /// Running, heartbeats on time, every expected service running.
    Healthy,
    /// Running and beating, but these services failed or fail their check.
    /// `restart`: those cm-guest does not restart by itself (running with
    /// a failing check, or stopped): the engine restarts them (rung 1).
    Degraded {
        services: Vec<String>,
        restart: Vec<String>,
    },
    /// A heartbeat is late.
    Suspect,
    /// No heartbeat for the timeout.
    Silent,
    /// The VM stopped or errored at its current boot, on a live host (a
    /// QEMU exit: first-hand news).
    Down { why: String },
    /// Its host stopped reporting at `since`.
    Unreachable { host: HostId, since: Millis },
}

/// Classify `row` (the slot's current instance) on `host`.
pub fn health(
    row: Option<&InstanceRow>,
    host: Option<&HostRow>,
    expected_services: &[String],
    now: Millis,
    down_after: Duration,
) -> Health {
    let Some(row) = row.filter(|r| !r.desired.deleted) else {
        return Health::Missing;
    };
    let host_down = match host {
        Some(h) => crate::view::host_state(h, now, down_after) == HostState::Down,
        None => true,
    };
    if host_down {
        let since = host
            .and_then(|h| h.last_seen)
            .map(|t| t + cm_api::time::duration_millis(down_after))
            .unwrap_or(now);
        return Health::Unreachable {
            host: row.host_id,
            since,
        };
    }
    let obs = &row.observed;
    // A start or a reset the host has not done yet.
    if row.desired.boot_gen > obs.boot_gen || row.desired.reboot_gen > obs.reboot_gen {
        return Health::Booting;
    }
    match obs.state {
        None | Some(O::Preparing | O::Starting) => Health::Booting,
        Some(O::Stopped | O::Error | O::Stopping) => Health::Down {
            why: match (&obs.reason, obs.state) {
                (Some(r), _) => r.to_string(),
                (None, Some(s)) => s.as_str().to_string(),
                (None, None) => "stopped".into(),
            },
        },
        Some(O::Running) => match row.guest.liveness {
            Some(GuestLiveness::Silent) => Health::Silent,
            Some(GuestLiveness::Suspect) => Health::Suspect,
            None if row.spec.health.is_some() => Health::Booting,
            Some(GuestLiveness::Up) | None => services(row, expected_services),
        },
    }
}

fn services(row: &InstanceRow, expected: &[String]) -> Health {
    let named = |pick: fn(&ServiceStatus) -> bool| -> Vec<String> {
        row.guest
            .services
            .iter()
            .filter(|s| pick(&s.state))
            .map(|s| s.name.clone())
            .collect()
    };
    let bad = named(|s| {
        matches!(
            s,
            ServiceStatus::Known(K::Failed | K::Unhealthy | K::Stopped)
        )
    });
    if !bad.is_empty() {
        let restart = named(|s| matches!(s, ServiceStatus::Known(K::Unhealthy | K::Stopped)));
        return Health::Degraded {
            services: bad,
            restart,
        };
    }
    let running = |name: &String| {
        row.guest
            .services
            .iter()
            .any(|s| &s.name == name && s.state == ServiceStatus::Known(K::Running))
    };
    if expected.iter().all(running) {
        Health::Healthy
    } else {
        Health::Booting
    }
}
