//! The rules a spec must keep that need nothing from the master's store.
//! Every problem is reported, each with its path.

use super::{AssemblySpec, Budget, DeployableSpec, EnvValue, Limit, ServiceSpec, SpecErrors};
use crate::time::Dur;
use crate::validate::{self, MAX_MEMORY_MIB, MAX_VCPUS, MIN_MEMORY_MIB};
use std::collections::{BTreeMap, BTreeSet};

/// Instances per assembly.
pub const MAX_COUNT: u32 = 64;
/// Assemblies per deployable, and services per assembly.
pub const MAX_ASSEMBLIES: usize = 64;
pub const MAX_SERVICES: usize = 32;
/// The shortest heartbeat interval a guest is asked for.
pub const MIN_HEARTBEAT: Dur = Dur::from_millis(200);
/// Digits kept free in an instance name for the incarnation
/// (`{deployable}-{assembly}-{index}-{incarnation}` fits 63 characters up
/// to incarnation 99999).
pub const INCARNATION_DIGITS: usize = 5;

/// Check a parsed spec; `Err` holds every problem found (at most 20).
pub fn check(spec: &DeployableSpec) -> Result<(), SpecErrors> {
    let mut c = Checker {
        errs: SpecErrors::default(),
        spec,
    };
    c.name("name", &spec.name);
    if spec.assemblies.is_empty() {
        c.errs.push("assemblies", "at least one assembly is needed");
    }
    if spec.assemblies.len() > MAX_ASSEMBLIES {
        c.errs
            .push("assemblies", format!("at most {MAX_ASSEMBLIES} assemblies"));
    }
    let mut names = BTreeSet::new();
    for (i, a) in spec.assemblies.iter().enumerate() {
        let p = format!("assemblies[{i}]");
        if !names.insert(a.name.as_str()) {
            c.errs.push(
                format!("{p}.name"),
                format!("assembly '{}' is named twice", a.name),
            );
        }
        c.assembly(&p, a);
    }
    c.policy();
    let sized = spec.assemblies.len() <= MAX_ASSEMBLIES
        && spec
            .assemblies
            .iter()
            .all(|a| a.services.len() <= MAX_SERVICES);
    if sized {
        c.cycles();
    }
    c.errs.into_result()
}

struct Checker<'s> {
    errs: SpecErrors,
    spec: &'s DeployableSpec,
}

