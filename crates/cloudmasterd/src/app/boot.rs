//! What guests ask of the master with their record's uuid and secret
//! (docs/boot-protocol.md): the config fetch and its long-poll,
//! `update_cache`, `assign_dynamic`, heartbeats and the NoCloud files. An
//! unknown uuid and a wrong secret get the same refusal after the same work.

use super::configs::check_parameter_map;
use super::guest_trust::{check_trust, nocloud_access, nocloud_window};
use super::{Error, Result};
use crate::bootcfg::{same, Keyring};
use crate::state::App;
use crate::store::{now_ms, CacheUpdate, StoreError};
use cm_api::answer::Ack;
use cm_api::boot::{AssignDynamic, Assigned, Heartbeat, UpdateCache};
use cm_api::words::{ConfigStatus, EventKind};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use uuid::Uuid;

/// HTTP Basic's user and password, as the guest sent them (empty if none).
pub type Credentials = (String, String);

fn denied() -> Error {
    Error::Forbidden("unknown config or wrong secret".into())
}

/// Check the credentials against record `path_uuid`.
async fn authorize(app: &App, (user, secret): Credentials, path_uuid: &str) -> Result<Uuid> {
    let uuid = Uuid::parse_str(path_uuid).ok();
    let stored = match uuid {
        Some(u) => app.db(move |s| s.config_secret(u)).await?,
        None => None,
    };
    // Always one lookup and one hash, whether the record exists or not.
    let ok = app.keys.verify(stored.as_ref(), &secret) && user == path_uuid;
    match (ok, uuid) {
        (true, Some(u)) => Ok(u),
        _ => Err(denied()),
    }
}

/// A config fetch's answer.
pub enum Fetched {
    /// The body at `version`.
    Body { version: u64, body: Vec<u8> },
    /// Nothing newer than `after` within the wait.
    NotModified { version: u64 },
}

/// The secret check and the first read of the body in one store call.
async fn authorized_body(
    app: &Arc<App>,
    (user, secret): Credentials,
    path_uuid: &str,
) -> Result<(Uuid, (u64, Vec<u8>, String))> {
    let Some(uuid) = Uuid::parse_str(path_uuid).ok() else {
        // The same hash as for a record, then the same refusal.
        app.keys.verify(None, &secret);
        return Err(denied());
    };
    let keys = app.clone();
    let user_ok = user == path_uuid;
    let found = app
        .db(move |s| {
            // Always one hash, whether the record exists or not.
            s.config_fetch(uuid, &mut |stored| {
                keys.keys.verify(stored, &secret) && user_ok
            })
        })
        .await?;
    found.map(|b| (uuid, b)).ok_or_else(denied)
}

/// The config body; with `after`, a long-poll for a newer version.
pub async fn fetch(
    app: &Arc<App>,
    who: Credentials,
    path_uuid: &str,
    after: Option<u64>,
    wait: Duration,
) -> Result<Fetched> {
    // Watched before the first read: a change after it wakes the wait.
    let mut changed = app.configs_changed.subscribe();
    changed.borrow_and_update();
    let (uuid, mut current) = authorized_body(app, who, path_uuid).await?;
    let deadline = Instant::now() + wait;
    loop {
        let (version, body, status) = current;
        if after.map(|a| version > a).unwrap_or(true) {
            if ConfigStatus::from(status).is_unfetched() {
                app.db(move |s| s.mark_fetched(uuid, now_ms())).await?;
            }
            return Ok(Fetched::Body { version, body });
        }
        if Instant::now() >= deadline {
            return Ok(Fetched::NotModified { version });
        }
        let _ = tokio::time::timeout_at(deadline, changed.changed()).await;
        changed.borrow_and_update();
        current = app.db(move |s| s.config_body(uuid)).await?;
    }
}

