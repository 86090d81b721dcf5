//! A chain's copy on a machine reached over ssh (docs/host.md, "Backup
//! chains over ssh"): after each change the chain's directory is mirrored
//! there with rsync over OpenSSH (`PATH/CHAIN/`), and a chain whose host
//! lost backups the master recorded is fetched back from it. Blocking; run
//! with the chain held (`Chain::open`), so no `.part` or half-made backup
//! is ever sent.
//!
//! ssh never prompts (`BatchMode`) and never waits for ever (connect and
//! keep-alive timeouts, rsync's I/O timeout). The key and the known hosts
//! are files named by the agent's settings (their paths, never their
//! contents, are in argv). Nothing fetched is trusted: only files named as
//! a chain's are taken, no links, and every qcow2 must be standalone or
//! based on the file before it in the same chain, with its data in itself
//! (no external `data_file`, which could name any file of this host).

use super::chain::Chain;
use super::{img, BackupError};
use cm_api::backup_target::SshTarget;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The most of rsync's standard error kept for a message.
const MAX_ERR: u64 = 4 << 10;
/// Seconds rsync waits for data before giving up (`--timeout`).
const IO_TIMEOUT_SECS: u32 = 120;

/// How this host's agent reaches backup targets over ssh.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SshSettings {
    /// `-i FILE` (with `IdentitiesOnly`); None: ssh's own (`~/.ssh/id_*`
    /// of the user the agent runs as, or its ssh-agent).
    pub key: Option<PathBuf>,
    /// Only the host keys in this file are trusted (`StrictHostKeyChecking
    /// yes`); None: ssh's own known_hosts, a new host's key learnt on first
    /// use and refused if it ever changes (`accept-new`).
    pub known_hosts: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    #[error("cannot run rsync: {0}")]
    Spawn(std::io::Error),
    #[error("rsync to {target} failed: {message}")]
    Push { target: String, message: String },
    #[error("rsync from {target} failed: {message}")]
    Pull { target: String, message: String },
    #[error("a path with a quote cannot be given to ssh: {0}")]
    Quote(String),
    #[error("{target} holds {file}, which is not a backup of this chain: {why}")]
    Untrusted {
        target: String,
        file: String,
        why: String,
    },
    #[error(transparent)]
    Chain(#[from] BackupError),
}

impl SshSettings {
    /// rsync's `-e`: ssh with its options (rsync splits it on spaces and
    /// keeps quoted words whole).
    fn rsh(&self, t: &SshTarget) -> Result<String, MirrorError> {
        let quoted = |p: &Path| {
            let s = p.display().to_string();
            if s.contains('\'') || s.contains('"') {
                Err(MirrorError::Quote(s))
            } else {
                Ok(format!("'{s}'"))
            }
        };
        let mut rsh = String::from(
            "ssh -o BatchMode=yes -o ConnectTimeout=20 -o ServerAliveInterval=15 \
             -o ServerAliveCountMax=4 -o LogLevel=ERROR",
        );
        match &self.known_hosts {
            Some(f) => {
                rsh.push_str(" -o StrictHostKeyChecking=yes -o GlobalKnownHostsFile=/dev/null");
                rsh.push_str(&format!(" -o UserKnownHostsFile={}", quoted(f)?));
            }
            None => rsh.push_str(" -o StrictHostKeyChecking=accept-new"),
        }
        if let Some(k) = &self.key {
            rsh.push_str(&format!(" -o IdentitiesOnly=yes -i {}", quoted(k)?));
        }
        if let Some(p) = t.port {
            rsh.push_str(&format!(" -p {p}"));
        }
        Ok(rsh)
    }

    /// Make the copy at `t` (`PATH/CHAIN/`) what the chain holds: new and
    /// rewritten files first, put in place together at the end
    /// (`--delay-updates`), then what the chain no longer has removed.
    pub fn push(&self, chain: &Chain, name: &str, t: &SshTarget) -> Result<(), MirrorError> {
        let mut src = chain.dir().as_os_str().to_owned();
        src.push("/");
        let dst = remote(t, name);
        let mut cmd = self.rsync(t)?;
        cmd.args([
            "--recursive",
            "--times",
            "--mkpath",
            "--delete-after",
            "--delay-updates",
            "--exclude=/lock",
            "--exclude=/pending",
            "--exclude=*.part",
            "--",
        ])
        .arg(&src)
        .arg(&dst);
        run(cmd).map_err(|message| MirrorError::Push {
            target: t.to_string(),
            message,
        })
    }

