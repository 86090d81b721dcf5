//! A slot's cm-guest config (crates/cm-guest/src/format.rs): its services
//! with their checks and environment, the heartbeat interval, and the
//! assembly's own extra TOML. References (`{ref: "db.ipaddress"}`) are
//! resolved from the store's rows; when the referenced slot is replaced
//! and its address changes, the dependents are rendered again and get a
//! new config version (`set_config_body`).
//!
//! A reference `A.NAME` names assembly `A`'s first slot (`A-0`):
//! - `ipaddress`: its host's `forward_addr` (where other machines reach
//!   that host's port forwards);
//! - `address`: `forward_addr:port` of its first forwarded port;
//! - `port` / `port.P`: the host port forwarding its first port / port `P`;
//! - anything else: that name in its config record's parameter map (what
//!   its guest reported with `update_cache`).

use crate::store::engine::Snapshot;
use cm_api::deploy::{AssemblySpec, EnvValue, ServiceSpec};
use std::collections::BTreeMap;
use toml::{Table, Value};

/// Resolve `A.NAME` against the snapshot; None while it cannot be (the
/// slot has no instance yet, or the parameter is not reported yet).
pub fn resolve(snap: &Snapshot, reference: &str) -> Option<String> {
    let (asm, name) = reference.split_once('.')?;
    let slot = snap
        .slots
        .iter()
        .find(|s| s.assembly == asm && s.idx == 0)?;
    let inst = snap.instance(slot.instance_id?)?;
    if inst.desired.deleted {
        return None;
    }
    let host = snap.host(inst.host_id)?;
    let addr = host
        .facts
        .forward_addr
        .clone()
        .unwrap_or_else(|| "127.0.0.1".to_string());
    let spec = snap.spec.spec.assemblies.iter().find(|a| a.name == asm)?;
    let port_of = |pname: Option<&str>| -> Option<u16> {
        let guest = match pname {
            Some(p) => spec.ports.iter().find(|x| x.name == p)?.guest,
            None => spec.ports.first()?.guest,
        };
        inst.spec
            .ports
            .iter()
            .find(|f| f.guest == guest)
            .map(|f| f.host)
    };
    match name {
        "ipaddress" => Some(addr),
        "address" => port_of(None).map(|p| format!("{addr}:{p}")),
        "port" => port_of(None).map(|p| p.to_string()),
        n => match n.strip_prefix("port.") {
            Some(p) => port_of(Some(p)).map(|p| p.to_string()),
            None => snap.params.get(&inst.id)?.get(n).cloned(),
        },
    }
}

/// Why a config could not be rendered: the slot waits with this reason
/// rather than give its guest an empty config.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("cannot write its cm-guest config: {0}")]
    Toml(#[from] toml::ser::Error),
}

/// What a slot adds to its assembly's spec when rendered.
#[derive(Debug, Clone, Copy, Default)]
pub struct SlotPart<'a> {
    /// The services placed on it (None: the assembly's own).
    pub services: Option<&'a [String]>,
    /// Each service's `restart_gen` (absent: 0); a new value restarts it.
    pub restart_gens: Option<&'a BTreeMap<String, u64>>,
    /// Services moved here from a failed slot of another assembly, each
    /// under its name here (`web-1.worker`: a service name has no dot, so
    /// it never collides with one of this assembly's).
    pub moved: &'a [(String, &'a ServiceSpec)],
}

/// A moved service's name on its host slot: `{slot}.{service}`.
pub fn moved_name(slot: &str, service: &str) -> String {
    format!("{slot}.{service}")
}

/// The slot (`web-1`), its assembly (`web`) and the service of a moved
/// name; None for one of the slot's own services.
pub fn split_moved(name: &str) -> Option<(&str, &str, &str)> {
    let (slot, service) = name.split_once('.')?;
    let (asm, idx) = slot.rsplit_once('-')?;
    idx.parse::<u32>().ok()?;
    Some((slot, asm, service))
}

/// The cm-guest TOML of an instance of `asm`, with the slot's part and
/// references through `lookup`.
pub fn render(
    asm: &AssemblySpec,
    heartbeat_ms: u64,
    part: SlotPart<'_>,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, RenderError> {
    let services = part.services;
    let mut top = Table::new();
    let mut agent = Table::new();
    agent.insert(
        "heartbeat_ms".into(),
        Value::Integer(i64::try_from(heartbeat_ms).unwrap_or(i64::MAX)),
    );
    top.insert("agent".into(), Value::Table(agent));
    let mut list = Vec::new();
    for s in &asm.services {
        if services.is_some_and(|names| !names.contains(&s.name)) {
            continue;
        }
        list.push(Value::Table(service_table(s, &s.name, part, lookup)));
    }
    for (name, s) in part.moved {
        list.push(Value::Table(service_table(s, name, part, lookup)));
    }
    if !list.is_empty() {
        top.insert("service".into(), Value::Array(list));
    }
    let mut out = String::from("#cm-guest: rendered by the deployable engine\n");
    out.push_str(&toml::to_string(&top)?);
    if let Some(extra) = &asm.config {
        out.push('\n');
        out.push_str(extra);
        if !extra.ends_with('\n') {
            out.push('\n');
        }
    }
    Ok(out)
}

/// One `[[service]]` of the config, named `name`.
fn service_table(
    s: &ServiceSpec,
    name: &str,
    part: SlotPart<'_>,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Table {
    let mut t = Table::new();
    t.insert("name".into(), Value::String(name.to_string()));
    if let Some(run) = &s.run {
        t.insert("run".into(), Value::String(run.clone()));
    }
    if let Some(lsb) = &s.lsb {
        t.insert("lsb".into(), Value::String(lsb.clone()));
    }
    if !s.env.is_empty() {
        let mut env = Table::new();
        for (k, v) in &s.env {
            let text = match v {
                EnvValue::Text(t) => t.clone(),
                EnvValue::Ref { reference } => lookup(reference).unwrap_or_default(),
            };
            env.insert(k.clone(), Value::String(text));
        }
        t.insert("env".into(), Value::Table(env));
    }
    if let Some(g) = part.restart_gens.and_then(|m| m.get(name)) {
        t.insert(
            "restart_gen".into(),
            Value::Integer(i64::try_from(*g).unwrap_or(i64::MAX)),
        );
    }
    if let Some(c) = &s.check {
        let mut check = Table::new();
        if let Some(e) = &c.exec {
            check.insert("exec".into(), Value::String(e.clone()));
        }
        if let Some(h) = &c.http {
            check.insert("http".into(), Value::String(h.clone()));
        }
        let secs = (c.interval.as_millis() / 1000).max(1);
        check.insert(
            "interval_secs".into(),
            Value::Integer(i64::try_from(secs).unwrap_or(i64::MAX)),
        );
        t.insert("check".into(), Value::Table(check));
    }
    t
}
