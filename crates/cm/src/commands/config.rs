//! `cm config`: the rendezvous cache (seed 003) with the seed's names.

use crate::cli::{ConfigCmd, DomainCmd};
use crate::client::{api, CliError, Client};
use crate::output::{fields, json as print_json, opt, Tabular};
use base64::Engine;
use cm_api::boot::{
    Assigned, Config, ConfigDetail, CreateDomain, Domain, DomainCreated, PreRegister, Registered,
    RemoveStale, Removed, SetConfig, UpdateCache,
};
use cm_api::human_time;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

/// A config body from --file or --text: text when UTF-8, else base64.
fn body(
    file: &Option<PathBuf>,
    text: &Option<String>,
) -> Result<(Option<String>, Option<String>), CliError> {
    match (file, text) {
        (Some(p), _) => {
            let bytes = std::fs::read(p)
                .map_err(|e| CliError::Local(format!("cannot read {}: {e}", p.display())))?;
            Ok(match String::from_utf8(bytes) {
                Ok(t) => (Some(t), None),
                Err(e) => (
                    None,
                    Some(base64::engine::general_purpose::STANDARD.encode(e.as_bytes())),
                ),
            })
        }
        (None, Some(t)) => Ok((Some(t.clone()), None)),
        (None, None) => Ok((None, None)),
    }
}

fn params(list: &[String]) -> Result<BTreeMap<String, String>, CliError> {
    list.iter()
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| CliError::Local(format!("--param {p}: expected KEY=VALUE")))
        })
        .collect()
}

fn guest(c: &Config) -> String {
    c.guest
        .as_ref()
        .map(|g| g.state.clone())
        .unwrap_or_else(|| "-".into())
}

