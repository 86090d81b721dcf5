//! Which format a config is in, and cm-guest's own (TOML, docs/guest.md).

use serde::Deserialize;
use std::collections::BTreeMap;

/// What to do with a config body.
#[derive(Debug, PartialEq)]
pub enum Kind {
    /// Empty: nothing to apply.
    Empty,
    /// cm-guest's own TOML format.
    Own(Box<GuestConfig>),
    /// `#cloud-config`: cloud-init's, for cloud-init images.
    CloudConfig,
    /// Anything else: for the handler program named in /etc/cm-guest.toml.
    Other,
}

#[derive(Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuestConfig {
    #[serde(default, rename = "file")]
    pub files: Vec<File>,
    #[serde(default, rename = "command")]
    pub commands: Vec<Cmd>,
    #[serde(default, rename = "service")]
    pub services: Vec<Service>,
    /// Directories kept copied elsewhere (filesync/).
    #[serde(default, rename = "sync")]
    pub syncs: Vec<crate::filesync::spec::SyncSpec>,
    #[serde(default)]
    pub parameters: BTreeMap<String, String>,
    /// The agent's own settings while this config is applied.
    #[serde(default)]
    pub agent: AgentSection,
}

/// `[agent]`: settings of the agent that a config may change live.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSection {
    /// Milliseconds between heartbeats (else /etc/cm-guest.toml's
    /// `heartbeat_secs`): a deployable's heartbeat interval.
    #[serde(default)]
    pub heartbeat_ms: Option<u64>,
}

/// The shortest and longest heartbeat interval a config may ask for.
pub const HEARTBEAT_MS: std::ops::RangeInclusive<u64> = 100..=3_600_000;

#[derive(Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    pub path: String,
    #[serde(default)]
    pub content: Option<String>,
    #[serde(default)]
    pub content_base64: Option<String>,
    /// Octal, as a string: "0644" (default), "0755".
    #[serde(default)]
    pub mode: Option<String>,
}

#[derive(Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cmd {
    /// Run with `/bin/sh -c`; a non-zero exit fails the config.
    pub run: String,
    #[serde(default = "default_cmd_timeout")]
    pub timeout_secs: u64,
}

fn default_cmd_timeout() -> u64 {
    300
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    pub name: String,
    /// A long-running command (`/bin/sh -c`), restarted when it exits.
    #[serde(default)]
    pub run: Option<String>,
    /// Or an LSB init script: `/etc/init.d/NAME start`, `status` (its exit
    /// code is the service's health), `stop`.
    #[serde(default)]
    pub lsb: Option<String>,
    #[serde(default)]
    pub check: Option<Check>,
    /// Environment of the command (or the init script), beside the agent's.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// A new value restarts the service (nothing else changes).
    #[serde(default)]
    pub restart_gen: u64,
}

/// Whether `name` may name an environment variable (POSIX: letters,
/// digits and `_`, not starting with a digit).
fn env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Whether `name` may name a script in /etc/init.d (no path, no dot-file).
fn lsb_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Check {
    /// A command: exit 0 is healthy.
    #[serde(default)]
    pub exec: Option<String>,
    /// A URL: a 2xx answer is healthy.
    #[serde(default)]
    pub http: Option<String>,
    #[serde(default = "default_interval")]
    pub interval_secs: u64,
}

