//! What the API shows, derived from the store's rows: a host's state from
//! when it last reported, an instance's state from desired + observed.

use crate::store::{to_ts, HostLiveness, HostRow, InstanceId, InstanceRow, Millis, VolumeRow};
use cm_api::agent::{ObservedState, Power};
use cm_api::host::{Host, HostState};
use cm_api::instance::{Instance, InstanceState};
use cm_api::volume::{Volume, VolumeState};
use cm_api::words::{ConfigStatus, GuestLiveness, StopReason};
use std::time::Duration;

pub fn host_state(h: &HostRow, now: Millis, down_after: Duration) -> HostState {
    liveness_state(
        &HostLiveness {
            last_seen: h.last_seen,
            enabled: h.enabled,
        },
        now,
        down_after,
    )
}

pub fn liveness_state(h: &HostLiveness, now: Millis, down_after: Duration) -> HostState {
    let silent = match h.last_seen {
        Some(t) => now - t > cm_api::time::duration_millis(down_after),
        None => true,
    };
    if silent {
        HostState::Down
    } else if !h.enabled {
        HostState::Disabled
    } else {
        HostState::Ready
    }
}

pub fn host(h: &HostRow, now: Millis, down_after: Duration) -> Host {
    let total = h.facts.memory_total_mib;
    Host {
        id: h.id.uuid(),
        name: h.name.clone(),
        state: host_state(h, now, down_after),
        enabled: h.enabled,
        memory_total_mib: total,
        memory_reserved_mib: h.reserved_mib,
        memory_promised_free_mib: crate::scheduler::signed(total)
            - crate::scheduler::signed(h.reserved_mib)
            - crate::scheduler::signed(h.promised_mib),
        memory_real_free_mib: h.facts.memory_available_mib,
        vcpus: h.facts.vcpus,
        disk_free_mib: h.facts.disk_free_mib,
        volume_count: h.volume_count,
        volume_unallocated_mib: h.volume_unallocated_mib,
        instance_count: h.instance_count,
        accel: h.facts.accel,
        accel_note: h.facts.accel_note.clone(),
        qemu_version: h.facts.qemu_version.clone(),
        forward_addr: h.facts.forward_addr.clone(),
        last_seen: h.last_seen.map(to_ts),
        registered_at: to_ts(h.registered_at),
    }
}

/// The state a user sees, with its reason.
pub fn instance_state(i: &InstanceRow, host_up: bool) -> (InstanceState, Option<String>) {
    use ObservedState as O;
    if i.desired.deleted {
        return (InstanceState::Deleting, None);
    }
    let obs = i.observed.state;
    if !host_up {
        let last = obs.map(|o| o.as_str()).unwrap_or("pending");
        return (
            InstanceState::Unknown,
            Some(format!(
                "host {} is down; last reported {last}",
                i.host_name
            )),
        );
    }
    let start_pending =
        i.desired.power == Power::Running && i.desired.boot_gen > i.observed.boot_gen;
    let stopped_reason = || {
        let r = i.observed.reason.as_ref().map(StopReason::to_string);
        match (i.restart.next_at, r) {
            (Some(_), Some(r)) => Some(format!("{r}; restart scheduled")),
            (_, r) => r,
        }
    };
    match obs {
        None => (InstanceState::Pending, None),
        Some(O::Preparing | O::Starting) => (InstanceState::Starting, None),
        Some(O::Running) if i.desired.power == Power::Stopped => (InstanceState::Stopping, None),
        Some(O::Running) => (InstanceState::Running, None),
        Some(O::Stopping) => (InstanceState::Stopping, None),
        Some(O::Stopped) if start_pending => (InstanceState::Starting, None),
        Some(O::Stopped) => (InstanceState::Stopped, stopped_reason()),
        Some(O::Error) if start_pending => (InstanceState::Starting, None),
        Some(O::Error) => (InstanceState::Error, stopped_reason()),
    }
}

