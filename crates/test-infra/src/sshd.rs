//! Real sshd servers on loopback for fleet tests and benchmarks (issue 4).
//!
//! Each node is its own `sshd -D` with its own host key, listening on its
//! own loopback address (127.77.0.10, .11, ...) and the fleet's one port, as
//! the nodes of a `cloudManager.ini` all listen on port 22. Each runs in a
//! private mount namespace where [`NODE_DIR`] is that node's own directory,
//! so files copied "to B" land in B's directory and nowhere else. The test
//! key pair, a known_hosts with every host key and an ssh_config using both
//! are in the fleet's temporary directory (ssh gets it with `-F`).
//!
//! Each node also has its own home for root (an empty directory mounted on
//! `/root` in its namespace), as a separate machine would: a session's
//! shell must not run this machine's `/root/.bashrc` (Debian's bash reads
//! it for every command sshd starts), whose cost would be paid once per
//! node on this machine's CPUs instead of on each node's own.

use crate::wait::{free_port_on_all, wait_until};
use anyhow::{bail, Context, Result};
use std::io::Read;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The path that is each node's own directory, as seen over its SSH.
pub const NODE_DIR: &str = "/srv/cm-node";

#[derive(Debug)]
pub struct SshNode {
    pub name: String,
    pub addr: String,
    /// What the node sees as [`NODE_DIR`].
    pub root: PathBuf,
    /// What the node sees as root's home, `/root`.
    pub home: PathBuf,
    pub host_key_line: String,
    child: Option<Child>,
    config: PathBuf,
    log: PathBuf,
}

#[derive(Debug)]
pub struct SshFleet {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub nodes: Vec<SshNode>,
    /// `-F` file: user root, the fleet's port, the test key, its known_hosts.
    pub ssh_config: PathBuf,
    pub known_hosts: PathBuf,
    pub key: PathBuf,
}

fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn keygen(path: &Path) -> Result<String> {
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "cm-test", "-f"])
        .arg(path))?;
    Ok(std::fs::read_to_string(path.with_extension("pub"))?
        .trim()
        .to_string())
}

/// True when something answers with an SSH banner.
fn banner(addr: &str) -> bool {
    let Ok(mut s) =
        TcpStream::connect_timeout(&addr.parse().expect("addr"), Duration::from_secs(1))
    else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut buf = [0u8; 4];
    s.read_exact(&mut buf).is_ok() && &buf == b"SSH-"
}