pub fn run(client: &Client, cmd: ConfigCmd, json: bool) -> Result<(), CliError> {
    match cmd {
        ConfigCmd::PreRegister {
            uuid,
            file,
            text,
            domain,
            dynamic,
            params: p,
        } => {
            let (config, config_base64) = body(&file, &text)?;
            let uuid = match uuid {
                Some(u) => Some(
                    u.parse()
                        .map_err(|_| CliError::Local(format!("--uuid {u} is not a uuid")))?,
                ),
                None => None,
            };
            let req = PreRegister {
                uuid,
                config,
                config_base64,
                domain,
                dynamic,
                parameter_map: params(&p)?,
            };
            let r: Registered = client.call(api::configs::pre_register(&req))?;
            if json {
                return print_json(&r);
            }
            println!("uuid:        {}", r.record.uuid);
            println!(
                "secret:      {}   (shown once; only a salted hash is kept)",
                r.secret
            );
            println!("boot string: {}", r.boot_string);
            Ok(())
        }
        ConfigCmd::List { domain } => {
            let list: Vec<Config> = client.call(api::configs::list(domain.as_deref()))?;
            if json {
                return print_json(&list);
            }
            let mut t = Tabular::new(&[
                "uuid", "domain", "dynamic", "instance", "status", "addr", "version", "guest",
                "updated",
            ]);
            for c in &list {
                let dynamic = match (c.dynamic, c.assigned) {
                    (false, _) => "no".to_string(),
                    (true, false) => "free".to_string(),
                    (true, true) => "assigned".to_string(),
                };
                t.row(vec![
                    c.uuid.to_string(),
                    c.domain.clone(),
                    dynamic,
                    opt(&c.instance.clone().or_else(|| c.assigned_to.clone())),
                    c.status.to_string(),
                    opt(&c.my_conf_addr),
                    c.config_version.to_string(),
                    guest(c),
                    human_time(&c.updated_at),
                ]);
            }
            t.print();
            Ok(())
        }
        ConfigCmd::Show { uuid, raw } => {
            if raw {
                let d: ConfigDetail = client.call(api::configs::detail(&uuid))?;
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(&d.config_base64)
                    .map_err(|e| CliError::Transport(format!("config_base64: {e}")))?;
                let mut out = std::io::stdout().lock();
                return out
                    .write_all(&bytes)
                    .map_err(|e| CliError::Local(e.to_string()));
            }
            let d: ConfigDetail = client.call(api::configs::detail(&uuid))?;
            if json {
                return print_json(&d);
            }
            let c = &d.record;
            let mut rows = vec![
                ("uuid", c.uuid.to_string()),
                ("domain", c.domain.clone()),
                (
                    "dynamic",
                    format!("{} (assigned: {})", c.dynamic, c.assigned),
                ),
                ("instance", opt(&c.instance)),
                ("assigned_to", opt(&c.assigned_to)),
                ("status", c.status.to_string()),
                ("reason", opt(&c.reason)),
                ("my_conf_addr", opt(&c.my_conf_addr)),
                ("config_hosts", c.config_hosts.join(", ")),
                (
                    "config",
                    format!(
                        "version {}, {} bytes, sha256 {}",
                        c.config_version, c.config_size, c.config_sha256
                    ),
                ),
                (
                    "trust key",
                    if c.trust_key_set {
                        "set".into()
                    } else {
                        "not yet".into()
                    },
                ),
                ("guest", guest(c)),
                ("updated", human_time(&c.updated_at)),
            ];
            for (k, v) in &c.parameter_map {
                rows.push(("parameter", format!("{k}={v}")));
            }
            fields(&rows);
            Ok(())
        }
        ConfigCmd::Set { uuid, file, text } => {
            let (config, config_base64) = body(&file, &text)?;
            if config.is_none() && config_base64.is_none() {
                return Err(CliError::Local("give --file or --text".into()));
            }
            let c: Config = client.call(api::configs::set_config(
                &uuid,
                &SetConfig {
                    config,
                    config_base64,
                },
            ))?;
            if json {
                return print_json(&c);
            }
            println!("config {} is now version {}", c.uuid, c.config_version);
            Ok(())
        }
        ConfigCmd::Remove { uuid } => {
            let v = client.call(api::configs::remove(&uuid))?;
            super::done(json, &v, &format!("config {uuid} removed"))
        }
        ConfigCmd::RemoveStale { timeout } => {
            let r: Removed = client.call(api::configs::remove_stale(&RemoveStale {
                timeout_secs: timeout,
            }))?;
            if json {
                return print_json(&r);
            }
            println!("removed {}", r.removed);
            Ok(())
        }
        ConfigCmd::UpdateCache {
            uuid,
            secret,
            status,
            reason,
            addr,
            params: p,
            trust_key,
        } => {
            let body = UpdateCache {
                my_conf_addr: addr,
                parameter_map: params(&p)?,
                status: status.into(),
                reason,
                config_version: 0,
                trust_key,
                rekey: None,
            };
            let v = client.call(api::boot::update_status(&uuid, &secret, &body))?;
            super::done(json, &v, &format!("config {uuid} updated"))
        }
        ConfigCmd::AssignDynamic { domain, secret } => {
            let a: Assigned = client.call(api::boot::assign(
                &domain,
                &secret,
                &cm_api::boot::AssignDynamic {
                    domain: domain.clone(),
                    instance: None,
                },
            ))?;
            if json {
                return print_json(&a);
            }
            println!("uuid:   {}", a.uuid);
            println!("secret: {}", a.secret);
            Ok(())
        }
        ConfigCmd::Domain(DomainCmd::Create { name }) => {
            let d: DomainCreated =
                client.call(api::configs::create_domain(&CreateDomain { name }))?;
            if json {
                return print_json(&d);
            }
            println!("domain:      {}", d.domain.name);
            println!(
                "secret:      {}   (shown once; only a salted hash is kept)",
                d.secret
            );
            println!("boot string: {}", d.boot_string);
            Ok(())
        }
        ConfigCmd::Domain(DomainCmd::List) => {
            let list: Vec<Domain> = client.call(api::configs::domains())?;
            if json {
                return print_json(&list);
            }
            let mut t = Tabular::new(&["name", "dynamic", "free", "created"]).numeric(&[1, 2]);
            for d in &list {
                t.row(vec![
                    d.name.clone(),
                    d.dynamic_total.to_string(),
                    d.dynamic_free.to_string(),
                    human_time(&d.created_at),
                ]);
            }
            t.print();
            Ok(())
        }
        ConfigCmd::Domain(DomainCmd::Delete { name }) => {
            let v = client.call(api::configs::delete_domain(&name))?;
            super::done(json, &v, &format!("domain {name} deleted"))
        }
    }
}
