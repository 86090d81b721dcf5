//! The system's OpenSSH as the transport: command lines for `ssh`, `scp`
//! and `rsync -e ssh`. `BatchMode=yes` (never a prompt); everything else is
//! left to the user's ssh configuration, which cm's own defaults only fill
//! in (`ssh_config.rs`), so `~/.ssh/config`, agents and known_hosts all work
//! as they do for ssh itself. Connections are reused through a control
//! master per node, whose socket `mux.rs` talks to directly.

use crate::inventory::{Node, SshSettings};
use crate::ssh_config::{ConfigError, RunConfig, DEFAULT_CONNECT_TIMEOUT};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Seconds a control master stays after its last session ends.
pub const CONTROL_PERSIST: u64 = 60;

#[derive(Debug, Clone)]
pub struct Transport {
    /// The `-F` file of this run: the user's configuration, then cm's defaults.
    config: Arc<RunConfig>,
    /// `--accept-new-host-keys`: `StrictHostKeyChecking=accept-new`.
    pub accept_new: bool,
    /// `--connect-timeout`, when given: then it beats the ssh configuration.
    pub connect_timeout: Option<u64>,
    /// Reuse connections (ControlMaster/ControlPersist) in this directory.
    pub control_dir: Option<PathBuf>,
}

impl Transport {
    /// `ssh_config`: `--ssh-config FILE`; `reuse`: keep a control master per node.
    pub fn new(
        ssh_config: Option<&Path>,
        accept_new: bool,
        connect_timeout: Option<u64>,
        reuse: bool,
    ) -> Result<Transport, ConfigError> {
        Ok(Transport {
            config: Arc::new(RunConfig::write(ssh_config)?),
            accept_new,
            connect_timeout,
            control_dir: if reuse {
                Self::default_control_dir()
            } else {
                None
            },
        })
    }

    /// How long cm itself waits for ssh to connect before giving up on a
    /// node where it has no other limit (`cm status`, the referee's tunnel).
    pub fn connect_limit(&self) -> Duration {
        Duration::from_secs(self.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT) + 5)
    }

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

    /// Options shared by ssh, scp and rsync's ssh, without the control
    /// master's. ssh keeps the first value it sees, so the order is the
    /// order of precedence: cm's flags given for this run, then the
    /// inventory's options for the node, then `BatchMode=yes`; the ssh
    /// configuration comes after all of them, and cm's defaults after it.
    /// `StrictHostKeyChecking` and `ConnectTimeout` are passed only when
    /// asked for (`--accept-new-host-keys`, `--connect-timeout`): an
    /// unknown host key is refused anyway, since BatchMode never asks.
    fn base_options(&self, s: &SshSettings) -> Vec<String> {
        let mut o = vec!["-F".to_string(), self.config.path().display().to_string()];
        let mut opt = |v: String| {
            o.push("-o".to_string());
            o.push(v);
        };
        if self.accept_new {
            opt("StrictHostKeyChecking=accept-new".into());
        }
        if let Some(t) = self.connect_timeout {
            opt(format!("ConnectTimeout={}", t.max(1)));
        }
        for extra in &s.options {
            opt(extra.clone());
        }
        opt("BatchMode=yes".into());
        if let Some(i) = &s.identity {
            o.push("-i".to_string());
            o.push(expand_home(i));
        }
        o
    }

    /// The control socket for a node: named for everything that decides
    /// how ssh connects (options, configuration, port, user, host), so a
    /// master is only ever shared by identical connections.
    pub fn control_path(&self, node: &Node) -> Option<PathBuf> {
        let dir = self.control_dir.as_ref()?;
        let mut h = Sha256::new();
        for part in self.base_options(&node.ssh).iter().skip(2) {
            h.update(part.as_bytes());
            h.update([0]);
        }
        h.update(self.config.fingerprint.as_bytes());
        h.update(format!("\0{:?}\0{:?}\0{}", node.ssh.port, node.ssh.user, node.host).as_bytes());
        let digest = h.finalize();
        Some(dir.join(crate::ssh_config::hex(&digest[..10])))
    }

    /// All options for a node: the control master's first (they must win:
    /// cm talks to that socket itself), then [`Self::base_options`].
    fn options(&self, node: &Node) -> Vec<String> {
        let mut o = Vec::new();
        if let Some(p) = self.control_path(node) {
            for v in [
                "ControlMaster=auto".to_string(),
                format!("ControlPath={}", p.display()),
                format!("ControlPersist={CONTROL_PERSIST}"),
            ] {
                o.push("-o".to_string());
                o.push(v);
            }
        }
        o.extend(self.base_options(&node.ssh));
        o
    }

    /// `ssh ... HOST -- CMD`.
    pub fn ssh(&self, node: &Node, command: &str) -> Vec<String> {
        let mut a = vec!["ssh".to_string()];
        a.extend(self.options(node));
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
        a.extend(self.base_options(&node.ssh));
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
        a.extend(self.options(node));
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
        ssh.extend(self.options(node));
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
        let mut t = Transport::new(Some(Path::new("none")), false, None, false).unwrap();
        t.control_dir = Some("/tmp/cm-ssh-0".into());
        t
    }

    #[test]
    fn only_batch_mode_is_forced_and_the_users_options_come_first() {
        let tr = t();
        let f = tr.config.path().display().to_string();
        let a = tr.ssh(&node(), "uptime").join(" ");
        let p = tr.control_path(&node()).unwrap();
        assert_eq!(
            a,
            format!(
                "ssh -o ControlMaster=auto -o ControlPath={} -o ControlPersist=60 -F {f} \
                 -o Compression=yes -o BatchMode=yes -p 2222 -l deploy 10.0.2.12 -- uptime",
                p.display()
            )
        );
        // Nothing that ssh_config may set is forced: no StrictHostKeyChecking,
        // no ConnectTimeout, unless asked for.
        assert!(!a.contains("StrictHostKeyChecking") && !a.contains("ConnectTimeout"));
        let mut tr = t();
        tr.accept_new = true;
        tr.connect_timeout = Some(4);
        let a = tr.ssh(&node(), "x").join(" ");
        assert!(
            a.contains(
                " -o StrictHostKeyChecking=accept-new -o ConnectTimeout=4 -o Compression=yes"
            ),
            "{a}"
        );
        assert_eq!(tr.connect_limit(), Duration::from_secs(9));
    }

    #[test]
    fn control_sockets_are_per_connection() {
        let tr = t();
        let (a, mut b) = (node(), node());
        assert_eq!(tr.control_path(&a), tr.control_path(&b));
        b.ssh.port = Some(2223);
        assert_ne!(tr.control_path(&a), tr.control_path(&b));
        b = node();
        b.ssh.options.push("User=other".into());
        assert_ne!(tr.control_path(&a), tr.control_path(&b));
        let p = tr.control_path(&a).unwrap();
        assert!(
            p.starts_with("/tmp/cm-ssh-0/") && p.as_os_str().len() < 40,
            "{p:?}"
        );
        let mut no = t();
        no.control_dir = None;
        assert!(no.control_path(&a).is_none());
        assert!(!no.ssh(&a, "x").join(" ").contains("Control"));
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
        assert!(r[2].starts_with("ssh -o ControlMaster=auto"), "{}", r[2]);
        assert!(r[2].contains("-o BatchMode=yes -p 2222"), "{}", r[2]);
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
