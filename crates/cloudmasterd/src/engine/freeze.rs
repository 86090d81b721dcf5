//! The partition rule, over a whole deployable: when many of its slots go
//! silent or unreachable together on several hosts, the master is the
//! likelier party cut off, so destructive actions are held (frozen). A
//! QEMU exit reported by a live host is still acted on.

use super::ladder::SlotView;
use super::observe::Health;
use crate::store::{HostId, Millis};
use cm_api::words::SlotState;
use std::collections::BTreeSet;

/// The cloud's hosts, as the rule needs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hosts {
    pub enabled: usize,
    pub enabled_down: usize,
}

/// When a silent or unreachable slot went bad.
fn bad_since(v: &SlotView, now: Millis) -> Option<Millis> {
    match &v.health {
        Health::Unreachable { since, .. } => Some(*since),
        Health::Silent => Some(match v.slot.state {
            SlotState::Down | SlotState::Suspect | SlotState::Acting => v.slot.state_since,
            _ => now,
        }),
        _ => None,
    }
}

/// Why the deployable should be frozen now, or None.
///
/// Trigger 1: the slots that went silent or unreachable within one
/// heartbeat timeout of the latest of them are at least half of its slots
/// (at least 2 slots), and sit on at least 2 hosts (one host is one
/// failure domain: host death, not a partition). Trigger 2: a strict
/// majority of the cloud's enabled hosts is down while one of its slots
/// is bad.
pub fn freeze_reason(
    views: &[SlotView],
    hosts: Hosts,
    timeout: Millis,
    now: Millis,
) -> Option<String> {
    let bad: Vec<(&SlotView, Millis)> = views
        .iter()
        .filter_map(|v| bad_since(v, now).map(|t| (v, t)))
        .collect();
    let latest = bad.iter().map(|(_, t)| *t).max()?;
    let together: Vec<&SlotView> = bad
        .iter()
        .filter(|(_, t)| latest - *t <= timeout)
        .map(|(v, _)| *v)
        .collect();
    let on: BTreeSet<HostId> = together.iter().filter_map(|v| v.host).collect();
    let n = views.len();
    if n >= 2 && together.len() * 2 >= n && on.len() >= 2 {
        let names: Vec<String> = together
            .iter()
            .map(|v| {
                format!(
                    "{} ({})",
                    v.slot.name(),
                    v.host_name.as_deref().unwrap_or("?")
                )
            })
            .collect();
        return Some(format!(
            "{} of {n} slots silent or unreachable together on {} hosts: {}",
            together.len(),
            on.len(),
            names.join(", ")
        ));
    }
    if hosts.enabled > 0 && hosts.enabled_down * 2 > hosts.enabled {
        return Some(format!(
            "{} of {} hosts down at once: the master may be the one cut off",
            hosts.enabled_down, hosts.enabled
        ));
    }
    None
}
