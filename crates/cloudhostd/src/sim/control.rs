//! `--sim-control PATH`: a unix socket (mode 0600) through which a test
//! injects faults into simulated hosts, one command a line, each answered
//! with one line, `ok` or `error: ...` (docs/host.md, "Simulated hosts"):
//!
//! - `crash VM`: its QEMU "exits" (stopped, crashed);
//! - `freeze VM` / `thaw VM`: its guest stops beating / beats again;
//! - `service VM NAME STATE`: its guest reports service NAME as STATE;
//! - `mute HOST` / `unmute HOST`: the host sends no report and no long-poll
//!   (its agent SIGSTOPped) / speaks again;
//! - `vanish VM`: the host loses the VM (its next report lacks it);
//! - `hang VOLUME` / `unhang VOLUME`: the guest holding the volume never
//!   releases it (a detach times out after the simulated stop time, or a
//!   forced one restarts the VM without it) / releases it again.
//!
//! VM is an instance name or id, HOST a simulated host's name.

use super::host::SimHost;
use cm_api::words::ServiceStatus;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

/// The longest command line read.
const MAX_LINE: u64 = 1024;
/// A connection says nothing for this long: closed.
const IDLE: Duration = Duration::from_secs(300);

/// One command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Crash(String),
    Freeze(String),
    Thaw(String),
    Service {
        vm: String,
        name: String,
        state: ServiceStatus,
    },
    Mute(String),
    Unmute(String),
    Vanish(String),
    Hang(String),
    Unhang(String),
}

/// Read one command line.
pub fn parse(line: &str) -> Result<Command, String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let one = |c: fn(String) -> Command| match words.as_slice() {
        [_, arg] => Ok(c((*arg).to_string())),
        _ => Err(format!("{} takes one argument", words[0])),
    };
    match words.first().copied() {
        None => Err("an empty line".into()),
        Some("crash") => one(Command::Crash),
        Some("freeze") => one(Command::Freeze),
        Some("thaw") => one(Command::Thaw),
        Some("mute") => one(Command::Mute),
        Some("unmute") => one(Command::Unmute),
        Some("vanish") => one(Command::Vanish),
        Some("hang") => one(Command::Hang),
        Some("unhang") => one(Command::Unhang),
        Some("service") => match words.as_slice() {
            [_, vm, name, state] => Ok(Command::Service {
                vm: (*vm).to_string(),
                name: (*name).to_string(),
                state: ServiceStatus::from(*state),
            }),
            _ => Err("service takes VM NAME STATE".into()),
        },
        Some(other) => Err(format!(
            "unknown command {other:?} (crash, freeze, thaw, service, mute, unmute, vanish, \
             hang, unhang)"
        )),
    }
}

/// Run a command on the hosts (named); `Err` says why it did nothing.
pub fn execute(hosts: &[(String, Arc<SimHost>)], cmd: &Command) -> Result<(), String> {
    let on_vm = |vm: &str, f: &dyn Fn(&SimHost) -> Option<bool>| {
        let mut found = false;
        for (_, h) in hosts {
            match f(h) {
                Some(true) => return Ok(()),
                Some(false) => found = true,
                None => {}
            }
        }
        if found {
            Err(format!("{vm}: nothing to do (not running, or already so)"))
        } else {
            Err(format!("no simulated VM {vm}"))
        }
    };
    let host = |name: &str| {
        hosts
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, h)| h)
            .ok_or_else(|| format!("no simulated host {name}"))
    };
    match cmd {
        Command::Crash(vm) => on_vm(vm, &|h| h.with_vm(vm, |v, _| v.crash())),
        Command::Freeze(vm) => on_vm(vm, &|h| {
            let t = *h.timings();
            h.with_vm(vm, |v, now| v.freeze(now, &t, true))
        }),
        Command::Thaw(vm) => on_vm(vm, &|h| {
            let t = *h.timings();
            h.with_vm(vm, |v, now| v.freeze(now, &t, false))
        }),
        Command::Service { vm, name, state } => on_vm(vm, &|h| {
            h.with_vm(vm, |v, _| {
                v.set_service(name, state.clone());
                true
            })
        }),
        Command::Vanish(vm) => on_vm(vm, &|h| h.vanish(vm).then_some(true)),
        Command::Mute(name) => host(name).map(|h| h.set_muted(true)),
        Command::Unmute(name) => host(name).map(|h| h.set_muted(false)),
        Command::Hang(v) | Command::Unhang(v) => {
            let hang = matches!(cmd, Command::Hang(_));
            match hosts.iter().find_map(|(_, h)| h.set_hung(v, hang)) {
                Some(true) => Ok(()),
                Some(false) => Err(format!("{v}: nothing to do (already so)")),
                None => Err(format!("no simulated volume {v}")),
            }
        }
    }
}

/// Listen on `path` (replacing a stale socket) for as long as the process runs.
pub fn listen(path: &Path) -> std::io::Result<UnixListener> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let l = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    Ok(l)
}

pub async fn serve(listener: UnixListener, hosts: Arc<Vec<(String, Arc<SimHost>)>>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(session(stream, hosts.clone()));
            }
            Err(e) => {
                tracing::warn!("sim control: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn session(stream: UnixStream, hosts: Arc<Vec<(String, Arc<SimHost>)>>) {
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    loop {
        let mut line = String::new();
        let mut bounded = (&mut r).take(MAX_LINE);
        let n = match tokio::time::timeout(IDLE, bounded.read_line(&mut line)).await {
            Ok(Ok(n)) => n,
            _ => return,
        };
        if n == 0 {
            return;
        }
        let answer = if !line.ends_with('\n') && n as u64 >= MAX_LINE {
            // The rest of an over-long line is not a command either.
            "error: line too long\n".to_string()
        } else {
            match parse(line.trim()).and_then(|c| {
                tracing::info!("sim control: {}", line.trim());
                execute(&hosts, &c)
            }) {
                Ok(()) => "ok\n".to_string(),
                Err(e) => format!("error: {e}\n"),
            }
        };
        if w.write_all(answer.as_bytes()).await.is_err() {
            return;
        }
        if answer.starts_with("error: line too long") {
            return;
        }
    }
}