fn check_update(req: &UpdateCache) -> Result<()> {
    let word = req.status.as_str();
    if word.is_empty() || word.len() > 64 {
        return Err(Error::invalid("status", "status is 1-64 characters"));
    }
    if req.trust_key.len() < 16 || req.trust_key.len() > 256 {
        return Err(Error::invalid(
            "trust_key",
            "trust_key is 16-256 characters",
        ));
    }
    if req
        .my_conf_addr
        .as_ref()
        .map(|a| a.len() > 256)
        .unwrap_or(false)
    {
        return Err(Error::invalid(
            "my_conf_addr",
            "my_conf_addr is at most 256 characters",
        ));
    }
    if req.reason.as_ref().map(|r| r.len() > 4096).unwrap_or(false) {
        return Err(Error::invalid(
            "reason",
            "reason is at most 4096 characters",
        ));
    }
    check_parameter_map(&req.parameter_map)
}

/// The seed's `update_cache`: the guest's address, parameters and status.
/// The first update sets the trust key; every later one must carry it.
pub async fn update_cache(
    app: &App,
    who: Credentials,
    path_uuid: &str,
    req: UpdateCache,
) -> Result<Ack> {
    let uuid = authorize(app, who, path_uuid).await?;
    check_update(&req)?;
    check_trust(app, uuid, &req.trust_key, req.rekey.as_deref()).await?;
    let upd = CacheUpdate {
        my_conf_addr: req.my_conf_addr.clone(),
        parameter_map: req.parameter_map.clone(),
        status: req.status.as_str().to_string(),
        reason: req.reason.clone(),
    };
    let row = app
        .db(move |s| s.update_cache(uuid, &upd, now_ms()))
        .await?;
    let target = match row.instance_id {
        Some(i) => app
            .db(move |s| s.get_instance(&i.to_string()))
            .await
            .map(|r| r.name)
            .unwrap_or_else(|_| uuid.to_string()),
        None => uuid.to_string(),
    };
    let msg = match &req.reason {
        Some(r) => format!(
            "{} (version {}): {}",
            req.status,
            req.config_version,
            cm_api::validate::printable(r)
        ),
        None => format!("{} (version {})", req.status, req.config_version),
    };
    app.event(EventKind::ConfigStatus, &target, &msg).await;
    Ok(Ack {})
}

/// Whether `who` may take a record of `req.domain`: the domain's secret, or
/// the credential of the instance's current launch. The instance, if any.
async fn may_assign(
    app: &App,
    (user, secret): Credentials,
    req: &AssignDynamic,
) -> Result<Option<crate::store::InstanceRow>> {
    let d = req.domain.clone();
    let holder = req.instance;
    let (stored, inst) = app
        .db(move |s| {
            let inst = match holder {
                Some(i) => match s.get_instance(&i.to_string()) {
                    Ok(r) => Some(r),
                    Err(StoreError::NotFound { .. }) => None,
                    Err(e) => return Err(e),
                },
                None => None,
            };
            Ok((s.domain_secret(&d)?, inst))
        })
        .await?;
    let ok = match holder {
        None => app.keys.verify(stored.as_ref(), &secret),
        Some(i) => {
            // Derived again: the same work whether the instance exists or not.
            let gen = inst.as_ref().map(|r| r.desired.boot_gen).unwrap_or(0);
            let right = same(&secret, &app.keys.instance_secret(&req.domain, i, gen));
            right
                && inst.as_ref().is_some_and(|r| {
                    !r.desired.deleted
                        && r.spec.dynamic_domain.as_deref() == Some(req.domain.as_str())
                })
        }
    };
    if !(ok && user == req.domain) {
        return Err(Error::Forbidden("unknown domain or wrong secret".into()));
    }
    Ok(inst)
}

