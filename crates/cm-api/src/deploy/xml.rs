//! pacemaker-cloud's deployable XML, element for element:
//!
//! | XML | spec |
//! |---|---|
//! | `deployable(name, uuid, monitor, username)` | `name`, `uuid`; `monitor` must be `cm-guest`; `username` is kept by pacemaker-cloud for ssh and ignored here |
//! | `assembly(name, uuid, escalation_failures, escalation_period, image)` | an assembly of count 1; `image` (our extension) or else the image named after the assembly; `escalation` |
//! | `service(name, type, class="lsb", provider, monitor_interval, escalation_*)` | `lsb = type`, check `/etc/init.d/TYPE status` every `monitor_interval` |
//! | `parameters/parameter(name)` (or `paramaters/paramater`) | `env.NAME`: the `<value>` text, or `<reference assembly=A parameter=P>` as `{ref: "A.P"}` |
//!
//! An omitted `escalation_failures` means unlimited failures (never
//! escalate), as pacemaker-cloud defines it; an omitted `escalation_period`
//! means failures never expire. Errors carry the same logical paths as the
//! other formats (`assemblies[2].services[0].monitor_interval`) plus the
//! line and column of the XML.

use super::{AssemblySpec, Budget, CheckSpec, DeployableSpec, EnvValue, Limit, ServiceSpec};
use super::{SpecErrors, Spread, Unlimited};
use crate::time::Dur;
use roxmltree::{Document, Node, ParsingOptions};
use std::collections::BTreeMap;

/// "Failures never expire" (an omitted or INFINITY `escalation_period`):
/// a century, so that time arithmetic on it cannot overflow.
pub const FOREVER: Dur = Dur::from_secs(100 * 365 * 24 * 3600);

/// An XML with more nodes than this is refused.
const MAX_NODES: u32 = 50_000;

/// Where each logical path is in the XML (for messages).
#[derive(Debug, Default)]
pub struct Lines(BTreeMap<String, (u32, u32)>);

impl Lines {
    /// `(line L:C)` of the path, or of the nearest element holding it.
    pub fn near(&self, path: &str) -> Option<String> {
        let mut p = path;
        loop {
            if let Some((l, c)) = self.0.get(p) {
                return Some(format!("(line {l}:{c})"));
            }
            let cut = p.rfind(['.', '['])?;
            p = &p[..cut];
        }
    }
}

struct Reader<'d> {
    doc: &'d Document<'d>,
    errs: SpecErrors,
    lines: Lines,
}

impl<'d> Reader<'d> {
    fn at(&self, offset: usize) -> (u32, u32) {
        let p = self.doc.text_pos_at(offset);
        (p.row, p.col)
    }

    fn mark(&mut self, path: &str, node: Node) {
        let at = self.at(node.range().start);
        self.lines.0.insert(path.to_string(), at);
    }

    fn bad(&mut self, path: &str, offset: usize, message: impl std::fmt::Display) {
        let (l, c) = self.at(offset);
        self.errs.push(path, format!("{message} (line {l}:{c})"));
    }

    /// Where an attribute is (or its element, when it is missing).
    fn attr_at(node: Node, name: &str) -> usize {
        node.attributes()
            .find(|a| a.name() == name)
            .map(|a| a.range().start)
            .unwrap_or_else(|| node.range().start)
    }

    fn attr_path(base: &str, name: &str) -> String {
        if base.is_empty() {
            name.to_string()
        } else {
            format!("{base}.{name}")
        }
    }

    /// Refuse attributes this element does not have.
    fn only_attrs(&mut self, node: Node, base: &str, known: &[&str]) {
        for a in node.attributes() {
            if !known.contains(&a.name()) {
                let p = Self::attr_path(base, a.name());
                self.bad(
                    &p,
                    a.range().start,
                    format!("unknown attribute (expected one of {})", known.join(", ")),
                );
            }
        }
    }

    /// A required attribute's value.
    fn need(&mut self, node: Node, base: &str, name: &str) -> String {
        match node.attribute(name) {
            Some(v) => v.to_string(),
            None => {
                let p = Self::attr_path(base, name);
                let tag = node.tag_name().name().to_string();
                self.bad(
                    &p,
                    node.range().start,
                    format!("missing attribute `{name}` of <{tag}>"),
                );
                String::new()
            }
        }
    }

