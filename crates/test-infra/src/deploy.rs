//! A deployable driven as its user drives it (issue 11): the real `cm` on
//! the master's machine, finding the master by its pointer file (no URL,
//! token or settings given), answers read as the API's types; and the one
//! probe of "serving" (an HTTP 200 from a URL), shared by the VM tests and
//! `cmbench heal`.

use crate::cloud::{Cloud, CmOut};
use crate::paths::bin;
use crate::wait::wait_until;
use cm_api::deploy::{Deployable, Slot};
use cm_api::event::Event;
use cm_api::instance::{Instance, InstanceState};
use cm_api::words::DeployableState;
use serde::de::DeserializeOwned;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// One user of one deployable: `cm` with a home of its own, on the
/// master's machine (it outlives a restart of the master).
#[derive(Debug)]
pub struct DeployUser {
    pub name: String,
    dir: PathBuf,
    runtime: PathBuf,
    home: PathBuf,
}

impl DeployUser {
    pub fn new(cloud: &Cloud, name: &str) -> DeployUser {
        let home = cloud.dir.path().join("user-home");
        std::fs::create_dir_all(&home).expect("the user's home");
        DeployUser {
            name: name.to_string(),
            dir: cloud.dir.path().to_path_buf(),
            runtime: cloud.runtime_dir(),
            home,
        }
    }

    /// `cm ARGS` as a person on the master's machine runs it: no URL,
    /// token or settings file, only the master's pointer file and `HOME`.
    pub fn cm(&self, args: &[&str]) -> CmOut {
        let out = Command::new(bin("cm"))
            .args(args)
            .env_remove("CM_URL")
            .env_remove("CM_TOKEN")
            .env_remove("CM_CONFIG")
            .env_remove("XDG_CONFIG_HOME")
            .env("CM_RUNTIME_DIR", &self.runtime)
            .env("HOME", &self.home)
            .output();
        match out {
            Ok(o) => CmOut {
                code: o.status.code().unwrap_or(-1),
                stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
            },
            Err(e) => CmOut {
                code: -1,
                stdout: String::new(),
                stderr: format!("cannot run cm: {e}"),
            },
        }
    }

    /// `cm ARGS`, failing the test with its output when it fails.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cm(args);
        assert_eq!(
            out.code,
            0,
            "cm {}: {}{}",
            args.join(" "),
            out.stderr,
            out.stdout
        );
        out.stdout
    }

    /// `cm --json ARGS`, read as the API's type `T`.
    pub fn json<T: DeserializeOwned>(&self, args: &[&str]) -> T {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        let s = self.ok(&a);
        serde_json::from_str(&s).unwrap_or_else(|e| {
            panic!(
                "cm {}: not a {} ({e}): {s}",
                args.join(" "),
                std::any::type_name::<T>()
            )
        })
    }

    /// `cm deploy apply --file` of `spec` (YAML), written beside the cloud.
    pub fn apply(&self, spec: &str) -> String {
        let file = self.dir.join(format!("{}.yaml", self.name));
        std::fs::write(&file, spec).expect("write the spec");
        self.ok(&["deploy", "apply", "--file", &file.to_string_lossy()])
    }

    /// `cm deploy show NAME`.
    pub fn show(&self) -> Deployable {
        self.json(&["deploy", "show", &self.name])
    }

    /// The deployable once it is `healthy`, waiting at most `limit`.
    pub fn wait_healthy(&self, what: &str, limit: Duration) -> Deployable {
        wait_until(what, limit, || {
            let d = self.show();
            (d.state == DeployableState::Healthy).then_some(d)
        })
        .unwrap_or_else(|e| panic!("{e}: {:#?}", self.show()))
    }

    /// Its events, as `cm --json deploy events NAME` prints them.
    pub fn events(&self) -> Vec<Event> {
        self.ok(&["--json", "deploy", "events", &self.name])
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not an Event ({e}): {l}")))
            .collect()
    }

    /// The seq of its last event so far (0 without any).
    pub fn last_seq(&self) -> i64 {
        self.events().iter().map(|e| e.seq).max().unwrap_or(0)
    }

    /// The first event after `after` (a seq) that `ok` accepts.
    pub fn wait_event(
        &self,
        after: i64,
        what: &str,
        limit: Duration,
        ok: impl Fn(&Event) -> bool,
    ) -> Event {
        wait_until(what, limit, || {
            self.events().into_iter().find(|e| e.seq > after && ok(e))
        })
        .unwrap_or_else(|e| panic!("{e}; events: {:#?}", self.events()))
    }

    /// `cm instance show NAME`.
    pub fn instance(&self, name: &str) -> Instance {
        self.json(&["instance", "show", name])
    }

    /// The deployable's instances that are not being deleted, as
    /// `cm instance list` shows them.
    pub fn live_instances(&self) -> Vec<Instance> {
        let prefix = format!("{}-", self.name);
        let mut v: Vec<Instance> = self.json::<Vec<Instance>>(&["instance", "list"]);
        v.retain(|i| i.name.starts_with(&prefix) && i.state != InstanceState::Deleting);
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// `http://ADDR:PORT/` of the first port forward of `slot`'s instance,
    /// at its host's forward address (`cm host show`).
    pub fn url_of(&self, slot: &Slot) -> String {
        let inst = self.instance(slot.instance.as_deref().expect("the slot has an instance"));
        let host = inst.host.clone().expect("the instance has a host");
        let h: cm_api::host::Host = self.json(&["host", "show", &host]);
        let addr = h.forward_addr.unwrap_or_else(|| "127.0.0.1".into());
        let port = inst.ports.first().expect("a forwarded port").host;
        format!("http://{addr}:{port}/")
    }
}

