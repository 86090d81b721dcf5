//! A whole cloud for one test: the real `cloudmasterd`, real `cloudhostd`s
//! and the real `cm`, in a temporary directory, on free loopback ports.
//! Dropping it kills every process it started, QEMUs included.

use crate::paths::{bin, image_dir};
use crate::wait::{free_port, wait_until};
use anyhow::{bail, Context};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// How the master is started.
#[derive(Debug, Clone)]
pub struct MasterOpts {
    pub report_interval_secs: u64,
    pub host_down_after_secs: u64,
    pub extra: Vec<String>,
}

impl Default for MasterOpts {
    fn default() -> Self {
        // Fast enough for tests, slow enough not to flap on a busy machine.
        MasterOpts {
            report_interval_secs: 1,
            host_down_after_secs: 5,
            extra: vec![],
        }
    }
}

/// How a host is started.
#[derive(Debug, Clone)]
pub struct HostOpts {
    pub accel: String,
    pub memory_mib: Option<u64>,
    pub extra: Vec<String>,
    /// Pass `--join-token-file MASTER/join.token` (else give the token in `env`).
    pub join_token_file: bool,
    /// Extra environment of the agent.
    pub env: Vec<(String, String)>,
}

impl Default for HostOpts {
    fn default() -> Self {
        // Tests use TCG (nested KVM hangs on these machines); the accel test probes.
        HostOpts {
            accel: "tcg".into(),
            memory_mib: None,
            extra: vec![],
            join_token_file: true,
            env: vec![],
        }
    }
}

#[derive(Debug)]
pub struct HostProc {
    pub name: String,
    pub data_dir: PathBuf,
    pub opts: HostOpts,
    child: Option<Child>,
}

impl HostProc {
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// The directory of one instance on this host.
    pub fn instance_dir(&self, id: &str) -> PathBuf {
        self.data_dir.join("instances").join(id)
    }

    pub fn log(&self) -> PathBuf {
        self.data_dir.with_extension("log")
    }
}

#[derive(Debug)]
pub struct Cloud {
    pub dir: tempfile::TempDir,
    pub url: String,
    pub port: u16,
    pub token: String,
    pub master_opts: MasterOpts,
    master: Option<Child>,
    hosts: BTreeMap<String, HostProc>,
}

