//! The system's OpenSSH as the transport: command lines for `ssh`, `scp`
//! and `rsync -e ssh`. `BatchMode=yes` (never a prompt), host keys checked
//! strictly unless the user opts in to accepting new ones, and connections
//! reused through a control master, so `~/.ssh/config`, agents and
//! known_hosts all work as they do for ssh itself.

use crate::inventory::{Node, SshSettings};
use std::path::PathBuf;

#[derive(Debug, Clone)]
pub struct Transport {
    /// `--ssh-config FILE`: passed to ssh as `-F`.
    pub ssh_config: Option<PathBuf>,
    /// `--accept-new-host-keys`: `StrictHostKeyChecking=accept-new`.
    pub accept_new: bool,
    /// Seconds to wait for a connection.
    pub connect_timeout: u64,
    /// Reuse connections (ControlMaster/ControlPersist) in this directory.
    pub control_dir: Option<PathBuf>,
}

impl Transport {
    /// The per-user directory for control sockets (short: socket paths are
    /// limited to about 104 bytes).
    pub fn default_control_dir() -> Option<PathBuf> {
        // SAFETY: getuid has no preconditions.
        let uid = unsafe { libc::getuid() };
        let dir = PathBuf::from(format!("/tmp/cm-ssh-{uid}"));
        std::fs::create_dir_all(&dir).ok()?;
        let meta = std::fs::symlink_metadata(&dir).ok()?;
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        // Never use a directory someone else owns or can write to.
        if !meta.is_dir() || meta.uid() != uid {
            return None;
        }
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).ok()?;
        Some(dir)
    }

    /// `-o` options shared by ssh, scp and rsync's ssh.
    fn options(&self, s: &SshSettings) -> Vec<String> {
        let mut o = Vec::new();
        if let Some(f) = &self.ssh_config {
            o.push("-F".to_string());
            o.push(f.display().to_string());
        }
        let mut opt = |v: String| {
            o.push("-o".to_string());
            o.push(v);
        };
        opt("BatchMode=yes".into());
        opt(format!("ConnectTimeout={}", self.connect_timeout.max(1)));
        opt(format!(
            "StrictHostKeyChecking={}",
            if self.accept_new { "accept-new" } else { "yes" }
        ));
        if let Some(d) = &self.control_dir {
            opt("ControlMaster=auto".into());
            opt(format!("ControlPath={}/%C", d.display()));
            opt("ControlPersist=60".into());
        }
        for extra in &s.options {
            opt(extra.clone());
        }
        if let Some(i) = &s.identity {
            o.push("-i".to_string());
            o.push(expand_home(i));
        }
        o
    }

    /// `ssh ... HOST -- CMD`.
    pub fn ssh(&self, node: &Node, command: &str) -> Vec<String> {
        let mut a = vec!["ssh".to_string()];
        a.extend(self.options(&node.ssh));
        if let Some(p) = node.ssh.port {
            a.extend(["-p".to_string(), p.to_string()]);
        }
        if let Some(u) = &node.ssh.user {
            a.extend(["-l".to_string(), u.clone()]);
        }
        a.push(node.host.clone());
        a.push("--".to_string());
        a.push(command.to_string());
        a
    }

    /// `ssh -N -L LOCAL:REMOTE HOST`: a local unix socket forwarded to
    /// REMOTE (a socket path, or `host:port`) as seen from the node, on a
    /// connection of its own (the first `-o` given wins, so these two
    /// override the shared control master).
    pub fn local_forward(&self, node: &Node, local: &str, remote: &str) -> Vec<String> {
        let mut a = vec![
            "ssh".to_string(),
            "-o".to_string(),
            "ControlMaster=no".to_string(),
            "-o".to_string(),
            "ControlPath=none".to_string(),
        ];
        a.extend(self.options(&node.ssh));
        if let Some(p) = node.ssh.port {
            a.extend(["-p".to_string(), p.to_string()]);
        }
        if let Some(u) = &node.ssh.user {
            a.extend(["-l".to_string(), u.clone()]);
        }
        a.extend([
            "-N".to_string(),
            "-o".to_string(),
            "ExitOnForwardFailure=yes".to_string(),
            "-L".to_string(),
            format!("{local}:{remote}"),
            node.host.clone(),
        ]);
        a
    }

    /// `scp ... SRC... [USER@]HOST:DEST`.
    pub fn scp(
        &self,
        node: &Node,
        extra: &[String],
        sources: &[String],
        dest: &str,
    ) -> Vec<String> {
        let mut a = vec!["scp".to_string(), "-q".to_string()];
        a.extend(self.options(&node.ssh));
        if let Some(p) = node.ssh.port {
            a.extend(["-P".to_string(), p.to_string()]);
        }
        a.extend(extra.iter().cloned());
        a.extend(sources.iter().cloned());
        a.push(format!("{}:{dest}", remote(node)));
        a
    }

    /// `rsync -e "ssh ..." RSYNC_ARGS... [USER@]HOST:DEST`.
    pub fn rsync(&self, node: &Node, args: &[String], dest: &str) -> Vec<String> {
        let mut ssh = vec!["ssh".to_string()];
        ssh.extend(self.options(&node.ssh));
        if let Some(p) = node.ssh.port {
            ssh.extend(["-p".to_string(), p.to_string()]);
        }
        let mut a = vec![
            "rsync".to_string(),
            "-e".to_string(),
            ssh.iter().map(|s| quote(s)).collect::<Vec<_>>().join(" "),
        ];
        a.extend(args.iter().cloned());
        a.push(format!("{}:{dest}", remote(node)));
        a
    }
}