    /// Fetch what the copy at `t` holds into the chain (files it has
    /// already are left as they are), then check every file fetched. The
    /// next backup of the disk is full: its bitmap's start is not known.
    pub fn pull(&self, chain: &Chain, name: &str, t: &SshTarget) -> Result<(), MirrorError> {
        let before: Vec<String> = chain.list()?.iter().map(|f| f.name()).collect();
        let src = remote(t, name);
        let mut dst = chain.dir().as_os_str().to_owned();
        dst.push("/");
        let mut cmd = self.rsync(t)?;
        // Only a chain's names, one level, regular files (no links, no
        // devices, no owners or modes from there).
        cmd.args([
            "--recursive",
            "--times",
            "--ignore-existing",
            "--no-links",
            "--include=/[0-9][0-9][0-9][0-9]-*.qcow2",
            "--include=/*.json",
            "--exclude=*",
            "--",
        ])
        .arg(&src)
        .arg(&dst);
        run(cmd).map_err(|message| MirrorError::Pull {
            target: t.to_string(),
            message,
        })?;
        let files = chain.list()?;
        for (i, f) in files.iter().enumerate() {
            if before.contains(&f.name()) {
                continue;
            }
            let backing = match img::info(&f.path, true) {
                Ok(info) if info.data_file.is_some() => {
                    let _ = std::fs::remove_file(&f.path);
                    let why = format!("its data is in another file, {:?}", info.data_file);
                    return Err(untrusted(t, f, why));
                }
                Ok(info) => info.backing,
                Err(e) => {
                    let _ = std::fs::remove_file(&f.path);
                    return Err(untrusted(t, f, e.to_string()));
                }
            };
            let ok = match (&backing, i.checked_sub(1).map(|p| &files[p])) {
                (None, _) => true,
                (Some(b), Some(prev)) => *b == prev.name(),
                (Some(_), None) => false,
            };
            if !ok {
                let _ = std::fs::remove_file(&f.path);
                let why = format!("its backing file is {backing:?}");
                return Err(untrusted(t, f, why));
            }
        }
        if let Some(last) = files.last() {
            if !before.contains(&last.name()) {
                chain.set_pending(last.id)?;
            }
        }
        Ok(())
    }

    #[cfg(test)]
    pub fn rsh_for_test(&self, t: &SshTarget) -> Result<String, MirrorError> {
        self.rsh(t)
    }

    fn rsync(&self, t: &SshTarget) -> Result<Command, MirrorError> {
        let mut cmd = Command::new("rsync");
        cmd.arg("-e")
            .arg(self.rsh(t)?)
            .arg(format!("--timeout={IO_TIMEOUT_SECS}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        Ok(cmd)
    }
}

/// rsync's `[user@]host:PATH/CHAIN/` (an IPv6 host in brackets: rsync
/// reads the host up to the first colon otherwise).
fn remote(t: &SshTarget, name: &str) -> String {
    let host = if t.host.contains(':') {
        format!("[{}]", t.host)
    } else {
        t.host.clone()
    };
    let user = t.user.as_ref().map(|u| format!("{u}@")).unwrap_or_default();
    format!("{user}{host}:{}/{name}/", t.path)
}

#[cfg(test)]
pub fn remote_for_test(t: &SshTarget, name: &str) -> String {
    remote(t, name)
}

fn untrusted(t: &SshTarget, f: &super::chain::BackupFile, why: String) -> MirrorError {
    MirrorError::Untrusted {
        target: t.to_string(),
        file: f.name(),
        why,
    }
}

/// Run rsync (killed by the kernel if this thread's agent dies); the
/// error is its standard error's start.
fn run(mut cmd: Command) -> Result<(), String> {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl in the child before exec; no memory is touched.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| MirrorError::Spawn(e).to_string())?;
    let mut err = Vec::new();
    if let Some(mut s) = child.stderr.take() {
        let _ = Read::by_ref(&mut s).take(MAX_ERR).read_to_end(&mut err);
        let _ = std::io::copy(&mut s, &mut std::io::sink());
    }
    let status = child.wait().map_err(|e| e.to_string())?;
    if status.success() {
        return Ok(());
    }
    let msg = String::from_utf8_lossy(&err).trim().replace('\n', "; ");
    Err(if msg.is_empty() {
        status.to_string()
    } else {
        msg
    })
}
