//! The seed's `cloudManager.ini`:
//!
//! ```ini
//! [nodes]
//! A=10.0.2.12:80
//! [referee]
//! ip=10.0.2.151
//! config=/etc/apache2/includes/proxybalancer
//! clusterID=meuCluster
//! clusterFolder=cs
//! ```
//!
//! rust-ini does the syntax; what it cannot check (a bad address, a missing
//! key) is reported at the line found by looking the key up again.

use super::*;

fn at(path: &Path, line: usize, msg: impl Into<String>) -> InventoryError {
    InventoryError::At {
        path: path.display().to_string(),
        line,
        msg: msg.into(),
    }
}

/// The line of `key` in `[section]` (1-based), or of the section header.
fn line_of(text: &str, section: &str, key: Option<&str>) -> usize {
    let mut current = String::new();
    let mut header = 0;
    for (i, raw) in text.lines().enumerate() {
        let l = raw.trim();
        if let Some(s) = l.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            current = s.trim().to_string();
            if current == section {
                header = i + 1;
            }
            continue;
        }
        if current == section {
            if let Some(k) = key {
                if l.split(['=', ':']).next().map(str::trim) == Some(k) {
                    return i + 1;
                }
            }
        }
    }
    header
}

/// `HOST:PORT` (the port is the node's web port in the balancer).
fn parse_node(v: &str) -> Result<(String, Option<u16>), String> {
    let v = v.trim();
    if v.is_empty() {
        return Err("empty address".into());
    }
    match v.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && !h.ends_with(':') => {
            let port = p
                .parse::<u16>()
                .map_err(|_| format!("'{p}' is not a port"))?;
            if port == 0 {
                return Err("port 0".into());
            }
            Ok((
                h.trim_start_matches('[').trim_end_matches(']').to_string(),
                Some(port),
            ))
        }
        _ => Ok((v.to_string(), None)),
    }
}

