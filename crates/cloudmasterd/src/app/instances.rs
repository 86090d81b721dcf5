//! Instances: create (validated, placed by the scheduler, recorded with
//! its config record and operation in one transaction), list, show, the
//! power actions (each returns an operation), delete, console.

use super::{Error, Result};
use crate::idempotency::Keyed;
use crate::scheduler;
use crate::state::App;
use crate::store::{
    new_operation, now_ms, DesiredChange, HostId, InstanceId, InstanceRow, NewConfig, NewInstance,
};
use crate::view;
use axum::http::StatusCode;
use cm_api::agent::{AgentReply, AgentRequest};
use cm_api::host::HostState;
use cm_api::image::ImageKind;
use cm_api::instance::{ConsoleLog, CreateInstance, Instance, InstanceAccepted, StopInstance};
use cm_api::operation::Operation;
use cm_api::validate;
use cm_api::words::{EventKind, OperationKind};
use std::collections::HashSet;
use std::time::Duration;
use uuid::Uuid;

/// The longest ACPI shutdown timeout accepted.
const MAX_STOP_TIMEOUT: u32 = 3600;
/// The most of a console log one request returns.
const MAX_CONSOLE: u64 = 4 * 1024 * 1024;

async fn host_up(app: &App, host_id: HostId) -> Result<bool> {
    let h = app.db(move |s| s.host_liveness(host_id)).await?;
    Ok(view::liveness_state(&h, now_ms(), app.settings.host_down_after) != HostState::Down)
}

pub async fn show(app: &App, name: String) -> Result<Instance> {
    // One trip to the store: the row and its host's liveness.
    let (row, host) = app
        .db(move |s| {
            let row = s.get_instance(&name)?;
            let host = s.host_liveness(row.host_id)?;
            Ok((row, host))
        })
        .await?;
    let up = view::liveness_state(&host, now_ms(), app.settings.host_down_after) != HostState::Down;
    Ok(view::instance(&row, up))
}

/// The image and flavor a create names, each refused with its own field.
pub(super) async fn image_and_flavor(
    app: &App,
    image: &str,
    flavor: Option<&str>,
) -> Result<(cm_api::image::Image, Option<cm_api::image::Flavor>)> {
    let image_name = image.to_string();
    let image = app
        .db(move |s| s.get_image(&image_name))
        .await
        .map_err(|e| e.field("image"))?;
    let flavor = match flavor {
        Some(f) => {
            let f = f.to_string();
            Some(
                app.db(move |s| s.get_flavor(&f))
                    .await
                    .map_err(|e| e.field("flavor"))?,
            )
        }
        None => None,
    };
    Ok((image, flavor))
}

/// Validate a create request into a `NewInstance` (nothing is written).
async fn validate_create(app: &App, req: &CreateInstance) -> Result<(NewInstance, Option<String>)> {
    validate::name("name", &req.name, false)?;
    // A root volume names the image and the host (docs/storage.md).
    let existing = super::roots::existing_root(app, req).await?;
    let mut req = req.clone();
    if let Some((_, image, host)) = &existing {
        req.image = image.clone();
        req.host = Some(host.clone());
    }
    let req = &req;
    let (image, flavor) = image_and_flavor(app, &req.image, req.flavor.as_deref()).await?;
    let memory_mib = req
        .memory_mib
        .or_else(|| flavor.as_ref().map(|f| f.memory_mib))
        .ok_or_else(|| Error::invalid("flavor", "give a flavor, or memory_mib (and vcpus)"))?;
    let vcpus = req
        .vcpus
        .or_else(|| flavor.as_ref().map(|f| f.vcpus))
        .unwrap_or(1);
    validate::memory_mib("memory_mib", memory_mib)?;
    validate::vcpus("vcpus", vcpus)?;
    let mut host_ports = HashSet::new();
    let mut guest_ports = HashSet::new();
    for p in &req.ports {
        if p.host == 0 || p.guest == 0 {
            return Err(Error::invalid("ports", "ports must be 1-65535"));
        }
        if !host_ports.insert(p.host) {
            return Err(Error::invalid(
                "ports",
                format!("host port {} is given twice", p.host),
            ));
        }
        if !guest_ports.insert(p.guest) {
            return Err(Error::invalid(
                "ports",
                format!("guest port {} is given twice", p.guest),
            ));
        }
    }
    if let Some(h) = &req.host {
        validate::name("host", h, false)?;
    }
    let stop_timeout_secs = req
        .stop_timeout_secs
        .unwrap_or(app.settings.stop_timeout_secs);
    if stop_timeout_secs > MAX_STOP_TIMEOUT {
        return Err(Error::invalid(
            "stop_timeout_secs",
            format!("stop_timeout_secs must be at most {MAX_STOP_TIMEOUT}"),
        ));
    }
    let health = req
        .heartbeat
        .as_ref()
        .map(|h| h.to_health("heartbeat"))
        .transpose()?;
    let (volumes, host) = super::volumes::for_new_instance(app, req).await?;
    let disk_gib = match image.kind {
        ImageKind::Disk => flavor.as_ref().map(|f| f.disk_gib).unwrap_or(0),
        ImageKind::Kernel => 0,
    };
    let root = super::roots::new_root(req, existing.map(|e| e.0), &image, disk_gib)?;
    let new = NewInstance {
        volumes,
        root,
        owner: None,
        health,
        id: InstanceId::new_v4(),
        name: req.name.clone(),
        image_id: image.id.into(),
        flavor: flavor.as_ref().map(|f| f.name.clone()),
        memory_mib,
        vcpus,
        disk_gib,
        ports: req.ports.clone(),
        restart_policy: req.restart_policy.unwrap_or_default(),
        accel: req.accel.unwrap_or_default(),
        stop_timeout_secs,
        dynamic_domain: req.dynamic_domain.clone(),
    };
    Ok((new, host))
}