/// The VM tests' deployable: `web` web assemblies (busybox httpd serving
/// /srv on 8080, an http check every second, a forwarded port; a restart
/// budget of 0, so a failure replaces them) and 1 stateful `db` (httpd on
/// 5432, an exec check); 1 s heartbeats, a 3 s timeout.
pub fn shop(name: &str, web: u32) -> String {
    format!(
        "\
name: {name}
policy:
  heartbeat_interval: 1s
  heartbeat_timeout: 3s
assemblies:
  - name: web
    image: cm-test
    flavor: m1.tiny
    count: {web}
    ports: [{{name: http, guest: 8080}}]
    escalation: {{failures: 0, period: 10m}}
    config: |
      [[file]]
      path = \"/srv/index.html\"
      content = \"web\\n\"
    services:
      - name: httpd
        run: httpd -f -p 8080 -h /srv
        check: {{http: \"http://127.0.0.1:8080/\", interval: 1s, timeout: 1s}}
  - name: db
    image: cm-test
    flavor: m1.tiny
    stateful: true
    services:
      - name: db
        run: httpd -f -p 5432 -h /tmp
        check: {{exec: pidof httpd, interval: 1s, timeout: 1s}}
"
    )
}

/// The slot named `name` (`web-2`) of `d`.
pub fn slot<'d>(d: &'d Deployable, name: &str) -> &'d Slot {
    d.slots
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no slot {name} in {d:#?}"))
}

/// Whether `url` answers an HTTP GET with 200 within `timeout`: the one
/// probe of "serving" (a guest's port forward, or a balancer in front).
pub fn serving(url: &str, timeout: Duration) -> bool {
    let Ok(client) = cm_client::reqwest::blocking::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .build()
    else {
        return false;
    };
    client
        .get(url)
        .send()
        .is_ok_and(|r| r.status().as_u16() == 200)
}

/// Poll [`serving`] every 50 ms until `url` answers 200; how long it took
/// from `since`, or an error after `limit`.
pub fn wait_serving(url: &str, since: Instant, limit: Duration) -> anyhow::Result<Duration> {
    let start = Instant::now();
    loop {
        if serving(url, Duration::from_secs(2)) {
            return Ok(since.elapsed());
        }
        if start.elapsed() > limit {
            anyhow::bail!("{url} did not answer 200 within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An event's time, as a duration since `t` (a wall-clock instant on this
/// machine, the master's clock too): how long after `t` the master saw it.
pub fn event_after(e: &Event, t: SystemTime) -> Duration {
    let at = e.time.unix_timestamp_nanos();
    let t = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let ns = u64::try_from((at - i128::try_from(t).unwrap_or(i128::MAX)).max(0)).unwrap_or(0);
    Duration::from_nanos(ns)
}

/// The QEMU processes of a cloud on this machine, checked as such.
pub fn qemu_count(cloud: &Cloud) -> usize {
    cloud.qemu_pids().len()
}

/// Send SIGKILL to the QEMU of `inst` (from `cm instance show`'s pid).
pub fn kill_qemu(inst: &Instance) {
    let pid = inst.pid.expect("a running instance shows its QEMU pid");
    assert!(
        crate::cloud::is_qemu(pid),
        "pid {pid} of {} is no QEMU",
        inst.name
    );
    let pid = i32::try_from(pid).expect("a pid fits an i32");
    // SAFETY: kill(2) of a QEMU this test's cloud started (checked above).
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
}

/// Host options whose port forwards listen on a loopback address of this
/// cloud's own (`127.88.X.Y` from the master's port, the second number
/// `88 + n` for its n-th host): deployables of parallel clouds take their
/// host ports from the same range (30000-32767) and must not meet.
pub fn own_forwards(cloud: &Cloud, n: u8) -> crate::cloud::HostOpts {
    let [hi, lo] = cloud.port.to_be_bytes();
    let addr = format!("127.{}.{hi}.{}", 88u8.saturating_add(n), lo.max(1));
    crate::cloud::HostOpts {
        extra: vec!["--forward-bind".into(), addr],
        ..Default::default()
    }
}

/// [`shop`]'s spec with its web service in the pool `BALANCER`/`web` (the
/// master's `--balancer BALANCER=unix:SOCKET`), and the page `/health` in
/// each web guest for the balancer's own check (`Haproxy::start_empty`'s
/// backend checks `GET /health`: the operator's side of a pool).
pub fn pooled(spec: &str, balancer: &str) -> String {
    let out = spec
        .replace(
            "        run: httpd -f -p 8080 -h /srv\n",
            &format!(
                "        run: httpd -f -p 8080 -h /srv\n        \
                 pool: {{balancer: {balancer}, backend: web, port: http}}\n"
            ),
        )
        .replace(
            "    config: |\n",
            "    config: |\n      [[file]]\n      path = \"/srv/health\"\n      content = \"ok\\n\"\n",
        );
    assert!(
        out.contains("pool: {") && out.contains("/srv/health"),
        "not shop's spec: {spec}"
    );
    out
}

/// Hosts `h1`..`hN` of real `cloudhostd`, each forwarding on a loopback
/// address of this cloud's own ([`own_forwards`]), and the test image.
pub fn add_hosts(cloud: &mut Cloud, n: u8) -> anyhow::Result<()> {
    for i in 0..n {
        let opts = own_forwards(cloud, i);
        cloud.add_host(&format!("h{}", i + 1), opts)?;
    }
    cloud.add_test_image()
}