impl SshNode {
    fn spawn(&mut self) -> Result<()> {
        let log = std::fs::File::create(&self.log)?;
        let script = format!(
            "mount --bind '{}' {NODE_DIR} && mount --bind '{}' /root && exec /usr/sbin/sshd -D -e -f '{}'",
            self.root.display(),
            self.home.display(),
            self.config.display()
        );
        let child = Command::new("unshare")
            .args([
                "--mount",
                "--propagation",
                "private",
                // Its own PID namespace, ended with unshare: stopping a node
                // ends every session too (as when a machine goes away),
                // not only the listening daemon.
                "--pid",
                "--fork",
                "--kill-child",
                "--",
                "sh",
                "-c",
                &script,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting sshd")?;
        self.child = Some(child);
        Ok(())
    }

    /// Start this node's sshd again after `stop`, and wait for it.
    pub fn restart(&mut self, port: u16) -> Result<()> {
        self.stop();
        self.spawn()?;
        let a = format!("{}:{port}", self.addr);
        wait_until(&format!("sshd {a}"), Duration::from_secs(20), || {
            banner(&a).then_some(())
        })
        .with_context(|| self.log())
    }

    /// Stop this node's sshd (it becomes unreachable).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The sshd's log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl SshFleet {
    /// Start sshd nodes with these names (127.77.0.10, .11, ... in order).
    pub fn start(names: &[&str]) -> Result<SshFleet> {
        if names.len() > 240 {
            bail!("at most 240 nodes");
        }
        std::fs::create_dir_all(NODE_DIR)?;
        std::fs::create_dir_all("/run/sshd")?;
        let dir = tempfile::Builder::new().prefix("cm-sshd-").tempdir()?;
        let addrs: Vec<String> = (0..names.len())
            .map(|i| format!("127.77.0.{}", 10 + i))
            .collect();
        let port = free_port_on_all(&addrs);
        let key = dir.path().join("id_test");
        let user_pub = keygen(&key)?;
        let authorized = dir.path().join("authorized_keys");
        std::fs::write(&authorized, format!("{user_pub}\n"))?;
        let mut nodes = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let ndir = dir.path().join(format!("node-{name}"));
            let root = ndir.join("root");
            std::fs::create_dir_all(&root)?;
            let home = ndir.join("home");
            std::fs::create_dir_all(&home)?;
            let host_pub = keygen(&ndir.join("host_key"))?;
            let addr = format!("127.77.0.{}", 10 + i);
            let config = ndir.join("sshd_config");
            std::fs::write(
                &config,
                format!(
                    "ListenAddress {addr}:{port}\nHostKey {hk}\nAuthorizedKeysFile {auth}\nPidFile none\nStrictModes no\nUsePAM no\n\
                     PasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n\
                     Subsystem sftp internal-sftp\nMaxStartups 200\nMaxSessions 200\nLogLevel ERROR\nAllowStreamLocalForwarding yes\nAllowTcpForwarding yes\nAcceptEnv LANG LC_* CM_TEST_*\n",
                    hk = ndir.join("host_key").display(),
                    auth = authorized.display()
                ),
            )?;
            let host_key_line = format!(
                "[{addr}]:{port} {}",
                host_pub
                    .split_whitespace()
                    .take(2)
                    .collect::<Vec<_>>()
                    .join(" ")
            );
            let mut node = SshNode {
                name: name.to_string(),
                addr,
                root,
                home,
                host_key_line,
                child: None,
                config,
                log: ndir.join("sshd.log"),
            };
            node.spawn()?;
            nodes.push(node);
        }
        let known_hosts = dir.path().join("known_hosts");
        let lines: Vec<&str> = nodes.iter().map(|n| n.host_key_line.as_str()).collect();
        std::fs::write(&known_hosts, lines.join("\n") + "\n")?;
        let ssh_config = dir.path().join("ssh_config");
        std::fs::write(
            &ssh_config,
            format!(
                "Host *\n  User root\n  Port {port}\n  IdentityFile {}\n  IdentitiesOnly yes\n  UserKnownHostsFile {}\n  GlobalKnownHostsFile /dev/null\n  LogLevel ERROR\n",
                key.display(),
                known_hosts.display()
            ),
        )?;
        let fleet = SshFleet {
            dir,
            port,
            nodes,
            ssh_config,
            known_hosts,
            key,
        };
        for n in &fleet.nodes {
            let a = format!("{}:{port}", n.addr);
            wait_until(
                &format!("sshd {} on {a}", n.name),
                Duration::from_secs(20),
                || banner(&a).then_some(()),
            )
            .with_context(|| n.log())?;
        }
        Ok(fleet)
    }

    pub fn node(&self, name: &str) -> &SshNode {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .expect("no such node")
    }

    pub fn node_mut(&mut self, name: &str) -> &mut SshNode {
        self.nodes
            .iter_mut()
            .find(|n| n.name == name)
            .expect("no such node")
    }

    /// A `cloudManager.ini` for these nodes (the seed's layout) with an
    /// `[ssh]` section for the fleet's port, and `web_port` per node.
    pub fn ini(&self, web_port: impl Fn(&SshNode) -> u16, extra: &str) -> String {
        let mut s = String::from("[nodes]\n");
        for n in &self.nodes {
            s.push_str(&format!("{}={}:{}\n", n.name, n.addr, web_port(n)));
        }
        s.push_str(&format!("\n[ssh]\nport={}\n{extra}", self.port));
        s
    }
}

impl Drop for SshFleet {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            n.stop();
        }
    }
}

/// What a `cm` run printed and how it ended.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Run {
    /// `--json` output: one object per line.
    pub fn json_lines(&self) -> Vec<serde_json::Value> {
        self.stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }
}

/// Run the built `cm` as `program` (a link named `cmscp`, `cmdo`... is made
/// in a temporary directory for the old names; a path runs that program)
/// with `args` and `env`, in `cwd`.
pub fn cm_as(program: &str, args: &[&str], env: &[(&str, &str)], cwd: Option<&Path>) -> Run {
    let links = tempfile::tempdir().expect("tempdir");
    let exe = if program == "cm" {
        crate::paths::bin("cm")
    } else if program.contains('/') {
        // Another program (a shell that runs cm), by its path.
        std::path::PathBuf::from(program)
    } else {
        let l = links.path().join(program);
        std::os::unix::fs::symlink(crate::paths::bin("cm"), &l).expect("link");
        l
    };
    let mut cmd = Command::new(&exe);
    cmd.args(args)
        .env_remove("CM_INVENTORY")
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    if let Some(d) = cwd {
        cmd.current_dir(d);
    }
    let t = std::time::Instant::now();
    let out = cmd.output().expect("running cm");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        elapsed: t.elapsed(),
    }
}