impl Checker<'_> {
    fn name(&mut self, path: &str, value: &str) {
        self.dns(path, value, false);
    }

    /// A DNS label (with dots for images and flavors), said without
    /// repeating the path: `'web_1': only lowercase letters, ...`.
    fn dns(&mut self, path: &str, value: &str, dots: bool) {
        if let Err(e) = validate::name(path, value, dots) {
            let m = e.error.message;
            let why = m.rsplit_once("': ").map(|(_, w)| w).unwrap_or(&m);
            self.errs
                .push(path, format!("'{}': {why}", validate::printable(value)));
        }
    }

    fn assembly_named(&self, name: &str) -> Option<&AssemblySpec> {
        self.spec.assemblies.iter().find(|a| a.name == name)
    }

    fn assembly(&mut self, p: &str, a: &AssemblySpec) {
        self.name(&format!("{p}.name"), &a.name);
        if !(1..=MAX_COUNT).contains(&a.count) {
            self.errs.push(
                format!("{p}.count"),
                format!("count must be between 1 and {MAX_COUNT}, got {}", a.count),
            );
        }
        // The longest instance name this assembly can have.
        let idx_digits = a.count.saturating_sub(1).max(1).to_string().len();
        let longest = self.spec.name.len() + a.name.len() + idx_digits + INCARNATION_DIGITS + 3;
        if longest > 63 && !self.spec.name.is_empty() && !a.name.is_empty() {
            self.errs.push(
                format!("{p}.name"),
                format!(
                    "instance names '{}-{}-N-N' would be {longest} characters (at most 63): \
                     shorten the deployable or assembly name",
                    self.spec.name, a.name
                ),
            );
        }
        self.dns(&format!("{p}.image"), &a.image, true);
        if let Some(f) = &a.flavor {
            self.dns(&format!("{p}.flavor"), f, true);
        }
        if let Some(m) = a.memory_mib {
            if !(MIN_MEMORY_MIB..=MAX_MEMORY_MIB).contains(&m) {
                self.errs.push(
                    format!("{p}.memory_mib"),
                    format!(
                        "memory must be between {MIN_MEMORY_MIB} and {MAX_MEMORY_MIB} MiB, got {m}"
                    ),
                );
            }
        }
        if let Some(v) = a.vcpus {
            if !(1..=MAX_VCPUS).contains(&v) {
                self.errs.push(
                    format!("{p}.vcpus"),
                    format!("vcpus must be between 1 and {MAX_VCPUS}, got {v}"),
                );
            }
        }
        let mut ports = BTreeSet::new();
        for (j, port) in a.ports.iter().enumerate() {
            let pp = format!("{p}.ports[{j}]");
            self.name(&format!("{pp}.name"), &port.name);
            if !ports.insert(port.name.as_str()) {
                self.errs.push(
                    format!("{pp}.name"),
                    format!("port '{}' is named twice", port.name),
                );
            }
            if port.guest == 0 {
                self.errs
                    .push(format!("{pp}.guest"), "port 0 is not a port");
            }
        }
        if let Some(b) = &a.escalation {
            self.budget(&format!("{p}.escalation"), b);
        }
        if a.services.len() > MAX_SERVICES {
            self.errs.push(
                format!("{p}.services"),
                format!("at most {MAX_SERVICES} services per assembly"),
            );
        }
        let mut svcs = BTreeSet::new();
        for (j, s) in a.services.iter().enumerate() {
            let sp = format!("{p}.services[{j}]");
            if !svcs.insert(s.name.as_str()) {
                self.errs.push(
                    format!("{sp}.name"),
                    format!("service '{}' is named twice in '{}'", s.name, a.name),
                );
            }
            self.service(&sp, a, s);
        }
    }

    fn service(&mut self, p: &str, a: &AssemblySpec, s: &ServiceSpec) {
        self.name(&format!("{p}.name"), &s.name);
        match (&s.run, &s.lsb) {
            (Some(_), Some(_)) => self.errs.push(p, "give run or lsb, not both"),
            (None, None) => self
                .errs
                .push(p, "give run (a command) or lsb (an init script)"),
            (Some(r), None) if r.trim().is_empty() => {
                self.errs.push(format!("{p}.run"), "must not be empty")
            }
            (None, Some(l)) if !script_name(l) => self.errs.push(
                format!("{p}.lsb"),
                format!(
                    "'{}' is not an init script name (letters, digits, '-', '_', '.')",
                    validate::printable(l)
                ),
            ),
            _ => {}
        }
        if let Some(ch) = &s.check {
            let cp = format!("{p}.check");
            match (&ch.exec, &ch.http) {
                (Some(_), Some(_)) => self.errs.push(&cp, "give exec or http, not both"),
                (None, None) => self.errs.push(&cp, "give exec (a command) or http (a URL)"),
                (None, Some(u)) => match url::Url::parse(u) {
                    Ok(url) if url.scheme() == "http" && url.host().is_some() => {}
                    Ok(url) => self.errs.push(
                        format!("{cp}.http"),
                        format!("not an http URL (scheme '{}')", url.scheme()),
                    ),
                    Err(_) => self.errs.push(format!("{cp}.http"), "not a URL"),
                },
                (Some(e), None) if e.trim().is_empty() => {
                    self.errs.push(format!("{cp}.exec"), "must not be empty")
                }
                _ => {}
            }
            if ch.interval.as_millis() == 0 {
                self.errs
                    .push(format!("{cp}.interval"), "must be longer than 0");
            }
            if ch.timeout.as_millis() == 0 {
                self.errs
                    .push(format!("{cp}.timeout"), "must be longer than 0");
            }
        }
        for (k, d) in s.depends_on.iter().enumerate() {
            if !self.service_exists(a, d) {
                self.errs.push(
                    format!("{p}.depends_on[{k}]"),
                    format!(
                        "no service '{}' (name a service of this assembly, or assembly.service)",
                        validate::printable(d)
                    ),
                );
            }
        }
        for (key, v) in &s.env {
            let ep = format!("{p}.env.{key}");
            if !env_name(key) {
                self.errs.push(
                    &ep,
                    "not an environment variable name ([A-Za-z_][A-Za-z0-9_]*)",
                );
            }
            if let EnvValue::Ref { reference } = v {
                match reference.split_once('.') {
                    Some((asm, param))
                        if !param.is_empty() && self.assembly_named(asm).is_some() => {}
                    Some((asm, param)) if !param.is_empty() => self.errs.push(
                        format!("{ep}.ref"),
                        format!("no assembly '{}'", validate::printable(asm)),
                    ),
                    _ => self.errs.push(
                        format!("{ep}.ref"),
                        format!(
                            "'{}' is not assembly.parameter (db.ipaddress)",
                            validate::printable(reference)
                        ),
                    ),
                }
            }
        }
        if let Some(b) = &s.escalation {
            self.budget(&format!("{p}.escalation"), b);
        }
        for (k, m) in s.may_move_to.iter().enumerate() {
            let mp = format!("{p}.may_move_to[{k}]");
            match self.assembly_named(m) {
                None => self
                    .errs
                    .push(mp, format!("no assembly '{}'", validate::printable(m))),
                Some(t) if t.name == a.name => self
                    .errs
                    .push(mp, "a service cannot move to its own assembly"),
                Some(t) if t.stateful => self.errs.push(
                    mp,
                    format!(
                        "'{}' is stateful: nothing is moved onto a stateful assembly",
                        t.name
                    ),
                ),
                Some(_) => {}
            }
        }
        if let Some(pool) = &s.pool {
            let pp = format!("{p}.pool");
            self.name(&format!("{pp}.balancer"), &pool.balancer);
            let backend_ok = !pool.backend.is_empty()
                && pool.backend.len() <= 63
                && pool
                    .backend
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c));
            if !backend_ok {
                self.errs.push(
                    format!("{pp}.backend"),
                    "not a backend name (letters, digits, '-', '_', '.', ':'; at most 63)",
                );
            }
            if !a.ports.iter().any(|x| x.name == pool.port) {
                self.errs.push(
                    format!("{pp}.port"),
                    format!(
                        "no port '{}' in assembly '{}' (its ports: {})",
                        validate::printable(&pool.port),
                        a.name,
                        a.ports
                            .iter()
                            .map(|x| x.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                );
            }
        }
    }

    fn service_exists(&self, own: &AssemblySpec, name: &str) -> bool {
        match name.split_once('.') {
            Some((asm, svc)) => self
                .assembly_named(asm)
                .is_some_and(|a| a.services.iter().any(|s| s.name == svc)),
            None => own.services.iter().any(|s| s.name == name),
        }
    }

    fn budget(&mut self, p: &str, b: &Budget) {
        if b.period.as_millis() == 0 && !matches!(b.failures, Limit::Unlimited(_)) {
            self.errs
                .push(format!("{p}.period"), "must be longer than 0");
        }
    }

    fn policy(&mut self) {
        let pol = &self.spec.policy;
        if pol.heartbeat_interval < MIN_HEARTBEAT {
            self.errs.push(
                "policy.heartbeat_interval",
                format!("{} is shorter than {MIN_HEARTBEAT}", pol.heartbeat_interval),
            );
        }
        if pol.heartbeat_timeout <= pol.heartbeat_interval {
            self.errs.push(
                "policy.heartbeat_timeout",
                format!(
                    "{} must be longer than heartbeat_interval ({})",
                    pol.heartbeat_timeout, pol.heartbeat_interval
                ),
            );
        }
        if pol.restart_backoff.initial.as_millis() == 0 {
            self.errs
                .push("policy.restart_backoff.initial", "must be longer than 0");
        }
        if pol.restart_backoff.max < pol.restart_backoff.initial {
            self.errs.push(
                "policy.restart_backoff.max",
                format!("must be at least initial ({})", pol.restart_backoff.initial),
            );
        }
        self.budget("policy.escalation", &pol.escalation);
        let up = &self.spec.update;
        if up.max_parallel < 1 {
            self.errs.push("update.max_parallel", "must be at least 1");
        }
        if up.healthy_deadline.as_millis() == 0 {
            self.errs
                .push("update.healthy_deadline", "must be longer than 0");
        }
    }

    /// `depends_on` must not loop: `cycle web → db → web`.
    fn cycles(&mut self) {
        // Nodes are `assembly.service`; edges follow depends_on.
        let mut edges: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
        let mut order = Vec::new();
        for (i, a) in self.spec.assemblies.iter().enumerate() {
            for (j, s) in a.services.iter().enumerate() {
                let from = format!("{}.{}", a.name, s.name);
                order.push(from.clone());
                for (k, d) in s.depends_on.iter().enumerate() {
                    let to = if d.contains('.') {
                        d.clone()
                    } else {
                        format!("{}.{d}", a.name)
                    };
                    let path = format!("assemblies[{i}].services[{j}].depends_on[{k}]");
                    edges.entry(from.clone()).or_default().push((to, path));
                }
            }
        }
        let mut done = BTreeSet::new();
        for start in &order {
            let mut stack = Vec::new();
            if let Some((cycle, path)) = walk(start, &edges, &mut stack, &mut done) {
                self.errs.push(path, format!("cycle {}", cycle.join(" → ")));
                return;
            }
        }
    }
}

