//! Config records and domains (the rendezvous cache as its owner sees it:
//! seed 003's `ConfigHelper`): their checks, store calls and events.

use super::{Error, Result};
use crate::bootcfg::Keyring;
use crate::state::App;
use crate::store::{now_ms, ConfigRow, NewConfig};
use crate::view;
use base64::Engine;
use cm_api::answer::{NameDeleted, UuidRemoved};
use cm_api::boot::{
    BootString, BootWho, Config, ConfigDetail, CreateDomain, Domain, DomainCreated, PreRegister,
    Registered, RemoveStale, Removed, SetConfig,
};
use cm_api::validate;
use cm_api::words::EventKind;
use std::collections::{BTreeMap, HashMap};
use uuid::Uuid;

/// The largest config body accepted.
pub const MAX_CONFIG: usize = 2 * 1024 * 1024;
pub const DEFAULT_DOMAIN: &str = "default";

/// The body from `config` (text) or `config_base64` (bytes); neither is empty.
pub fn body_of(text: &Option<String>, b64: &Option<String>) -> Result<Vec<u8>> {
    let body = match (text, b64) {
        (Some(_), Some(_)) => {
            return Err(Error::invalid(
                "config",
                "give config or config_base64, not both",
            ))
        }
        (Some(t), None) => t.clone().into_bytes(),
        (None, Some(b)) => base64::engine::general_purpose::STANDARD
            .decode(b.trim())
            .map_err(|e| {
                Error::invalid("config_base64", format!("config_base64 is not base64: {e}"))
            })?,
        (None, None) => Vec::new(),
    };
    if body.len() > MAX_CONFIG {
        return Err(Error::invalid(
            "config",
            format!("config is {} bytes; at most {MAX_CONFIG}", body.len()),
        ));
    }
    Ok(body)
}

pub fn check_parameter_map(map: &BTreeMap<String, String>) -> Result<()> {
    if map.len() > 256 {
        return Err(Error::invalid("parameter_map", "at most 256 parameters"));
    }
    if map
        .iter()
        .any(|(k, v)| k.is_empty() || k.len() > 128 || v.len() > 4096)
    {
        return Err(Error::invalid(
            "parameter_map",
            "keys are 1-128 characters, values at most 4096",
        ));
    }
    Ok(())
}

/// `HOST:PORT` split for a boot string.
pub fn split_addr(addr: &str) -> (String, u16) {
    match addr.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() => (h.to_string(), p.parse().unwrap_or(cm_api::DEFAULT_PORT)),
        _ => (addr.to_string(), cm_api::DEFAULT_PORT),
    }
}

pub fn boot_string(app: &App, who: BootWho, secret: String) -> String {
    let (host, port) = split_addr(&app.settings.guest_addr);
    BootString {
        who,
        host,
        port,
        secret,
    }
    .to_string()
}

/// The names of the instances records were made for.
async fn instance_names(app: &App) -> Result<HashMap<Uuid, String>> {
    let rows = app.db(|s| s.list_instances()).await?;
    Ok(rows.into_iter().map(|r| (r.id.uuid(), r.name)).collect())
}

fn show(c: &ConfigRow, names: &HashMap<Uuid, String>) -> Config {
    let name = c.instance_id.and_then(|i| names.get(&i.uuid()).cloned());
    let holder = c.bound_instance.and_then(|i| names.get(&i.uuid()).cloned());
    view::config(c, name, holder, now_ms())
}

pub fn parse_uuid(s: &str) -> Result<Uuid> {
    Uuid::parse_str(s).map_err(|_| {
        Error::invalid(
            "uuid",
            format!("'{}' is not a uuid", validate::printable(s)),
        )
    })
}

pub async fn pre_register(app: &App, req: PreRegister) -> Result<Registered> {
    let domain = req
        .domain
        .clone()
        .unwrap_or_else(|| DEFAULT_DOMAIN.to_string());
    validate::name("domain", &domain, true)?;
    let body = body_of(&req.config, &req.config_base64)?;
    check_parameter_map(&req.parameter_map)?;
    if req.dynamic {
        let d = domain.clone();
        if app.db(move |s| s.domain_secret(&d)).await?.is_none() {
            return Err(Error::not_found("domain", &domain).field("domain"));
        }
    }
    let uuid = req.uuid.unwrap_or_else(Uuid::new_v4);
    let secret = app.keys.record_secret(uuid, 1);
    let new = NewConfig {
        uuid,
        domain: domain.clone(),
        dynamic: req.dynamic,
        instance_id: None,
        body,
        secret: Keyring::hash_for_store(&secret, 1),
        parameter_map: req.parameter_map.clone(),
        config_hosts: vec![app.settings.guest_addr.clone()],
    };
    let row = app
        .db(move |s| s.insert_config(&new, now_ms()))
        .await
        .map_err(|e| e.field("uuid"))?;
    let kind = if row.dynamic { "dynamic" } else { "fixed" };
    app.event(
        EventKind::ConfigRegistered,
        &uuid.to_string(),
        &format!("{kind} record in domain {domain}, {} bytes", row.body_size),
    )
    .await;
    let boot_string = boot_string(app, BootWho::Record(uuid), secret.clone());
    Ok(Registered {
        record: view::config(&row, None, None, now_ms()),
        secret,
        boot_string,
    })
}