pub fn parse(path: &Path, text: &str) -> Result<Inventory, InventoryError> {
    // rust-ini reads an unclosed `[section` to the end of the file; name its line.
    if let Some(i) = text
        .lines()
        .position(|l| l.trim().starts_with('[') && !l.trim().ends_with(']'))
    {
        return Err(at(path, i + 1, "section header without ]"));
    }
    let doc = ::ini::Ini::load_from_str(text).map_err(|e| at(path, e.line, e.msg.to_string()))?;
    let mut inv = Inventory::default();
    for (section, _) in doc.iter() {
        match section {
            None | Some("nodes") | Some("referee") | Some("groups") | Some("ssh") => {}
            Some(other) => {
                return Err(at(
                    path,
                    line_of(text, other, None),
                    format!("unknown section [{other}]"),
                ))
            }
        }
    }
    if doc.section(Some("nodes")).is_none() {
        return Err(at(path, 1, "no [nodes] section"));
    }
    // A second [nodes] section adds to the first (a name in both is an error).
    for (name, value) in doc.section_all(Some("nodes")).flat_map(|s| s.iter()) {
        let line = line_of(text, "nodes", Some(name));
        if !valid_name(name) {
            return Err(at(
                path,
                line,
                format!("'{name}' is not a node name (letters, digits, - _ .)"),
            ));
        }
        if inv.node(name).is_some() {
            return Err(at(path, line, format!("node {name} is listed twice")));
        }
        let (host, web_port) =
            parse_node(value).map_err(|m| at(path, line, format!("node {name}: {m}")))?;
        inv.nodes.push(Node {
            name: name.to_string(),
            host,
            web_port,
            ssh: SshSettings::default(),
            balancer_name: None,
        });
    }
    // Optional, beyond the seed: [groups] web=A,B and [ssh] user=/port=/identity=.
    if let Some(groups) = doc.section(Some("groups")) {
        for (g, members) in groups.iter() {
            let line = line_of(text, "groups", Some(g));
            let list: Vec<String> = members
                .split(',')
                .map(|m| m.trim().to_string())
                .filter(|m| !m.is_empty())
                .collect();
            for m in &list {
                if inv.node(m).is_none() {
                    return Err(at(path, line, format!("group {g}: unknown node {m}")));
                }
            }
            inv.groups.insert(g.to_string(), list);
        }
    }
    let mut ssh = SshSettings::default();
    if let Some(s) = doc.section(Some("ssh")) {
        for (k, v) in s.iter() {
            let line = line_of(text, "ssh", Some(k));
            match k {
                "user" => ssh.user = Some(v.to_string()),
                "port" => {
                    ssh.port = Some(
                        v.parse()
                            .map_err(|_| at(path, line, format!("ssh port '{v}' is not a port")))?,
                    )
                }
                "identity" => ssh.identity = Some(PathBuf::from(v)),
                "options" => {
                    ssh.options = v
                        .split(',')
                        .map(|o| o.trim().to_string())
                        .filter(|o| !o.is_empty())
                        .collect()
                }
                other => return Err(at(path, line, format!("unknown ssh setting '{other}'"))),
            }
        }
        for n in &mut inv.nodes {
            n.ssh = ssh.clone();
        }
    }
    if let Some(r) = doc.section(Some("referee")) {
        let get = |k: &str| {
            r.get(k)
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_string)
        };
        let need = |k: &str| {
            get(k).ok_or_else(|| {
                at(
                    path,
                    line_of(text, "referee", None),
                    format!("[referee] needs {k}="),
                )
            })
        };
        for (k, _) in r.iter() {
            if ![
                "ip",
                "config",
                "clusterID",
                "clusterFolder",
                "kind",
                "socket",
                "backend",
                "state_file",
                "check",
                "reload",
            ]
            .contains(&k)
            {
                return Err(at(
                    path,
                    line_of(text, "referee", Some(k)),
                    format!("unknown referee setting '{k}'"),
                ));
            }
        }
        let kind = match get("kind").as_deref() {
            // The seed's referee is Apache: cloudManager only knew apache2.
            None | Some("apache") => RefereeKind::Apache {
                config: PathBuf::from(need("config")?),
                cluster_id: need("clusterID")?,
                folder: need("clusterFolder")?,
                check_command: get("check").unwrap_or_else(|| "apache2ctl configtest".into()),
                reload_command: get("reload").unwrap_or_else(|| "apache2ctl graceful".into()),
            },
            Some("haproxy") => RefereeKind::Haproxy {
                socket: need("socket")?,
                backend: need("backend")?,
                state_file: get("state_file").map(PathBuf::from),
            },
            Some(other) => {
                return Err(at(
                    path,
                    line_of(text, "referee", Some("kind")),
                    format!("referee kind must be apache or haproxy, not '{other}'"),
                ))
            }
        };
        inv.referee = Some(Referee {
            host: get("ip").unwrap_or_else(|| "local".into()),
            ssh,
            kind,
        });
    }
    Ok(inv)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &str = "[nodes]\nA=10.0.2.12:80\nB=10.0.2.13:80\nC=10.0.2.14:81\nD=10.0.2.15:81\nE=10.0.2.16:8080\n\n[referee]\nip=10.0.2.151\nconfig=/etc/apache2/includes/proxybalancer\nclusterID=meuCluster\nclusterFolder=cs\n";

    #[test]
    fn the_seeds_file_reads_as_is() {
        let inv = parse(Path::new("/etc/cloudManager.ini"), SEED).unwrap();
        let names: Vec<&str> = inv.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["A", "B", "C", "D", "E"]);
        let e = inv.node("E").unwrap();
        assert_eq!((e.host.as_str(), e.web_port), ("10.0.2.16", Some(8080)));
        let r = inv.referee.unwrap();
        assert_eq!(r.host, "10.0.2.151");
        assert!(!r.is_local());
        match r.kind {
            RefereeKind::Apache {
                config,
                cluster_id,
                folder,
                ..
            } => {
                assert_eq!(config, PathBuf::from("/etc/apache2/includes/proxybalancer"));
                assert_eq!((cluster_id.as_str(), folder.as_str()), ("meuCluster", "cs"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn errors_name_the_line() {
        let p = Path::new("inv.ini");
        let e = parse(p, "[nodes]\nA=10.0.2.12:80\nB=10.0.2.13:eighty\n").unwrap_err();
        assert_eq!(e.to_string(), "inv.ini:3: node B: 'eighty' is not a port");
        let e = parse(
            p,
            "[nodes]\nA=1.2.3.4:80\n[referee]\nip=1.2.3.5\nclusterID=x\n",
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "inv.ini:3: [referee] needs config=");
        let e = parse(p, "[nodes]\nA=1.2.3.4\n[nodez]\n").unwrap_err();
        assert_eq!(e.to_string(), "inv.ini:3: unknown section [nodez]");
        let e = parse(p, "[nodes]\nA=1.2.3.4\n[groups]\nweb=A,Z\n").unwrap_err();
        assert_eq!(e.to_string(), "inv.ini:4: group web: unknown node Z");
        assert!(parse(p, "[nodes\nA=1\n")
            .unwrap_err()
            .to_string()
            .starts_with("inv.ini:1:"));
    }

    #[test]
    fn groups_ssh_and_an_haproxy_referee_are_optional_extras() {
        let text = "[nodes]\nA=10.0.0.1:80\nB=10.0.0.2:80\n[groups]\nweb=A,B\n[ssh]\nuser=deploy\nport=2222\n[referee]\nkind=haproxy\nip=local\nsocket=/run/haproxy/admin.sock\nbackend=web\n";
        let inv = parse(Path::new("x.ini"), text).unwrap();
        assert_eq!(inv.groups["web"], vec!["A", "B"]);
        assert_eq!(inv.node("A").unwrap().ssh.port, Some(2222));
        let r = inv.referee.unwrap();
        assert!(r.is_local());
        assert!(matches!(r.kind, RefereeKind::Haproxy { .. }));
    }
}
