//! Simulated hosts (`cloudhostd --simulate N`) for tests, and their fault
//! injection socket (`--sim-control PATH`, docs/host.md "Simulated hosts").

use crate::HostOpts;
use anyhow::{bail, Context};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `n` simulated hosts that prepare in 20 ms, boot in 200 ms, stop in
/// 100 ms and beat every 500 ms (unless a health policy says otherwise),
/// taking faults on `control`.
pub fn opts(n: u32, memory_mib: u64, control: &Path) -> HostOpts {
    let mut extra: Vec<String> = [
        "--simulate",
        &n.to_string(),
        "--sim-prepare-ms",
        "20",
        "--sim-boot-ms",
        "200",
        "--sim-stop-ms",
        "100",
        "--sim-beat-ms",
        "500",
        "--sim-control",
    ]
    .map(String::from)
    .to_vec();
    extra.push(control.to_string_lossy().into_owned());
    HostOpts {
        memory_mib: Some(memory_mib),
        extra,
        ..Default::default()
    }
}

/// The simulator's control socket.
#[derive(Debug, Clone)]
pub struct SimControl {
    pub path: PathBuf,
}

impl SimControl {
    pub fn new(path: impl Into<PathBuf>) -> SimControl {
        SimControl { path: path.into() }
    }

    /// Send one command (`crash VM`, `freeze VM`, `thaw VM`, `service VM
    /// NAME STATE`, `mute HOST`, `unmute HOST`, `vanish VM`); an answer
    /// other than `ok` is an error.
    pub fn send(&self, command: &str) -> anyhow::Result<()> {
        let s = UnixStream::connect(&self.path)
            .with_context(|| format!("sim control {}", self.path.display()))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut w = s.try_clone()?;
        w.write_all(format!("{command}\n").as_bytes())?;
        let mut answer = String::new();
        BufReader::new(s).read_line(&mut answer)?;
        match answer.trim() {
            "ok" => Ok(()),
            other => bail!("sim control: {command}: {other}"),
        }
    }
}

/// A master (1 s reports, hosts down after 5 s) with `hosts` simulated
/// hosts `sim-1`… of 4 GiB each, all ready, and a fake kernel image `img`:
/// the cloud the volume and snapshot API tests drive.
pub fn cloud(hosts: u32) -> (crate::Cloud, SimControl) {
    let mut cloud = crate::Cloud::start_with(crate::MasterOpts {
        report_interval_secs: 1,
        host_down_after_secs: 5,
        extra: vec![],
    })
    .expect("a master");
    let control = SimControl::new(cloud.dir.path().join("sim.sock"));
    cloud
        .spawn_host_as("sim", "sim", opts(hosts, 4096, &control.path))
        .expect("simulated hosts");
    for n in 1..=hosts {
        cloud
            .wait_host_state(&format!("sim-{n}"), "ready", Duration::from_secs(60))
            .expect("a ready simulated host");
    }
    cloud.add_fake_image("img");
    (cloud, control)
}