pub fn instance(i: &InstanceRow, host_up: bool) -> Instance {
    let (state, why) = instance_state(i, host_up);
    let running = matches!(
        state,
        InstanceState::Running | InstanceState::Stopping | InstanceState::Starting
    );
    Instance {
        id: i.id.uuid(),
        name: i.name.clone(),
        state,
        reason: why,
        image: i.spec.image_name.clone(),
        flavor: i.spec.flavor.clone(),
        memory_mib: i.spec.memory_mib,
        vcpus: i.spec.vcpus,
        host: Some(i.host_name.clone()),
        ports: i.spec.ports.clone(),
        restart_policy: i.spec.restart_policy,
        accel: i.spec.accel,
        accel_used: i.observed.accel,
        stop_timeout_secs: i.spec.stop_timeout_secs,
        restart_count: i.restart.count,
        next_restart_at: i.restart.next_at.map(to_ts),
        pid: if running { i.observed.pid } else { None },
        guest: guest_status(
            i.guest.seq,
            i.guest.seen_at,
            &i.guest.services,
            "virtio-serial",
            crate::store::now_ms(),
            i.spec.health.as_ref().map(|h| (h, i.guest.liveness)),
        ),
        heartbeat: i
            .spec
            .health
            .as_ref()
            .map(cm_api::instance::HeartbeatPolicy::from_health),
        config_status: i
            .config
            .as_ref()
            .map(|c| ConfigStatus::from(c.status.clone())),
        config_reason: i.config.as_ref().and_then(|c| c.reason.clone()),
        dynamic_domain: i.spec.dynamic_domain.clone(),
        volumes: i.volumes.clone(),
        created_at: to_ts(i.created_at),
        updated_at: to_ts(i.updated_at),
        root_volume: i.root_volume.clone(),
    }
}

/// A volume's state, derived from intent and its host's last report
/// (docs/storage.md, "What a volume's state means").
pub fn volume_state(v: &VolumeRow) -> VolumeState {
    if v.deleted {
        return VolumeState::Deleting;
    }
    if v.facts.error.is_some() {
        return VolumeState::Error;
    }
    let Some(size) = v.facts.size_bytes else {
        return VolumeState::Creating;
    };
    let attached = |i: InstanceId| {
        v.held_by(i) && v.facts.attach_state == Some(cm_api::agent::AttachmentState::Attached)
    };
    if v.root_of.is_some() {
        // The host boots its instance from it once the file exists.
        return if size < v.size_bytes {
            VolumeState::Resizing
        } else {
            VolumeState::Attached
        };
    }
    match (v.desired_instance(), &v.facts.holder) {
        (Some(i), _) if !attached(i) => VolumeState::Attaching,
        (None, Some(_)) => VolumeState::Detaching,
        _ if size < v.size_bytes => VolumeState::Resizing,
        (Some(_), _) => VolumeState::Attached,
        (None, None) => VolumeState::Available,
    }
}

pub fn volume(v: &VolumeRow) -> Volume {
    Volume {
        id: v.id.uuid(),
        name: v.name.clone(),
        state: volume_state(v),
        host: v.host_name.clone(),
        size_bytes: v.size_bytes,
        allocated_bytes: v.facts.allocated_bytes,
        attached_to: v
            .user()
            .or(v.facts.holder.as_ref())
            .map(|(_, name)| name.clone()),
        serial: cm_api::volume::disk_serial(v.id.uuid()),
        error: v
            .facts
            .error
            .clone()
            .or_else(|| v.facts.attach_error.clone()),
        created_at: to_ts(v.created_at),
        updated_at: to_ts(v.updated_at),
        root_of: v.root_of.as_ref().map(|(_, name)| name.clone()),
        image: v.image.as_ref().map(|(_, name)| name.clone()),
        moving_to: None,
    }
}

/// A guest is `up` while its heartbeats arrive at least this often
/// (without a heartbeat policy of its own).
const GUEST_UP_MS: Millis = 10_000;