pub async fn list(app: &App, domain: Option<String>) -> Result<Vec<Config>> {
    let rows = app.db(move |s| s.list_configs(domain.as_deref())).await?;
    let names = instance_names(app).await?;
    Ok(rows.iter().map(|c| show(c, &names)).collect())
}

pub async fn detail(app: &App, id: &str) -> Result<ConfigDetail> {
    let uuid = parse_uuid(id)?;
    let (row, (_, body, _)) = app
        .db(move |s| Ok((s.get_config(uuid)?, s.config_body(uuid)?)))
        .await?;
    let names = instance_names(app).await?;
    Ok(ConfigDetail {
        record: show(&row, &names),
        config: String::from_utf8(body.clone()).ok(),
        config_base64: base64::engine::general_purpose::STANDARD.encode(&body),
    })
}

/// A new config body; a guest long-polling for it gets it at once.
pub async fn set_config(app: &App, id: &str, req: SetConfig) -> Result<Config> {
    let uuid = parse_uuid(id)?;
    let body = body_of(&req.config, &req.config_base64)?;
    let row = app
        .db(move |s| s.set_config_body(uuid, &body, now_ms()))
        .await?;
    app.configs_changed.send_modify(|v| *v += 1);
    app.event(
        EventKind::ConfigChanged,
        &uuid.to_string(),
        &format!("version {}, {} bytes", row.version, row.body_size),
    )
    .await;
    let names = instance_names(app).await?;
    Ok(show(&row, &names))
}

/// The seed's `remove`.
pub async fn remove(app: &App, id: &str) -> Result<UuidRemoved> {
    let uuid = parse_uuid(id)?;
    app.db(move |s| s.remove_config(uuid)).await?;
    app.event(EventKind::ConfigRemoved, &uuid.to_string(), "removed")
        .await;
    Ok(UuidRemoved {
        uuid,
        removed: true,
    })
}

/// Remove records not updated for `timeout`; returns them.
pub async fn remove_stale_now(app: &App, timeout: std::time::Duration) -> Result<Vec<ConfigRow>> {
    let before = now_ms() - cm_api::time::duration_millis(timeout);
    let gone = app.db(move |s| s.remove_stale(before)).await?;
    if !gone.is_empty() {
        app.event(
            EventKind::ConfigRemoved,
            "cache",
            &format!(
                "remove_stale({}s) removed {} record(s)",
                timeout.as_secs(),
                gone.len()
            ),
        )
        .await;
    }
    Ok(gone)
}

/// The seed's `remove_stale(timeout) -> removed`.
pub async fn remove_stale(app: &App, req: RemoveStale) -> Result<Removed> {
    let timeout = std::time::Duration::from_secs(req.timeout_secs.into());
    let gone = remove_stale_now(app, timeout).await?;
    Ok(Removed {
        removed: u32::try_from(gone.len()).unwrap_or(u32::MAX),
    })
}

pub async fn create_domain(app: &App, req: CreateDomain) -> Result<DomainCreated> {
    validate::name("name", &req.name, true)?;
    let secret = app.keys.domain_secret(&req.name, 1);
    let hash = Keyring::hash_for_store(&secret, 1);
    let name = req.name.clone();
    app.db(move |s| s.insert_domain(&name, &hash, now_ms()))
        .await?;
    app.event(EventKind::ConfigDomain, &req.name, "domain created")
        .await;
    let n = req.name.clone();
    let domain = app
        .db(move |s| s.list_domains())
        .await?
        .into_iter()
        .find(|d| d.name == n)
        .ok_or_else(|| Error::internal("the new domain vanished"))?;
    let boot_string = boot_string(app, BootWho::Domain(req.name.clone()), secret.clone());
    Ok(DomainCreated {
        domain,
        secret,
        boot_string,
    })
}

pub async fn list_domains(app: &App) -> Result<Vec<Domain>> {
    app.db(|s| s.list_domains()).await
}

pub async fn delete_domain(app: &App, name: String) -> Result<NameDeleted> {
    let n = name.clone();
    app.db(move |s| s.delete_domain(&n)).await?;
    app.event(EventKind::ConfigDomain, &name, "domain deleted")
        .await;
    Ok(NameDeleted {
        name,
        deleted: true,
    })
}