/// Depth-first: the first cycle reached from `node`, and the path of the
/// edge that closes it.
fn walk(
    node: &str,
    edges: &BTreeMap<String, Vec<(String, String)>>,
    stack: &mut Vec<String>,
    done: &mut BTreeSet<String>,
) -> Option<(Vec<String>, String)> {
    if done.contains(node) {
        return None;
    }
    stack.push(node.to_string());
    for (to, path) in edges.get(node).into_iter().flatten() {
        if let Some(pos) = stack.iter().position(|n| n == to) {
            let mut cycle: Vec<String> = stack[pos..].to_vec();
            cycle.push(to.clone());
            // `web.httpd → db.mysqld` reads as `web → db` across assemblies.
            let short: Vec<String> = cycle
                .iter()
                .map(|n| n.split_once('.').map(|(a, _)| a).unwrap_or(n).to_string())
                .collect();
            let words = if short.windows(2).all(|w| w[0] != w[1]) {
                short
            } else {
                cycle
            };
            return Some((words, path.clone()));
        }
        if let Some(found) = walk(to, edges, stack, done) {
            return Some(found);
        }
    }
    stack.pop();
    done.insert(node.to_string());
    None
}

fn script_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && !s.starts_with('.')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

fn env_name(s: &str) -> bool {
    let mut cs = s.chars();
    matches!(cs.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && cs.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && s.len() <= 128
}