/// What the master says of a guest's heartbeats. With a heartbeat policy
/// (`judge`: the policy and its host's word), the policy's timeout replaces
/// `GUEST_UP_MS`, and the host's word (`suspect`, `silent`) is shown unless
/// the master's own clock finds the guest worse off (a host that stopped
/// reporting cannot say its guest went silent).
pub fn guest_status(
    seq: Option<u64>,
    seen_at: Option<Millis>,
    services: &[cm_api::boot::ServiceState],
    via: &str,
    now: Millis,
    judge: Option<(&cm_api::agent::HealthPolicy, Option<GuestLiveness>)>,
) -> cm_api::boot::GuestStatus {
    let up_ms = judge.map_or(GUEST_UP_MS, |(h, _)| {
        Millis::try_from(h.heartbeat_timeout_ms).unwrap_or(Millis::MAX)
    });
    let liveness = judge.and_then(|(_, l)| l);
    let silent = |t: Millis| format!("silent for {}s", (now - t) / 1000);
    let state = match (seen_at, liveness) {
        (Some(t), _) if now - t > up_ms => silent(t),
        (Some(t), Some(GuestLiveness::Silent)) => silent(t),
        (None, Some(GuestLiveness::Silent)) => "silent (no heartbeat since boot)".to_string(),
        (Some(_), Some(GuestLiveness::Suspect)) => "suspect".to_string(),
        (None, _) => "no agent".to_string(),
        (Some(_), _) => "up".to_string(),
    };
    cm_api::boot::GuestStatus {
        state,
        seq,
        last_heartbeat: seen_at.map(to_ts),
        services: services.to_vec(),
        via: seen_at.map(|_| via.to_string()),
        liveness,
    }
}

pub fn config(
    c: &crate::store::ConfigRow,
    instance: Option<String>,
    assigned_to: Option<String>,
    now: Millis,
) -> cm_api::boot::Config {
    cm_api::boot::Config {
        uuid: c.uuid,
        domain: c.domain.clone(),
        dynamic: c.dynamic,
        assigned: c.assigned,
        instance,
        assigned_to,
        my_conf_addr: c.my_conf_addr.clone(),
        status: ConfigStatus::from(c.status.as_str()),
        reason: c.reason.clone(),
        parameter_map: c.parameter_map.clone(),
        config_hosts: c.config_hosts.clone(),
        config_version: c.version,
        config_size: c.body_size,
        config_sha256: c.body_sha256.clone(),
        trust_key_set: c.trust_set,
        guest: c
            .hb_at
            .map(|_| guest_status(c.hb_seq, c.hb_at, &c.hb_services, "http", now, None)),
        created_at: to_ts(c.created_at),
        updated_at: to_ts(c.updated_at),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cm_api::agent::HealthPolicy;

    #[test]
    fn a_heartbeat_policy_sets_the_guests_timeout_and_the_hosts_word_shows() {
        let now: Millis = 1_000_000;
        let h = HealthPolicy {
            heartbeat_interval_ms: 1000,
            heartbeat_timeout_ms: 3000,
            boot_grace_ms: 120_000,
            services: vec![],
        };
        let state = |seen: Option<Millis>, judge| {
            guest_status(Some(1), seen, &[], "virtio-serial", now, judge).state
        };
        // Without a policy, 5 s without a beat is still up; with one of 3 s
        // it is silent.
        assert_eq!(state(Some(now - 5000), None), "up");
        assert_eq!(state(Some(now - 5000), Some((&h, None))), "silent for 5s");
        // The host's word, when the master's clock finds nothing worse.
        let up = Some(GuestLiveness::Up);
        assert_eq!(state(Some(now - 500), Some((&h, up))), "up");
        let suspect = Some(GuestLiveness::Suspect);
        assert_eq!(state(Some(now - 1600), Some((&h, suspect))), "suspect");
        let silent = Some(GuestLiveness::Silent);
        assert_eq!(state(Some(now - 2000), Some((&h, silent))), "silent for 2s");
        assert_eq!(
            state(None, Some((&h, silent))),
            "silent (no heartbeat since boot)"
        );
        // A host that stopped reporting said "up" last: the clock wins.
        assert_eq!(state(Some(now - 9000), Some((&h, up))), "silent for 9s");
        let g = guest_status(None, None, &[], "virtio-serial", now, Some((&h, suspect)));
        assert_eq!(g.liveness, suspect);
    }
}