/// The config record of a new instance (`--config`), under its own uuid.
async fn new_config(app: &App, req: &CreateInstance, id: InstanceId) -> Result<Option<NewConfig>> {
    if req.config.is_none() && req.config_base64.is_none() {
        if let Some(d) = &req.dynamic_domain {
            validate::name("dynamic_domain", d, true)?;
            let name = d.clone();
            if app.db(move |s| s.domain_secret(&name)).await?.is_none() {
                return Err(Error::not_found("domain", d).field("dynamic_domain"));
            }
        }
        return Ok(None);
    }
    if req.dynamic_domain.is_some() {
        return Err(Error::invalid("dynamic_domain", "a dynamic guest gets its config from assign_dynamic: give config or dynamic_domain, not both"));
    }
    let body = crate::app::configs::body_of(&req.config, &req.config_base64)?;
    let secret = app.keys.record_secret(id.uuid(), 1);
    Ok(Some(NewConfig {
        uuid: id.uuid(),
        domain: crate::app::configs::DEFAULT_DOMAIN.to_string(),
        dynamic: false,
        instance_id: Some(id),
        body,
        secret: crate::bootcfg::Keyring::hash_for_store(&secret, 1),
        parameter_map: Default::default(),
        config_hosts: vec![app.settings.guest_addr.clone()],
    }))
}

/// Validate, place and record a new instance; with a key, the answer is
/// recorded in the create's own transaction.
pub async fn create(
    app: &App,
    keyed: Option<Keyed>,
    req: CreateInstance,
) -> Result<InstanceAccepted> {
    let (new, host) = validate_create(app, &req).await?;
    let config = new_config(app, &req, new.id).await?;
    let sched = scheduler::Request {
        memory_mib: new.memory_mib,
        ports: new.ports.clone(),
        accel: new.accel,
        host,
        now: now_ms(),
        down_after: app.settings.host_down_after,
        avoid: vec![],
        siblings: vec![],
        spread: cm_api::deploy::Spread::None,
    };
    let op = new_operation(
        OperationKind::InstanceCreate,
        &new.name,
        new.id,
        "placed; waiting for the host",
    );
    let answer = keyed.map(|k| {
        let op = op.clone();
        k.answer(
            StatusCode::ACCEPTED,
            Box::new(move |row| {
                serde_json::to_vec(&InstanceAccepted {
                    instance: view::instance(row, true),
                    operation: op.clone(),
                })
            }),
        )
    });
    let (n, o) = (new.clone(), op.clone());
    let row = app
        .db(move |s| {
            s.create_instance(
                &n,
                config.as_ref(),
                &|caps| scheduler::place(&sched, caps),
                &o,
                answer.as_ref(),
                now_ms(),
            )
        })
        .await?;
    app.hub.notify(row.host_id);
    app.ops_changed();
    app.event(
        EventKind::InstanceCreated,
        &row.name,
        &format!(
            "placed on {}: {} MiB, {} vCPU, image {}",
            row.host_name, row.spec.memory_mib, row.spec.vcpus, row.spec.image_name
        ),
    )
    .await;
    Ok(InstanceAccepted {
        instance: view::instance(&row, true),
        operation: op,
    })
}

