//! A test's own QMP client, for what only a test does to a guest: pause its
//! vCPUs (`stop`, a frozen guest) and let them go (`cont`). It talks to the
//! instance's monitor socket in its host's instance directory
//! (`HostProc::instance_dir(id)/qmp.sock`); the host connects there too, one
//! client at a time, so each call holds the socket only for its command.

use anyhow::{bail, Context};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// How long a call may wait for the monitor (the host may hold it).
const WAIT: Duration = Duration::from_secs(20);
/// The longest line read from QEMU.
const MAX_LINE: usize = 1 << 20;

/// Run `command` on the QMP socket `sock` and return its `return` value.
pub fn call(sock: &Path, command: &str) -> anyhow::Result<Value> {
    call_args(sock, command, None)
}

/// Run `command` with `arguments` on the QMP socket `sock`.
pub fn call_args(sock: &Path, command: &str, arguments: Option<Value>) -> anyhow::Result<Value> {
    let stream = connect(sock)?;
    stream.set_read_timeout(Some(WAIT))?;
    stream.set_write_timeout(Some(WAIT))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let greeting = read(&mut reader)?;
    if greeting.get("QMP").is_none() {
        bail!("not a QMP greeting: {greeting}");
    }
    execute(&mut reader, &mut writer, "qmp_capabilities", None)?;
    execute(&mut reader, &mut writer, command, arguments)
}

/// Connect, retrying while another client (the host) holds the monitor.
fn connect(sock: &Path) -> anyhow::Result<UnixStream> {
    let start = Instant::now();
    loop {
        match UnixStream::connect(sock) {
            Ok(s) => return Ok(s),
            Err(e) if start.elapsed() > WAIT => {
                return Err(e).with_context(|| format!("QMP socket {}", sock.display()))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

fn read(r: &mut BufReader<UnixStream>) -> anyhow::Result<Value> {
    let mut line = String::new();
    let n = std::io::Read::take(r, MAX_LINE as u64)
        .read_line(&mut line)
        .context("reading QMP")?;
    if n == 0 {
        bail!("QEMU closed the monitor");
    }
    serde_json::from_str(&line).with_context(|| format!("QMP sent {line:?}"))
}

fn execute(
    r: &mut BufReader<UnixStream>,
    w: &mut UnixStream,
    command: &str,
    arguments: Option<Value>,
) -> anyhow::Result<Value> {
    let mut msg = json!({ "execute": command });
    if let Some(a) = arguments {
        msg["arguments"] = a;
    }
    let mut msg = msg.to_string();
    msg.push('\n');
    w.write_all(msg.as_bytes())?;
    loop {
        let v = read(r)?;
        if let Some(ret) = v.get("return") {
            return Ok(ret.clone());
        }
        if let Some(e) = v.get("error") {
            bail!("QEMU refused {command}: {e}");
        }
        // An event (STOP, RESUME...): skip it.
    }
}