/// The output of one `cm` run.
#[derive(Debug)]
pub struct CmOut {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl CmOut {
    fn from(o: Output) -> CmOut {
        CmOut {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

fn spawn_logged(cmd: &mut Command, log: &Path) -> anyhow::Result<Child> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    let f2 = f.try_clone()?;
    Ok(cmd.stdin(Stdio::null()).stdout(f).stderr(f2).spawn()?)
}

impl Cloud {
    /// A master with default test settings and no hosts.
    pub fn start() -> anyhow::Result<Cloud> {
        Cloud::start_with(MasterOpts::default())
    }

    pub fn start_with(opts: MasterOpts) -> anyhow::Result<Cloud> {
        // A short path: QEMU's unix sockets live under it (108-byte limit).
        let dir = tempfile::Builder::new().prefix("cm").tempdir_in("/tmp")?;
        let mut cloud = Cloud {
            dir,
            url: String::new(),
            port: 0,
            token: String::new(),
            master_opts: opts,
            master: None,
            hosts: BTreeMap::new(),
        };
        cloud.start_master()?;
        let token_file = cloud.master_dir().join("admin.token");
        cloud.token = std::fs::read_to_string(&token_file)
            .with_context(|| format!("reading {}", token_file.display()))?
            .trim()
            .to_string();
        Ok(cloud)
    }

    pub fn master_dir(&self) -> PathBuf {
        self.dir.path().join("master")
    }

    pub fn runtime_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    pub fn master_log(&self) -> PathBuf {
        self.dir.path().join("master.log")
    }

    /// Start (or start again) the master on its port with its data dir.
    pub fn start_master(&mut self) -> anyhow::Result<()> {
        for attempt in 0..5 {
            if self.port == 0 || attempt > 0 {
                self.port = free_port();
            }
            self.url = format!("http://127.0.0.1:{}", self.port);
            let o = &self.master_opts;
            let mut cmd = Command::new(bin("cloudmasterd"));
            cmd.arg("--data-dir")
                .arg(self.master_dir())
                .arg("--listen")
                .arg(format!("127.0.0.1:{}", self.port))
                .arg("--report-interval")
                .arg(o.report_interval_secs.to_string())
                .arg("--host-down-after")
                .arg(o.host_down_after_secs.to_string())
                .args(&o.extra)
                .env("CM_RUNTIME_DIR", self.runtime_dir());
            let mut child = spawn_logged(&mut cmd, &self.master_log())?;
            let port = self.port;
            // It listens first and then writes the pointer file that `cm`
            // finds it by (cm_api::local): wait for both.
            let pointer = self.runtime_dir().join(cm_api::local::POINTER_FILE);
            let up = wait_until("the master to listen", Duration::from_secs(20), || {
                if let Ok(Some(_)) = child.try_wait() {
                    return Some(false);
                }
                std::net::TcpStream::connect(("127.0.0.1", port))
                    .ok()
                    .filter(|_| pointer.exists())
                    .map(|_| true)
            })?;
            if up {
                self.master = Some(child);
                return Ok(());
            }
            // It exited: most likely the port was taken meanwhile; try another.
            let _ = child.wait();
            if self.hosts.values().any(|h| h.child.is_some()) {
                bail!(
                    "the master did not start (see {})",
                    self.master_log().display()
                );
            }
        }
        bail!(
            "the master did not start (see {})",
            self.master_log().display()
        )
    }

    /// Send `signal` to the master and wait for it to exit.
    pub fn stop_master(&mut self, signal: i32) {
        if let Some(mut c) = self.master.take() {
            // SAFETY: signalling our own child.
            unsafe {
                // A pid is at most PID_MAX_LIMIT (2^22): cast_signed never wraps.
                libc::kill(c.id().cast_signed(), signal);
            }
            let _ = c.wait();
        }
    }

    pub fn master_pid(&self) -> Option<u32> {
        self.master.as_ref().map(|c| c.id())
    }

    /// Start a host and wait until the master lists it as ready.
    pub fn add_host(&mut self, name: &str, opts: HostOpts) -> anyhow::Result<()> {
        self.spawn_host_as(name, name, opts)?;
        self.wait_host_state(name, "ready", Duration::from_secs(60))
    }

    /// Start an agent named `name` with its own data dir `DIR/key`, known to
    /// the test as `key`, without waiting for anything (a twin of a host).
    pub fn spawn_host_as(&mut self, key: &str, name: &str, opts: HostOpts) -> anyhow::Result<()> {
        let mut host = HostProc {
            name: name.to_string(),
            data_dir: self.dir.path().join(key),
            opts,
            child: None,
        };
        self.spawn_host(&mut host)?;
        self.hosts.insert(key.to_string(), host);
        Ok(())
    }

    /// The exit code of a host agent that has exited (None while it runs).
    pub fn host_exit(&mut self, key: &str) -> Option<i32> {
        let h = self.hosts.get_mut(key)?;
        let status = h.child.as_mut()?.try_wait().ok()??;
        h.child = None;
        Some(status.code().unwrap_or(-1))
    }

    /// Send a signal to a host agent without waiting (SIGSTOP, SIGCONT).
    pub fn signal_host(&self, key: &str, signal: i32) {
        if let Some(pid) = self.hosts.get(key).and_then(|h| h.pid()) {
            // SAFETY: signalling our own child.
            unsafe {
                // A pid is at most PID_MAX_LIMIT (2^22): cast_signed never wraps.
                libc::kill(pid.cast_signed(), signal);
            }
        }
    }

    /// Change the arguments a stopped host agent is started with next.
    pub fn set_host_extra(&mut self, key: &str, extra: Vec<String>) {
        if let Some(h) = self.hosts.get_mut(key) {
            h.opts.extra = extra;
        }
    }

    fn spawn_host(&self, host: &mut HostProc) -> anyhow::Result<()> {
        let mut cmd = Command::new(bin("cloudhostd"));
        cmd.arg("--master").arg(&self.url);
        if host.opts.join_token_file {
            cmd.arg("--join-token-file")
                .arg(self.master_dir().join("join.token"));
        }
        cmd.envs(host.opts.env.iter().map(|(k, v)| (k, v)))
            .arg("--name")
            .arg(&host.name)
            .arg("--data-dir")
            .arg(&host.data_dir)
            .arg("--accel")
            .arg(&host.opts.accel);
        // Forwards listen on 127.0.0.1 unless the test binds them elsewhere
        // (a loopback address of its own: parallel clouds' deployables take
        // host ports from the same range).
        if !host.opts.extra.iter().any(|a| a == "--forward-bind") {
            cmd.arg("--forward-bind").arg("127.0.0.1");
        }
        cmd.args(&host.opts.extra);
        if let Some(m) = host.opts.memory_mib {
            cmd.arg("--memory-mib").arg(m.to_string());
        }
        host.child = Some(spawn_logged(&mut cmd, &host.log())?);
        Ok(())
    }

    pub fn host(&self, name: &str) -> &HostProc {
        &self.hosts[name]
    }

    /// Send `signal` to a host agent (its VMs keep running) and reap it.
    pub fn stop_host(&mut self, name: &str, signal: i32) {
        if let Some(h) = self.hosts.get_mut(name) {
            if let Some(mut c) = h.child.take() {
                // SAFETY: signalling our own child.
                unsafe {
                    // A pid is at most PID_MAX_LIMIT (2^22): cast_signed never wraps.
                    libc::kill(c.id().cast_signed(), signal);
                }
                let _ = c.wait();
            }
        }
    }

    /// Start a stopped host agent again with the same settings.
    pub fn restart_host(&mut self, name: &str) -> anyhow::Result<()> {
        let mut h = self.hosts.remove(name).context("no such host")?;
        let res = self.spawn_host(&mut h);
        self.hosts.insert(name.to_string(), h);
        res
    }

    /// Run `cm` against this cloud.
    pub fn cm(&self, args: &[&str]) -> CmOut {
        self.cm_env(args, &[])
    }

    pub fn cm_env(&self, args: &[&str], env: &[(&str, &str)]) -> CmOut {
        let mut cmd = Command::new(bin("cm"));
        cmd.args(args)
            .env("CM_URL", &self.url)
            .env("CM_TOKEN", &self.token)
            .env("CM_RUNTIME_DIR", self.runtime_dir())
            .env("HOME", self.dir.path())
            .env_remove("CM_CONFIG")
            .env_remove("XDG_CONFIG_HOME");
        for (k, v) in env {
            cmd.env(k, v);
        }
        match cmd.output() {
            Ok(o) => CmOut::from(o),
            Err(e) => CmOut {
                code: -1,
                stdout: String::new(),
                stderr: format!("cannot run cm: {e}"),
            },
        }
    }

    /// Run `cm` against this cloud from the directory `cwd`.
    pub fn cm_in(&self, cwd: &Path, args: &[&str]) -> CmOut {
        let mut cmd = Command::new(bin("cm"));
        cmd.args(args)
            .current_dir(cwd)
            .env("CM_URL", &self.url)
            .env("CM_TOKEN", &self.token)
            .env("CM_RUNTIME_DIR", self.runtime_dir())
            .env("HOME", self.dir.path())
            .env_remove("CM_CONFIG")
            .env_remove("XDG_CONFIG_HOME");
        match cmd.output() {
            Ok(o) => CmOut::from(o),
            Err(e) => CmOut {
                code: -1,
                stdout: String::new(),
                stderr: format!("cannot run cm: {e}"),
            },
        }
    }

    /// Run `cm` as a person on the master's machine would: no URL or token
    /// given, only the master's pointer file (in `runtime_dir`) and `HOME`.
    pub fn cm_local(&self, args: &[&str], runtime_dir: &Path, home: &Path) -> CmOut {
        let mut cmd = Command::new(bin("cm"));
        cmd.args(args)
            .env_remove("CM_URL")
            .env_remove("CM_TOKEN")
            .env_remove("CM_CONFIG")
            .env_remove("XDG_CONFIG_HOME")
            .env("CM_RUNTIME_DIR", runtime_dir)
            .env("HOME", home);
        match cmd.output() {
            Ok(o) => CmOut::from(o),
            Err(e) => CmOut {
                code: -1,
                stdout: String::new(),
                stderr: format!("cannot run cm: {e}"),
            },
        }
    }

    /// Run `cm`, fail the test with its stderr when it fails.
    pub fn cm_ok(&self, args: &[&str]) -> String {
        let out = self.cm(args);
        assert_eq!(
            out.code,
            0,
            "cm {} failed: {}{}",
            args.join(" "),
            out.stderr,
            out.stdout
        );
        out.stdout
    }

    /// `cm --json ...`, parsed.
    pub fn cm_json(&self, args: &[&str]) -> Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        let s = self.cm_ok(&a);
        serde_json::from_str(&s)
            .unwrap_or_else(|e| panic!("cm {} gave no JSON ({e}): {s}", args.join(" ")))
    }

    /// Register an image named `name` made of two small files that are no
    /// kernel: for simulated hosts, which never boot it (`cm image add`).
    pub fn add_fake_image(&self, name: &str) {
        let dir = self.dir.path().to_path_buf();
        let (k, i) = (dir.join("fake-vmlinuz"), dir.join("fake-initrd"));
        std::fs::write(&k, b"not a kernel").expect("write a fake kernel");
        std::fs::write(&i, b"not an initrd").expect("write a fake initrd");
        let (k, i) = (k.to_string_lossy(), i.to_string_lossy());
        self.cm_ok(&["image", "add", name, "--kernel", &k, "--initrd", &i]);
    }

    /// Register the tiny test image (`make image`) as `cm-test`: `cm image
    /// add` uploads its kernel and initrd to the master.
    pub fn add_test_image(&self) -> anyhow::Result<()> {
        let dir = image_dir();
        let kernel = dir.join("vmlinuz");
        let initrd = dir.join("initrd.img");
        if !kernel.exists() || !initrd.exists() {
            bail!(
                "the test image is missing in {} (run make image)",
                dir.display()
            );
        }
        let out = self.cm(&[
            "image",
            "add",
            "cm-test",
            "--kernel",
            &kernel.to_string_lossy(),
            "--initrd",
            &initrd.to_string_lossy(),
            "--cmdline",
            "quiet",
        ]);
        if out.code != 0 {
            bail!("cm image add failed: {}", out.stderr);
        }
        Ok(())
    }

    /// Register a disk image from a file on the master's machine.
    pub fn add_disk_image(&self, name: &str, disk: &Path) -> anyhow::Result<()> {
        let out = self.cm(&["image", "add", name, "--disk", &disk.to_string_lossy()]);
        if out.code != 0 {
            bail!("cm image add {name} failed: {}", out.stderr);
        }
        Ok(())
    }

    /// The serial console of an instance, through its socket on its host.
    pub fn console(&self, instance: &str) -> anyhow::Result<crate::console::Console> {
        let i = self.instance(instance).context("no such instance")?;
        let host = i.host.context("instance has no host")?;
        let dir = self.host(&host).instance_dir(&i.id.to_string());
        crate::console::Console::connect(&dir.join("console.sock"), &dir.join("console.log"))
    }

    /// Every QEMU pid started for this cloud (from the hosts' pidfiles).
    pub fn qemu_pids(&self) -> Vec<u32> {
        let mut out = Vec::new();
        for h in self.hosts.values() {
            let Ok(entries) = std::fs::read_dir(h.data_dir.join("instances")) else {
                continue;
            };
            for e in entries.flatten() {
                if let Some(pid) = std::fs::read_to_string(e.path().join("qemu.pid"))
                    .ok()
                    .and_then(|s| s.trim().parse::<u32>().ok())
                {
                    if is_qemu(pid) {
                        out.push(pid);
                    }
                }
            }
        }
        out
    }
}

/// Whether `pid` is a live cloudmaster QEMU.
pub fn is_qemu(pid: u32) -> bool {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let zombie = stat
        .rsplit(')')
        .next()
        .map(|r| r.trim_start().starts_with('Z'))
        .unwrap_or(true);
    !zombie
        && String::from_utf8_lossy(&cmdline).contains("qemu-system")
        && String::from_utf8_lossy(&cmdline).contains("cm-")
}

impl Drop for Cloud {
    fn drop(&mut self) {
        let names: Vec<String> = self.hosts.keys().cloned().collect();
        for n in names {
            self.stop_host(&n, libc::SIGKILL);
        }
        self.stop_master(libc::SIGKILL);
        for pid in self.qemu_pids() {
            // SAFETY: a QEMU this cloud started (checked by its command line).
            unsafe {
                // A pid is at most PID_MAX_LIMIT (2^22): cast_signed never wraps.
                libc::kill(pid.cast_signed(), libc::SIGKILL);
            }
        }
        // A QEMU its host had just launched may not have written its pidfile
        // yet: find those by their sockets' paths, under this cloud's dir.
        let dir = format!("{}/", self.dir.path().display());
        for _ in 0..3 {
            std::thread::sleep(Duration::from_millis(200));
            for (pid, cmdline) in crate::run::pids_mentioning(&dir) {
                if cmdline.contains("qemu-system") {
                    // SAFETY: a QEMU of this cloud (its paths are under our dir).
                    unsafe {
                        // A pid is at most PID_MAX_LIMIT (2^22): cast_signed never wraps.
                        libc::kill(pid.cast_signed(), libc::SIGKILL);
                    }
                }
            }
        }
        if std::env::var_os("CM_KEEP_TEST_DIR").is_some() || std::thread::panicking() {
            let kept = self.dir.path().to_path_buf();
            eprintln!(
                "test cloud kept in {} (logs: master.log, HOST.log)",
                kept.display()
            );
            let d = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tempdir"));
            let _ = d.keep();
        }
    }
}