fn default_interval() -> u64 {
    2
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{0}")]
pub struct FormatError(pub String);

/// What `body` is; errors only for a cm-guest config that is malformed.
pub fn detect(body: &[u8]) -> Result<Kind, FormatError> {
    let text = match std::str::from_utf8(body) {
        Ok(t) => t,
        Err(_) => return Ok(Kind::Other),
    };
    let first = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    if first.is_empty() {
        return Ok(Kind::Empty);
    }
    if first.starts_with("#cloud-config") {
        return Ok(Kind::CloudConfig);
    }
    let marked = first.starts_with("#cm-guest");
    match toml::from_str::<GuestConfig>(text) {
        Ok(mut cfg) => {
            validate(&cfg)?;
            crate::filesync::spec::check(&mut cfg.syncs).map_err(FormatError)?;
            Ok(Kind::Own(Box::new(cfg)))
        }
        // Marked as ours: its errors are the user's to see.
        Err(e) if marked => Err(FormatError(format!("cm-guest config: {}", e.message()))),
        // Unmarked and not ours: someone else's format.
        Err(_) => Ok(Kind::Other),
    }
}

fn validate(cfg: &GuestConfig) -> Result<(), FormatError> {
    let bad = |m: String| Err(FormatError(m));
    for f in &cfg.files {
        if !f.path.starts_with('/') {
            return bad(format!("file {}: path must be absolute", f.path));
        }
        if f.content.is_some() == f.content_base64.is_some() {
            return bad(format!("file {}: give content or content_base64", f.path));
        }
        if let Some(m) = &f.mode {
            if u32::from_str_radix(m, 8)
                .map(|v| v > 0o7777)
                .unwrap_or(true)
            {
                return bad(format!("file {}: mode {m} is not octal", f.path));
            }
        }
    }
    if let Some(ms) = cfg.agent.heartbeat_ms {
        if !HEARTBEAT_MS.contains(&ms) {
            return bad(format!(
                "agent: heartbeat_ms must be {} to {}",
                HEARTBEAT_MS.start(),
                HEARTBEAT_MS.end()
            ));
        }
    }
    let mut names = std::collections::HashSet::new();
    for s in &cfg.services {
        if s.name.starts_with("sync:") {
            return bad(format!(
                "service {}: names starting with sync: are the syncs'",
                s.name
            ));
        }
        if s.name.is_empty() || !names.insert(s.name.as_str()) {
            return bad(format!(
                "service names must be unique and not empty ({:?})",
                s.name
            ));
        }
        if s.run.is_some() == s.lsb.is_some() {
            return bad(format!("service {}: give run or lsb", s.name));
        }
        if let Some(l) = s.lsb.as_deref().filter(|l| !lsb_name(l)) {
            return bad(format!(
                "service {}: lsb {l:?} is not a script name in /etc/init.d",
                s.name
            ));
        }
        for (k, v) in &s.env {
            if !env_name(k) || v.contains('\0') {
                return bad(format!("service {}: env {k:?} is not a variable", s.name));
            }
        }
        if let Some(c) = &s.check {
            if c.exec.is_some() == c.http.is_some() {
                return bad(format!("service {}: a check has exec or http", s.name));
            }
            if c.interval_secs == 0 {
                return bad(format!(
                    "service {}: interval_secs must be at least 1",
                    s.name
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_told_apart() {
        assert_eq!(detect(b"").unwrap(), Kind::Empty);
        assert_eq!(detect(b"\n  \n").unwrap(), Kind::Empty);
        assert_eq!(
            detect(b"#cloud-config\nruncmd: [ls]\n").unwrap(),
            Kind::CloudConfig
        );
        assert_eq!(detect(b"{\"json\": true}").unwrap(), Kind::Other);
        assert_eq!(detect(&[0xff, 0xfe, 0x00]).unwrap(), Kind::Other);
        assert_eq!(detect(b"just some words").unwrap(), Kind::Other);
        let own = detect(b"#cm-guest\n[parameters]\nrole = \"web\"\n").unwrap();
        match own {
            Kind::Own(c) => assert_eq!(c.parameters["role"], "web"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_full_config_parses() {
        let text = r#"
[[file]]
path = "/www/index.html"
content = "hello\n"
mode = "0644"

[[command]]
run = "echo hi"

[[service]]
name = "web"
run = "httpd -f -p 8080 -h /www"
[service.check]
http = "http://127.0.0.1:8080/"
interval_secs = 1

[service.env]
DB = "10.0.0.5:5432"

[[service]]
name = "db"
lsb = "postgresql"
restart_gen = 3

[[sync]]
source = "/srv/data/"
target = "/mnt/copy"
exclude = ["*.tmp"]

[parameters]
role = "web"

[agent]
heartbeat_ms = 1000
"#;
        match detect(text.as_bytes()).unwrap() {
            Kind::Own(c) => {
                assert_eq!(c.agent.heartbeat_ms, Some(1000));
                assert_eq!(c.syncs[0].source, "/srv/data");
                assert_eq!((c.syncs[0].delay_ms, c.syncs[0].delete), (500, true));
                assert_eq!(c.syncs[0].exclude, ["*.tmp"]);
                assert_eq!(c.services[0].env["DB"], "10.0.0.5:5432");
                assert_eq!(c.services[1].lsb.as_deref(), Some("postgresql"));
                assert_eq!(c.services[1].restart_gen, 3);
                assert_eq!(c.files.len(), 1);
                assert_eq!(c.commands[0].timeout_secs, 300);
                assert_eq!(c.services[0].check.as_ref().unwrap().interval_secs, 1);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn mistakes_in_a_marked_config_are_reported() {
        for (bad, says) in [
            ("#cm-guest\n[[file]]\npath = \"rel\"\ncontent = \"x\"\n", "absolute"),
            ("#cm-guest\n[[file]]\npath = \"/a\"\n", "content"),
            ("#cm-guest\n[[file]]\npath = \"/a\"\ncontent = \"x\"\nmode = \"999\"\n", "octal"),
            ("#cm-guest\n[[service]]\nname = \"a\"\nrun = \"x\"\n[[service]]\nname = \"a\"\nrun = \"y\"\n", "unique"),
            ("#cm-guest\n[[service]]\nname = \"a\"\nrun = \"x\"\n[service.check]\ninterval_secs = 1\n", "exec or http"),
            ("#cm-guest\nunknown = 1\n", "unknown field"),
            ("#cm-guest\n[agent]\nheartbeat_secs = 1\n", "unknown field"),
            ("#cm-guest\n[agent]\nheartbeat_ms = 5\n", "heartbeat_ms"),
            ("#cm-guest\n[[service]]\nname = \"a\"\n", "run or lsb"),
            ("#cm-guest\n[[service]]\nname = \"sync:/a\"\nrun = \"x\"\n", "the syncs"),
            ("#cm-guest\n[[sync]]\nsource = \"/a\"\n", "missing field `target`"),
            ("#cm-guest\n[[sync]]\nsource = \"/a\"\ntarget = \"/a/b\"\n", "inside each other"),
            ("#cm-guest\n[[sync]]\nsource = \"/a\"\ntarget = \"/b\"\nevery = 1\n", "unknown field"),
            ("#cm-guest\n[[service]]\nname = \"a\"\nrun = \"x\"\nlsb = \"x\"\n", "run or lsb"),
            ("#cm-guest\n[[service]]\nname = \"a\"\nlsb = \"../../bin/sh\"\n", "init.d"),
            ("#cm-guest\n[[service]]\nname = \"a\"\nlsb = \".x\"\n", "init.d"),
            ("#cm-guest\n[[service]]\nname = \"a\"\nrun = \"x\"\n[service.env]\n\"A=B\" = \"1\"\n", "env"),
            ("#cm-guest\n[[service]]\nname = \"a\"\nrun = \"x\"\n[service.env]\n1A = \"1\"\n", "env"),
        ] {
            let e = detect(bad.as_bytes()).unwrap_err();
            assert!(e.0.contains(says), "{bad}: {e}");
        }
    }
}