    /// The element children, refusing any not named in `known`.
    fn children(&mut self, node: Node<'d, 'd>, base: &str, known: &[&str]) -> Vec<Node<'d, 'd>> {
        let mut out = Vec::new();
        for c in node.children() {
            if c.is_element() {
                if known.contains(&c.tag_name().name()) {
                    out.push(c);
                } else {
                    let p = Self::attr_path(base, c.tag_name().name());
                    self.bad(
                        &p,
                        c.range().start,
                        format!(
                            "unknown element <{}> in <{}>",
                            c.tag_name().name(),
                            node.tag_name().name()
                        ),
                    );
                }
            } else if c.is_text() && c.text().is_some_and(|t| !t.trim().is_empty()) {
                self.bad(base, c.range().start, "unexpected text");
            }
        }
        out
    }

    fn budget(&mut self, node: Node, base: &str) -> Budget {
        let failures = match node.attribute("escalation_failures") {
            None => Limit::Unlimited(Unlimited::Unlimited),
            Some(v) if v.eq_ignore_ascii_case("infinity") => Limit::Unlimited(Unlimited::Unlimited),
            Some(v) => match v.trim().parse::<u32>() {
                Ok(n) => Limit::Count(n),
                Err(_) => {
                    let p = Self::attr_path(base, "escalation_failures");
                    self.bad(
                        &p,
                        Self::attr_at(node, "escalation_failures"),
                        format!(
                            "'{}' is not a count or INFINITY",
                            crate::validate::printable(v)
                        ),
                    );
                    Limit::Count(0)
                }
            },
        };
        let period = match node.attribute("escalation_period") {
            // Unlimited failures need no window: the policy's default
            // keeps the spec readable.
            None if matches!(failures, Limit::Unlimited(_)) => Budget::default().period,
            None => FOREVER,
            Some(v) if v.eq_ignore_ascii_case("infinity") => FOREVER,
            Some(v) => match Dur::parse(v) {
                Ok(d) => d,
                Err(e) => {
                    let p = Self::attr_path(base, "escalation_period");
                    let at = Self::attr_at(node, "escalation_period");
                    self.bad(&p, at, crate::validate::printable(&e));
                    Dur::default()
                }
            },
        };
        Budget { failures, period }
    }

    fn deployable(&mut self, root: Node<'d, 'd>) -> DeployableSpec {
        self.only_attrs(root, "", &["name", "uuid", "monitor", "username"]);
        self.mark("spec", root);
        self.mark("name", root);
        let name = self.need(root, "", "name");
        let uuid = root
            .attribute("uuid")
            .and_then(|u| match uuid::Uuid::parse_str(u) {
                Ok(u) => Some(u),
                Err(_) => {
                    self.bad("uuid", Self::attr_at(root, "uuid"), "not a uuid");
                    None
                }
            });
        if let Some(m) = root.attribute("monitor") {
            if m != "cm-guest" {
                self.bad(
                    "monitor",
                    Self::attr_at(root, "monitor"),
                    format!(
                        "monitor '{}' is not supported (only cm-guest)",
                        crate::validate::printable(m)
                    ),
                );
            }
        }
        let mut assemblies = Vec::new();
        let mut seen = false;
        for c in self.children(root, "", &["assemblies", "constraints"]) {
            match c.tag_name().name() {
                "assemblies" => {
                    seen = true;
                    for a in self.children(c, "assemblies", &["assembly"]) {
                        let path = format!("assemblies[{}]", assemblies.len());
                        assemblies.push(self.assembly(a, &path));
                    }
                }
                _ => {
                    if c.children().any(|n| n.is_element()) {
                        self.bad(
                            "constraints",
                            c.range().start,
                            "constraints are not supported",
                        );
                    }
                }
            }
        }
        if !seen {
            self.bad(
                "assemblies",
                root.range().start,
                "missing element <assemblies>",
            );
        }
        DeployableSpec {
            name,
            uuid,
            assemblies,
            policy: Default::default(),
            update: Default::default(),
        }
    }

    fn assembly(&mut self, node: Node<'d, 'd>, path: &str) -> AssemblySpec {
        self.mark(path, node);
        let known = [
            "name",
            "uuid",
            "escalation_failures",
            "escalation_period",
            "image",
        ];
        self.only_attrs(node, path, &known);
        let name = self.need(node, path, "name");
        let image = node.attribute("image").unwrap_or(&name).to_string();
        let escalation = Some(self.budget(node, path));
        let mut services = Vec::new();
        for s in self.children(node, path, &["services"]) {
            let base = format!("{path}.services");
            for svc in self.children(s, &base, &["service"]) {
                let p = format!("{path}.services[{}]", services.len());
                services.push(self.service(svc, &p));
            }
        }
        AssemblySpec {
            name,
            image,
            flavor: None,
            memory_mib: None,
            vcpus: None,
            count: 1,
            spread: Spread::default(),
            ports: Vec::new(),
            config: None,
            stateful: false,
            services,
            escalation,
        }
    }