/// The seed's `assign_dynamic`: first come, first served. With the
/// domain's secret any guest may ask (the seed's federated case); with an
/// instance's own credential (`@DOMAIN/INSTANCE`, derived for its current
/// launch) the record is bound to that instance, which gets it again at
/// every boot until it is deleted.
pub async fn assign(app: &Arc<App>, who: Credentials, req: AssignDynamic) -> Result<Assigned> {
    let inst = may_assign(app, who, &req).await?;
    let d = req.domain.clone();
    let holder = req.instance;
    let keys = app.clone();
    let fresh = move |u: Uuid, epoch: u64| {
        Keyring::hash_for_store(&keys.keys.record_secret(u, epoch), epoch)
    };
    let Some(row) = app
        .db(move |s| s.assign_dynamic(&d, holder.map(Into::into), now_ms(), &fresh))
        .await?
    else {
        return Err(Error::NoneLeft(
            format!(
                "none left: every dynamic record of domain '{}' is taken",
                req.domain
            )
            .into(),
        )
        .field("domain"));
    };
    let to = match &inst {
        Some(i) => format!("instance {}", i.name),
        None => "a guest with the domain's secret".to_string(),
    };
    app.event(
        EventKind::ConfigAssigned,
        &row.uuid.to_string(),
        &format!("handed out from domain {} to {to}", req.domain),
    )
    .await;
    Ok(Assigned {
        uuid: row.uuid,
        secret: app.keys.record_secret(row.uuid, row.secret_epoch),
        config_version: row.version,
    })
}

/// Heartbeats of guests outside our hosts (federated), over HTTP.
pub async fn heartbeat(app: &App, who: Credentials, path_uuid: &str, hb: Heartbeat) -> Result<Ack> {
    let uuid = authorize(app, who, path_uuid).await?;
    if hb.services.len() > 256 {
        return Err(Error::invalid("services", "at most 256 services"));
    }
    app.db(move |s| s.config_heartbeat(uuid, &hb, now_ms()))
        .await?;
    Ok(Ack {})
}

/// What a spent NoCloud credential reads as user-data.
const SPENT_USER_DATA: &str =
    "#cloud-config\n# cloudmaster: this boot's NoCloud credential is spent \
(user-data is served once per boot; docs/security.md)\n";

/// A NoCloud file: text, or the config body as it is.
pub enum NocloudFile {
    Text(String),
    Body(Vec<u8>),
}

/// cloud-init NoCloud data of a record: `meta-data`, `user-data` (the
/// config body), `vendor-data`, `network-config`.
pub async fn nocloud(
    app: &App,
    who: Credentials,
    path_uuid: &str,
    file: &str,
) -> Result<NocloudFile> {
    let (uuid, access) = nocloud_access(app, who, path_uuid).await?;
    match file {
        "meta-data" => {
            // Not secret: served in any boot of the launch (cloud-init fetches
            // it again at every boot, and must see the same instance-id).
            nocloud_window(app, uuid, access, false).await?;
            let row = app.db(move |s| s.get_config(uuid)).await?;
            let host = match row.instance_id {
                Some(i) => app
                    .db(move |s| s.get_instance(&i.to_string()))
                    .await
                    .map(|r| r.name)
                    .ok(),
                None => None,
            };
            let host = host.unwrap_or_else(|| format!("cm-{}", &uuid.to_string()[..8]));
            Ok(NocloudFile::Text(format!(
                "instance-id: {uuid}\nlocal-hostname: {host}\n"
            )))
        }
        "user-data" => {
            if !nocloud_window(app, uuid, access, false).await? {
                // Spent: an empty cloud-config (a refusal would make cloud-init
                // drop to DataSourceNone and treat the VM as a new instance).
                return Ok(NocloudFile::Text(SPENT_USER_DATA.to_string()));
            }
            let (_, body, status) = app.db(move |s| s.config_body(uuid)).await?;
            if ConfigStatus::from(status).is_unfetched() {
                app.db(move |s| s.mark_fetched(uuid, now_ms())).await?;
            }
            Ok(NocloudFile::Body(body))
        }
        // cloud-init's last file: the boot's NoCloud credential is spent.
        "vendor-data" => {
            nocloud_window(app, uuid, access, true).await?;
            Ok(NocloudFile::Text(String::new()))
        }
        // DHCP on every ethernet interface, which is what cloud-init would
        // fall back to: written out, so it is the same on every version.
        "network-config" => Ok(NocloudFile::Text(
            "version: 2\nethernets:\n  all:\n    match:\n      name: \"e*\"\n    dhcp4: true\n"
                .to_string(),
        )),
        other => Err(Error::NotFound(
            format!("no NoCloud file '{}'", cm_api::validate::printable(other)).into(),
        )),
    }
}
