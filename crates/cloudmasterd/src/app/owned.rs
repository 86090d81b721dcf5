//! Instances a deployable owns: how the policy engine makes them (the
//! validation and placement of `instances::create`, with an owner, a
//! heartbeat policy and a rendered config), and the refusal of a user's
//! power action on one (the engine alone decides its restarts).

use super::{Error, Result};
use crate::scheduler;
use crate::state::App;
use crate::store::{now_ms, HostId, InstanceId, InstanceRow, NewConfig, NewInstance, Owner};
use cm_api::agent::HealthPolicy;
use cm_api::deploy::{AssemblySpec, Policy, Spread};
use cm_api::event::Event;
use cm_api::ids::DeployableId;
use cm_api::image::ImageKind;
use cm_api::instance::{PortForward, RestartPolicy};
use std::collections::HashSet;
use std::ops::RangeInclusive;

/// Host ports of deployables' forwards are taken from this range, one per
/// port per incarnation, so an old and a new incarnation can run side by
/// side on one host.
pub const DEPLOY_PORTS: RangeInclusive<u16> = 30000..=32767;

/// Memory of an assembly that names neither a flavor nor memory_mib.
const DEFAULT_MEMORY_MIB: u64 = 128;

/// What the engine wants an instance for.
pub struct OwnedSpec<'a> {
    pub deployable: DeployableId,
    /// The deployable's name (the instance is `{name}-{slot}-{incarnation}`).
    pub name: &'a str,
    pub assembly: &'a AssemblySpec,
    pub policy: &'a Policy,
    /// `web-2`.
    pub slot: String,
    /// The incarnation this instance will be.
    pub incarnation: u64,
    /// The rendered cm-guest config.
    pub config: String,
}

/// Refuse a user's change to an instance a deployable owns (409).
pub fn refuse_owned(row: &InstanceRow, deployable_name: &str) -> Result<()> {
    match &row.spec.owner {
        Some(o) => Err(Error::conflict(format!(
            "instance '{}' is owned by deployable {deployable_name} (slot {}); use cm deploy \
             (apply, delete {deployable_name}) to change it",
            row.name, o.slot
        ))),
        None => Ok(()),
    }
}

/// Validate and build the instance and its config record (nothing written).
pub async fn new_owned(app: &App, o: &OwnedSpec<'_>) -> Result<(NewInstance, NewConfig)> {
    let name = format!("{}-{}-{}", o.name, o.slot, o.incarnation);
    cm_api::validate::name("name", &name, false)?;
    let (image, flavor) =
        super::instances::image_and_flavor(app, &o.assembly.image, o.assembly.flavor.as_deref())
            .await?;
    let memory_mib = o
        .assembly
        .memory_mib
        .or_else(|| flavor.as_ref().map(|f| f.memory_mib))
        .unwrap_or(DEFAULT_MEMORY_MIB);
    let vcpus = o
        .assembly
        .vcpus
        .or_else(|| flavor.as_ref().map(|f| f.vcpus))
        .unwrap_or(1);
    let ports = host_ports(app, o.assembly).await?;
    let id = InstanceId::new_v4();
    let new = NewInstance {
        id,
        name,
        image_id: image.id.into(),
        flavor: flavor.as_ref().map(|f| f.name.clone()),
        memory_mib,
        vcpus,
        disk_gib: match image.kind {
            ImageKind::Disk => flavor.as_ref().map(|f| f.disk_gib).unwrap_or(0),
            ImageKind::Kernel => 0,
        },
        ports,
        // The engine restarts it, never the restart policy.
        restart_policy: RestartPolicy::No,
        accel: Default::default(),
        stop_timeout_secs: app.settings.stop_timeout_secs,
        dynamic_domain: None,
        owner: Some(Owner {
            deployable: o.deployable,
            slot: o.slot.clone(),
        }),
        volumes: Vec::new(),
        root: None,
        health: Some(HealthPolicy {
            heartbeat_interval_ms: o.policy.heartbeat_interval.as_millis(),
            heartbeat_timeout_ms: o.policy.heartbeat_timeout.as_millis(),
            boot_grace_ms: o.policy.boot_grace.as_millis(),
            services: o.assembly.services.iter().map(|s| s.name.clone()).collect(),
        }),
    };
    let secret = app.keys.record_secret(id.uuid(), 1);
    let config = NewConfig {
        uuid: id.uuid(),
        domain: crate::app::configs::DEFAULT_DOMAIN.to_string(),
        dynamic: false,
        instance_id: Some(id),
        body: o.config.clone().into_bytes(),
        secret: crate::bootcfg::Keyring::hash_for_store(&secret, 1),
        parameter_map: Default::default(),
        config_hosts: vec![app.settings.guest_addr.clone()],
    };
    Ok((new, config))
}

/// Free host ports from [`DEPLOY_PORTS`] for the assembly's guest ports.
/// A port taken meanwhile by another create fails that create's placement
/// (the scheduler's port filter), and the engine tries again next pass.
async fn host_ports(app: &App, asm: &AssemblySpec) -> Result<Vec<PortForward>> {
    if asm.ports.is_empty() {
        return Ok(vec![]);
    }
    let used: HashSet<u16> = app
        .db(|s| s.list_instances())
        .await?
        .iter()
        .filter(|i| !i.desired.deleted)
        .flat_map(|i| i.spec.ports.iter().map(|p| p.host))
        .collect();
    let mut free = DEPLOY_PORTS.filter(|p| !used.contains(p));
    asm.ports
        .iter()
        .map(|p| {
            free.next()
                .map(|host| PortForward {
                    guest: p.guest,
                    host,
                })
                .ok_or_else(|| Error::conflict("no free port left in the deployables' port range"))
        })
        .collect()
}

/// Where the scheduler may put an owned instance.
pub fn request(
    app: &App,
    new: &NewInstance,
    avoid: Option<HostId>,
    siblings: Vec<HostId>,
    spread: Spread,
) -> scheduler::Request {
    scheduler::Request {
        memory_mib: new.memory_mib,
        ports: new.ports.clone(),
        accel: new.accel,
        host: None,
        now: now_ms(),
        down_after: app.settings.host_down_after,
        avoid: avoid.into_iter().collect(),
        siblings,
        spread,
    }
}

/// After an engine transaction: tell the hosts, operation waiters and
/// event followers.
pub fn acted(app: &App, hosts: &[HostId], events: Vec<Event>) {
    for h in hosts {
        app.hub.notify(*h);
    }
    app.ops_changed();
    app.kick.notify_one();
    for ev in events {
        publish(app, ev);
    }
}

/// Debug routes only: make a deployable's DPE panic at its next pass
/// (the CPE restarts it; tests of the engine's supervision).
pub async fn poison(app: &App, name: String) -> Result<()> {
    let n = name.clone();
    match app.db(move |s| s.deployable_id(&n)).await? {
        Some(id) => {
            app.engines.poison(id);
            Ok(())
        }
        None => Err(Error::not_found("deployable", &name)),
    }
}

/// Tell event followers of an event already committed.
pub fn publish(app: &App, ev: Event) {
    tracing::info!(target: "events", "{} {}: {}", ev.kind, ev.target, ev.message);
    app.events_seq.send_replace(ev.seq);
    let _ = app.events.send(ev);
}