    fn service(&mut self, node: Node<'d, 'd>, path: &str) -> ServiceSpec {
        self.mark(path, node);
        let known = [
            "name",
            "type",
            "class",
            "provider",
            "monitor_interval",
            "escalation_failures",
            "escalation_period",
        ];
        self.only_attrs(node, path, &known);
        let name = self.need(node, path, "name");
        let kind = self.need(node, path, "type");
        match node.attribute("class") {
            None | Some("lsb") => {}
            Some(other) => {
                let p = format!("{path}.class");
                self.bad(
                    &p,
                    Self::attr_at(node, "class"),
                    format!(
                        "class '{}' is not supported (only lsb)",
                        crate::validate::printable(other)
                    ),
                );
            }
        }
        let interval = match node.attribute("monitor_interval") {
            None => Dur::from_secs(5),
            Some(v) => Dur::parse(v).unwrap_or_else(|e| {
                let p = format!("{path}.monitor_interval");
                let at = Self::attr_at(node, "monitor_interval");
                self.bad(&p, at, crate::validate::printable(&e));
                Dur::default()
            }),
        };
        let escalation = Some(self.budget(node, path));
        let mut env = BTreeMap::new();
        let lists = ["parameters", "paramaters"];
        for list in self.children(node, path, &lists) {
            let base = format!("{path}.env");
            for p in self.children(list, &base, &["parameter", "paramater"]) {
                self.parameter(p, &base, &mut env);
            }
        }
        ServiceSpec {
            name,
            check: Some(CheckSpec {
                exec: Some(format!("/etc/init.d/{kind} status")),
                http: None,
                interval,
                timeout: Dur::from_secs(2),
            }),
            lsb: Some(kind),
            run: None,
            depends_on: Vec::new(),
            env,
            escalation,
            may_move_to: Vec::new(),
            pool: None,
        }
    }

    fn parameter(&mut self, node: Node<'d, 'd>, base: &str, env: &mut BTreeMap<String, EnvValue>) {
        self.only_attrs(node, base, &["name", "type"]);
        let name = self.need(node, base, "name");
        let path = format!("{base}.{name}");
        self.mark(&path, node);
        if let Some(t) = node.attribute("type") {
            if t != "scalar" {
                self.bad(
                    &path,
                    node.range().start,
                    format!(
                        "type '{}' is not supported (only scalar)",
                        crate::validate::printable(t)
                    ),
                );
            }
        }
        let kids = self.children(node, &path, &["value", "reference"]);
        let value = match kids.as_slice() {
            [v] if v.tag_name().name() == "value" => {
                EnvValue::Text(v.text().unwrap_or_default().to_string())
            }
            [r] => {
                self.only_attrs(*r, &path, &["assembly", "parameter"]);
                let a = self.need(*r, &path, "assembly");
                let p = self.need(*r, &path, "parameter");
                EnvValue::Ref {
                    reference: format!("{a}.{p}"),
                }
            }
            _ => {
                self.bad(
                    &path,
                    node.range().start,
                    "a parameter holds exactly one <value> or <reference>",
                );
                return;
            }
        };
        if env.insert(name, value).is_some() {
            self.bad(&path, node.range().start, "parameter given twice");
        }
    }
}

/// Read the XML into a spec (not yet checked), with where each path is.
pub fn parse(text: &str) -> Result<(DeployableSpec, Lines), SpecErrors> {
    let opts = ParsingOptions {
        nodes_limit: MAX_NODES,
        ..ParsingOptions::default()
    };
    let doc = Document::parse_with_options(text, opts).map_err(|e| {
        let p = e.pos();
        let msg = e.to_string();
        // roxmltree ends its messages with " at L:C".
        let msg = match msg.rfind(" at ") {
            Some(i) => msg[..i].to_string(),
            None => msg,
        };
        SpecErrors::one("spec", format!("{msg} (line {}:{})", p.row, p.col))
    })?;
    let root = doc.root_element();
    let mut r = Reader {
        doc: &doc,
        errs: SpecErrors::default(),
        lines: Lines::default(),
    };
    if root.tag_name().name() != "deployable" {
        r.bad(
            "spec",
            root.range().start,
            format!(
                "the root element is <{}>, not <deployable>",
                root.tag_name().name()
            ),
        );
        return Err(r.errs);
    }
    let spec = r.deployable(root);
    r.errs.into_result()?;
    Ok((spec, r.lines))
}
