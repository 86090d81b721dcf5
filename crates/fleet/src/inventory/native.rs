//! The native TOML inventory:
//!
//! ```toml
//! [ssh]                      # defaults for every node
//! user = "deploy"
//! identity = "~/.ssh/fleet"
//! options = ["Compression=yes"]
//!
//! [nodes.web01]
//! host = "10.0.2.12"
//! web_port = 80
//! groups = ["web"]
//! ssh = { port = 2222 }      # this node's own settings
//!
//! [groups.web]
//! ssh = { user = "www" }     # settings for the group's nodes
//!
//! [balancer]                 # HAProxy (the default) or Apache
//! kind = "haproxy"
//! host = "local"
//! socket = "/run/haproxy/admin.sock"
//! backend = "web"
//! state_file = "/var/lib/haproxy/server-state"
//! ```

use super::*;
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Ssh {
    user: Option<String>,
    port: Option<u16>,
    identity: Option<PathBuf>,
    #[serde(default)]
    options: Vec<String>,
}

impl From<Ssh> for SshSettings {
    fn from(s: Ssh) -> Self {
        SshSettings {
            user: s.user,
            port: s.port,
            identity: s.identity,
            options: s.options,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeEntry {
    host: String,
    web_port: Option<u16>,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    ssh: Ssh,
    /// Its server name in the balancer, when not the node's name.
    balancer_name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupEntry {
    #[serde(default)]
    nodes: Vec<String>,
    #[serde(default)]
    ssh: Ssh,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Balancer {
    #[serde(default = "haproxy")]
    kind: String,
    #[serde(default = "local")]
    host: String,
    socket: Option<String>,
    backend: Option<String>,
    state_file: Option<PathBuf>,
    config: Option<PathBuf>,
    cluster_id: Option<String>,
    folder: Option<String>,
    check_command: Option<String>,
    reload_command: Option<String>,
    #[serde(default)]
    ssh: Ssh,
}

fn haproxy() -> String {
    "haproxy".into()
}
fn local() -> String {
    "local".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    ssh: Ssh,
    #[serde(default)]
    nodes: BTreeMap<String, toml::Spanned<NodeEntry>>,
    #[serde(default)]
    groups: BTreeMap<String, GroupEntry>,
    balancer: Option<Balancer>,
}

/// The line of the first occurrence of `needle` (1-based), for errors found
/// after parsing.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .map(|i| i + 1)
        .unwrap_or(1)
}

/// The line (1-based) of byte `pos`.
fn line_at(text: &str, pos: usize) -> usize {
    text.as_bytes()[..pos.min(text.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

pub fn parse(path: &Path, text: &str) -> Result<Inventory, InventoryError> {
    let p = path.display().to_string();
    let at = |line: usize, msg: String| InventoryError::At {
        path: p.clone(),
        line,
        msg,
    };
    let file: File = toml::from_str(text).map_err(|e| {
        let line = e.span().map(|s| line_at(text, s.start)).unwrap_or(1);
        at(line, e.message().to_string())
    })?;
    let defaults: SshSettings = file.ssh.into();
    let mut inv = Inventory::default();
    let mut groups_of: Vec<(String, Vec<String>)> = Vec::new();
    // Nodes in the file's order: by where each one's table starts.
    let mut nodes: Vec<(String, toml::Spanned<NodeEntry>)> = file.nodes.into_iter().collect();
    nodes.sort_by_key(|(_, e)| e.span().start);
    for (name, entry) in nodes {
        let line = line_at(text, entry.span().start);
        if !valid_name(&name) {
            return Err(at(
                line,
                format!("'{name}' is not a node name (letters, digits, - _ .)"),
            ));
        }
        let entry = entry.into_inner();
        groups_of.push((name.clone(), entry.groups.clone()));
        inv.nodes.push(Node {
            name: name.clone(),
            host: entry.host,
            web_port: entry.web_port,
            ssh: entry.ssh.into(),
            balancer_name: entry.balancer_name,
        });
    }
    for (g, entry) in &file.groups {
        for m in &entry.nodes {
            if inv.node(m).is_none() {
                return Err(at(
                    line_of(text, &format!("groups.{g}")),
                    format!("group {g}: unknown node {m}"),
                ));
            }
        }
        inv.groups.insert(g.clone(), entry.nodes.clone());
    }
    for (node, gs) in groups_of {
        for g in gs {
            if !valid_name(&g) {
                return Err(at(
                    line_of(text, &format!("nodes.{node}")),
                    format!("node {node}: bad group name '{g}'"),
                ));
            }
            let members = inv.groups.entry(g).or_default();
            if !members.contains(&node) {
                members.push(node.clone());
            }
        }
    }
    // SSH settings: the node's own, then its groups' (in name order), then the defaults.
    let group_ssh: BTreeMap<String, SshSettings> = file
        .groups
        .into_iter()
        .map(|(g, e)| (g, SshSettings::from(e.ssh)))
        .collect();
    for n in &mut inv.nodes {
        let mut s = n.ssh.clone();
        for (g, members) in &inv.groups {
            if members.contains(&n.name) {
                if let Some(gs) = group_ssh.get(g) {
                    s = s.or(gs);
                }
            }
        }
        n.ssh = s.or(&defaults);
    }
    if let Some(b) = file.balancer {
        let line = line_of(text, "[balancer]");
        let need =
            |v: Option<String>, k: &str| v.ok_or_else(|| at(line, format!("[balancer] needs {k}")));
        let kind = match b.kind.as_str() {
            "haproxy" => RefereeKind::Haproxy {
                socket: need(b.socket, "socket")?,
                backend: need(b.backend, "backend")?,
                state_file: b.state_file,
            },
            "apache" => RefereeKind::Apache {
                config: b
                    .config
                    .ok_or_else(|| at(line, "[balancer] needs config".into()))?,
                cluster_id: need(b.cluster_id, "cluster_id")?,
                folder: need(b.folder, "folder")?,
                check_command: b
                    .check_command
                    .unwrap_or_else(|| "apache2ctl configtest".into()),
                reload_command: b
                    .reload_command
                    .unwrap_or_else(|| "apache2ctl graceful".into()),
            },
            other => {
                return Err(at(
                    line,
                    format!("balancer kind must be haproxy or apache, not '{other}'"),
                ))
            }
        };
        inv.referee = Some(Referee {
            host: b.host,
            ssh: SshSettings::from(b.ssh).or(&defaults),
            kind,
        });
    }
    Ok(inv)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"
[ssh]
user = "deploy"
options = ["Compression=yes"]

[nodes.web01]
host = "10.0.2.12"
web_port = 80
groups = ["web"]
ssh = { port = 2222 }

[nodes.web02]
host = "10.0.2.13"
web_port = 80

[nodes.db1]
host = "10.0.2.20"

[groups.web]
nodes = ["web02"]
ssh = { user = "www", options = ["ServerAliveInterval=5"] }

[balancer]
socket = "/run/haproxy/admin.sock"
backend = "web"
"#;

    #[test]
    fn nodes_groups_ssh_layers_and_balancer() {
        let inv = parse(Path::new("fleet.toml"), TEXT).unwrap();
        let names: Vec<&str> = inv.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["web01", "web02", "db1"]);
        assert_eq!(inv.groups["web"], vec!["web02", "web01"]);
        let w1 = &inv.node("web01").unwrap().ssh;
        assert_eq!((w1.user.as_deref(), w1.port), (Some("www"), Some(2222)));
        assert_eq!(w1.options, vec!["Compression=yes", "ServerAliveInterval=5"]);
        let db = &inv.node("db1").unwrap().ssh;
        assert_eq!((db.user.as_deref(), db.port), (Some("deploy"), None));
        match &inv.referee.as_ref().unwrap().kind {
            RefereeKind::Haproxy { backend, .. } => assert_eq!(backend, "web"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn errors_name_the_line() {
        let p = Path::new("fleet.toml");
        let e = parse(p, "[nodes.a]\nhost = \"x\"\nweb_port = \"eighty\"\n").unwrap_err();
        // The line of the bad value itself.
        assert!(
            e.to_string().starts_with("fleet.toml:3: invalid type"),
            "{e}"
        );
        let e = parse(
            p,
            "[nodes.a]\nhost = \"x\"\n\n[groups.g]\nnodes = [\"zz\"]\n",
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "fleet.toml:4: group g: unknown node zz");
        let e = parse(p, "[nodes.a]\nhost = \"x\"\n[bogus]\n").unwrap_err();
        assert!(e.to_string().starts_with("fleet.toml:3:"), "{e}");
        let e = parse(p, "[nodes.a]\nhost = \"x\"\n[balancer]\nkind = \"nginx\"\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "fleet.toml:3: balancer kind must be haproxy or apache, not 'nginx'"
        );
    }
}