/// `[USER@]HOST`, with brackets around an IPv6 address.
fn remote(node: &Node) -> String {
    let host = if node.host.contains(':') {
        format!("[{}]", node.host)
    } else {
        node.host.clone()
    };
    match &node.ssh.user {
        Some(u) => format!("{u}@{host}"),
        None => host,
    }
}

fn expand_home(p: &std::path::Path) -> String {
    let s = p.display().to_string();
    match (s.strip_prefix("~/"), std::env::var("HOME")) {
        (Some(rest), Ok(home)) => format!("{home}/{rest}"),
        _ => s,
    }
}

/// Quote for the shell rsync hands `-e` to.
pub fn quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:%@,+".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> Node {
        Node {
            name: "A".into(),
            host: "10.0.2.12".into(),
            web_port: Some(80),
            ssh: SshSettings {
                user: Some("deploy".into()),
                port: Some(2222),
                identity: None,
                options: vec!["Compression=yes".into()],
            },
            balancer_name: None,
        }
    }

    fn t() -> Transport {
        Transport {
            ssh_config: Some("/etc/fleet/ssh.cfg".into()),
            accept_new: false,
            connect_timeout: 5,
            control_dir: Some("/tmp/cm-ssh-0".into()),
        }
    }

    #[test]
    fn ssh_is_batch_strict_and_reuses_connections() {
        let a = t().ssh(&node(), "uptime").join(" ");
        assert!(a.starts_with("ssh -F /etc/fleet/ssh.cfg -o BatchMode=yes -o ConnectTimeout=5 -o StrictHostKeyChecking=yes"), "{a}");
        assert!(
            a.contains(
                "-o ControlMaster=auto -o ControlPath=/tmp/cm-ssh-0/%C -o ControlPersist=60"
            ),
            "{a}"
        );
        assert!(
            a.ends_with("-o Compression=yes -p 2222 -l deploy 10.0.2.12 -- uptime"),
            "{a}"
        );
        let mut tr = t();
        tr.accept_new = true;
        assert!(tr
            .ssh(&node(), "x")
            .join(" ")
            .contains("StrictHostKeyChecking=accept-new"));
    }

    #[test]
    fn scp_and_rsync_address_user_at_host() {
        let a = t()
            .scp(
                &node(),
                &["-r".into()],
                &["a.html".into(), "b.html".into()],
                "/var/www/teste/",
            )
            .join(" ");
        assert!(
            a.contains("-P 2222 -r a.html b.html deploy@10.0.2.12:/var/www/teste/"),
            "{a}"
        );
        let r = t().rsync(&node(), &["-az".into(), "site/".into()], "/var/www/");
        assert_eq!(r[0], "rsync");
        assert!(
            r[2].starts_with("ssh -F /etc/fleet/ssh.cfg -o BatchMode=yes"),
            "{}",
            r[2]
        );
        assert!(r[2].contains("-p 2222"));
        assert_eq!(&r[3..], ["-az", "site/", "deploy@10.0.2.12:/var/www/"]);
        let mut n = node();
        n.host = "fd00::1".into();
        n.ssh.user = None;
        assert!(t().scp(&n, &[], &["x".into()], "/y").last().unwrap() == "[fd00::1]:/y");
    }

    #[test]
    fn quoting_for_rsync_e() {
        assert_eq!(quote("BatchMode=yes"), "BatchMode=yes");
        assert_eq!(quote("/tmp/a b"), "'/tmp/a b'");
        assert_eq!(quote("it's"), "'it'\\''s'");
    }
}