/// Apply a change and return its operation (with a key, recorded in the
/// change's own transaction).
async fn act(
    app: &App,
    name: String,
    (kind, event): (OperationKind, EventKind),
    keyed: Option<Keyed>,
    change: impl FnOnce(&InstanceRow) -> DesiredChange,
) -> Result<Operation> {
    let (row, owner) = app
        .db(move |s| {
            let row = s.get_instance(&name)?;
            let owner = match &row.spec.owner {
                Some(o) => s.deployable_name(o.deployable)?,
                None => None,
            };
            Ok((row, owner))
        })
        .await?;
    // The engine alone decides an owned instance's power (409).
    if let Some(dep) = owner {
        super::owned::refuse_owned(&row, &dep)?;
    }
    if row.desired.deleted && kind != OperationKind::InstanceDelete {
        return Err(Error::conflict(format!(
            "instance '{}' is being deleted",
            row.name
        )));
    }
    let change = change(&row);
    let op = new_operation(kind, &row.name, row.id, "requested");
    let o = op.clone();
    let answer = keyed.map(|k| {
        let op = op.clone();
        k.answer(
            StatusCode::ACCEPTED,
            Box::new(move |_| serde_json::to_vec(&op)),
        )
    });
    let id = row.id;
    let ch = app
        .db(move |s| s.change_instance_keyed(id, change, Some(&o), answer.as_ref(), now_ms()))
        .await?;
    if ch.effective {
        app.hub.notify(row.host_id);
        app.event(event, &row.name, "requested").await;
    }
    app.ops_changed();
    // The reconciler completes operations; an ineffective change (start of a
    // running instance) may already be complete.
    app.kick.notify_one();
    Ok(op)
}

pub async fn start(app: &App, keyed: Option<Keyed>, name: String) -> Result<Operation> {
    super::image_builds::refuse_start(app, &name).await?;
    let kinds = (OperationKind::InstanceStart, EventKind::InstanceStart);
    act(app, name, kinds, keyed, |_| DesiredChange::Start).await
}

/// Stop: ACPI shutdown within the timeout (the instance's own by default),
/// or at once with `force`.
pub async fn stop(
    app: &App,
    keyed: Option<Keyed>,
    name: String,
    req: StopInstance,
) -> Result<Operation> {
    if let Some(t) = req.timeout_secs {
        if t > MAX_STOP_TIMEOUT {
            return Err(Error::invalid(
                "timeout_secs",
                format!("timeout_secs must be at most {MAX_STOP_TIMEOUT}"),
            ));
        }
    }
    let kinds = (OperationKind::InstanceStop, EventKind::InstanceStop);
    act(app, name, kinds, keyed, move |row| DesiredChange::Stop {
        timeout_secs: if req.force {
            0
        } else {
            req.timeout_secs.unwrap_or(row.spec.stop_timeout_secs)
        },
    })
    .await
}

pub async fn reboot(app: &App, keyed: Option<Keyed>, name: String) -> Result<Operation> {
    let kinds = (OperationKind::InstanceReboot, EventKind::InstanceReboot);
    act(app, name, kinds, keyed, |_| DesiredChange::Reboot).await
}

pub async fn delete(app: &App, keyed: Option<Keyed>, name: String) -> Result<Operation> {
    let kinds = (OperationKind::InstanceDelete, EventKind::InstanceDelete);
    act(app, name, kinds, keyed, |_| DesiredChange::Delete).await
}

/// The tail of an instance's console log, asked of its host.
pub async fn console(app: &App, name: String, bytes: Option<u64>) -> Result<ConsoleLog> {
    let max_bytes = bytes.unwrap_or(65536);
    if max_bytes == 0 || max_bytes > MAX_CONSOLE {
        return Err(Error::invalid(
            "bytes",
            format!("bytes must be 1-{MAX_CONSOLE}"),
        ));
    }
    let row = app.db(move |s| s.get_instance(&name)).await?;
    if !host_up(app, row.host_id).await? {
        return Err(Error::HostUnavailable(
            format!("host {} is down", row.host_name).into(),
        ));
    }
    let req = AgentRequest::ConsoleTail {
        id: Uuid::new_v4(),
        instance: row.id.uuid(),
        max_bytes,
    };
    match app
        .hub
        .request(row.host_id, req, Duration::from_secs(10))
        .await?
    {
        AgentReply::Console(log) => Ok(log),
        AgentReply::Error { message } => Err(Error::conflict(message)),
    }
}
