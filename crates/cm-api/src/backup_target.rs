//! Where a backup chain is kept (`CreateBackup.to`, `Backup.target`,
//! docs/storage.md "Backups to a host over ssh"): `host`, the backup
//! directory of the disk's own host, or `ssh://[user@]host[:port]/path`, a
//! machine reached with OpenSSH to which the disk's host mirrors the chain
//! (rsync) after each change. The parts are checked here, for the master
//! and the host alike, so that nothing in them reaches a shell or an
//! option: a user and host of letters, digits, `.`, `_`, `-` (not first),
//! an IPv6 host in brackets, and an absolute path of letters, digits and
//! `/ . _ - + = , @` without a `..` part.

use std::fmt;

/// The target that keeps a chain on the disk's own host.
pub const HOST: &str = "host";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Host,
    Ssh(SshTarget),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshTarget {
    pub user: Option<String>,
    /// A name, an IPv4 address, or an IPv6 address without its brackets.
    pub host: String,
    pub port: Option<u16>,
    /// Absolute; the chains are its subdirectories `PATH/CHAIN/`.
    pub path: String,
}

/// The longest target accepted.
pub const MAX_TARGET: usize = 512;

fn name_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && !s.starts_with('-')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

fn path_ok(p: &str) -> Result<(), String> {
    if !p.starts_with('/') {
        return Err("the path must be absolute (ssh://host/srv/backups)".into());
    }
    if let Some(c) = p
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "/._-+=,@".contains(*c)))
    {
        return Err(format!(
            "the path may hold letters, digits and / . _ - + = , @ only, not {c:?}"
        ));
    }
    if p.split('/').any(|part| part == "..") {
        return Err("the path may not hold '..'".into());
    }
    Ok(())
}

impl Target {
    /// `host` or `ssh://[user@]host[:port]/absolute/path`; the error says
    /// what is wrong, for a `400` on field `to`.
    pub fn parse(s: &str) -> Result<Target, String> {
        if s == HOST {
            return Ok(Target::Host);
        }
        if s.len() > MAX_TARGET {
            return Err(format!("a target is at most {MAX_TARGET} bytes"));
        }
        let Some(rest) = s.strip_prefix("ssh://") else {
            return Err(
                "a backup target is 'host' (the disk's own host) or ssh://[user@]host[:port]/path"
                    .into(),
            );
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => return Err("an ssh target needs a path: ssh://host/srv/backups".into()),
        };
        let (user, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => {
                if !name_ok(u) {
                    return Err(format!(
                        "the user '{u}' may hold letters, digits, '.', '_' and '-' (not first) only"
                    ));
                }
                (Some(u.to_string()), h)
            }
            None => (None, authority),
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (addr, after) = v6
                .split_once(']')
                .ok_or("an IPv6 host is written in brackets: ssh://[::1]:22/path")?;
            if addr.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(format!("'{addr}' is not an IPv6 address"));
            }
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':').ok_or("':PORT' after the brackets")?),
            };
            (addr.to_string(), port)
        } else {
            match hostport.split_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (hostport.to_string(), None),
            }
        };
        if !host.contains(':') && !name_ok(&host) {
            return Err(format!(
                "the host '{host}' may hold letters, digits, '.', '_' and '-' (not first) only"
            ));
        }
        let port = match port {
            None => None,
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 => Some(n),
                _ => return Err(format!("the port '{p}' is not 1-65535")),
            },
        };
        path_ok(path)?;
        let path = path.trim_end_matches('/');
        Ok(Target::Ssh(SshTarget {
            user,
            host,
            port,
            path: if path.is_empty() {
                "/".into()
            } else {
                path.into()
            },
        }))
    }
}

impl fmt::Display for SshTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ssh://")?;
        if let Some(u) = &self.user {
            write!(f, "{u}@")?;
        }
        if self.host.contains(':') {
            write!(f, "[{}]", self.host)?;
        } else {
            write!(f, "{}", self.host)?;
        }
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        write!(f, "{}", self.path)
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Host => write!(f, "{HOST}"),
            Target::Ssh(s) => s.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_read_as_people_write_them() {
        assert_eq!(Target::parse("host"), Ok(Target::Host));
        let t = Target::parse("ssh://backup@nas.example:2222/srv/cm/").unwrap();
        assert_eq!(
            t,
            Target::Ssh(SshTarget {
                user: Some("backup".into()),
                host: "nas.example".into(),
                port: Some(2222),
                path: "/srv/cm".into()
            })
        );
        assert_eq!(t.to_string(), "ssh://backup@nas.example:2222/srv/cm");
        let v6 = Target::parse("ssh://[::1]:22/b").unwrap();
        assert_eq!(v6.to_string(), "ssh://[::1]:22/b");
        assert_eq!(
            Target::parse("ssh://10.0.0.9/b").unwrap().to_string(),
            "ssh://10.0.0.9/b"
        );
    }

    #[test]
    fn nothing_reaches_a_shell_or_an_option() {
        for bad in [
            "",
            "nas:/srv",
            "ssh://nas",
            "ssh://nas/srv/../etc",
            "ssh://nas/srv/a b",
            "ssh://nas/srv/$(reboot)",
            "ssh://nas/srv;rm",
            "ssh://-oProxyCommand=x/srv",
            "ssh://-l@nas/srv",
            "ssh://nas:0/srv",
            "ssh://nas:99999/srv",
            "ssh://nas:x/srv",
            "ssh://[nas]/srv",
            "ssh://nas/srv\n",
            "ssh://nas/srv/é",
            "ssh://a@b@c/srv",
            "ssh://nas/srv/`id`",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad:?} was taken");
        }
    }
}
