//! One task per VM: it alone touches the VM's QEMU process, QMP socket and
//! files, and moves them one step at a time towards the desired spec.
//! Launching it is in `launch`.

mod launch;
mod rootsnap;

pub use rootsnap::ROOT_DRIVE;

use super::attachments::{self, Attachments, Next};
use super::local::LocalState;
use super::qemu::{self, VmPaths};
use super::{qmp, VmContext};
use cm_api::agent::{DesiredInstance, ObservedInstance, ObservedState, Power};
use cm_api::words::{KnownStopReason as Why, StopReason};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::unix::AsyncFd;
use tokio::sync::watch;
use uuid::Uuid;

/// What the agent knows the master wants for this VM.
#[derive(Debug, Clone, PartialEq)]
pub enum Desired {
    /// Not heard from the master yet (after an agent start): only observe.
    Unknown,
    Present(Box<DesiredInstance>),
    /// The master recorded its deletion: delete it and its files.
    Removed,
    /// Not in the master's desired state (or the master refused this host):
    /// stop it, keep its files, start it never; the reason says why.
    Orphaned(Why),
}

pub struct Vm {
    id: Uuid,
    paths: VmPaths,
    ctx: Arc<VmContext>,
    local: LocalState,
    pid: Option<u32>,
    pidfd: Option<AsyncFd<OwnedFd>>,
    /// Set while an ACPI shutdown runs: when QEMU is forced off.
    stop_deadline: Option<Instant>,
    /// The reason recorded when the shutdown under way completes.
    stop_why: Why,
    state: ObservedState,
    since: time::OffsetDateTime,
    /// When `state` last changed, on the watchdog's clock.
    since_at: tokio::time::Instant,
    /// Reads the guest agent's heartbeats (vm/guest.rs).
    relay: Option<tokio::task::JoinHandle<()>>,
    /// The boot proxy (vm/bootproxy.rs) and the console log's trimmer
    /// (vm/console.rs).
    helpers: Vec<tokio::task::JoinHandle<()>>,
    /// Its volumes (vm/attachments.rs).
    attach: Attachments,
    /// Its root disk's snapshots (actor/rootsnap.rs), and whether they were
    /// read since the agent started.
    root: rootsnap::RootSnaps,
    root_read: bool,
}

/// The VM's helpers end with its actor (the agent stops driving it).
impl Drop for Vm {
    fn drop(&mut self) {
        if let Some(r) = self.relay.take() {
            r.abort();
        }
        for h in self.helpers.drain(..) {
            h.abort();
        }
    }
}

enum Step {
    /// Nothing moving: look again in a while.
    Idle,
    /// Something is under way: look again soon.
    Busy,
    /// The VM and its files are gone.
    Removed,
}

impl Vm {
    /// A VM this agent has never had: a directory and a fresh local state.
    pub fn create(ctx: Arc<VmContext>, spec: DesiredInstance) -> std::io::Result<Vm> {
        let paths = VmPaths::new(ctx.instances_dir.join(spec.id.to_string()));
        std::fs::create_dir_all(&paths.dir)?;
        // Its spec holds the guest's boot secret: private to the agent.
        std::fs::set_permissions(
            &paths.dir,
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )?;
        let local = LocalState::new(spec);
        local.save(&paths.state())?;
        Ok(Vm::from_local(ctx, paths, local))
    }

    /// A VM found on disk at agent start: re-adopt its QEMU if it runs.
    pub fn adopt(ctx: Arc<VmContext>, paths: VmPaths) -> std::io::Result<Vm> {
        let local = LocalState::load(&paths.state())?;
        let mut vm = Vm::from_local(ctx, paths, local);
        match qemu::read_pid(&vm.paths.pidfile()).filter(|p| qemu::is_ours(*p, vm.id)) {
            Some(pid) => {
                tracing::info!("re-adopted {} (pid {pid})", vm.name());
                vm.pid = Some(pid);
                vm.watch_pid(pid);
                vm.state = ObservedState::Running;
            }
            None if vm.local.running => {
                tracing::warn!("{} died while the agent was away", vm.name());
                vm.stopped(Why::Crashed);
            }
            None => {}
        }
        Ok(vm)
    }

    fn from_local(ctx: Arc<VmContext>, paths: VmPaths, local: LocalState) -> Vm {
        let state = if local.failed {
            ObservedState::Error
        } else {
            ObservedState::Stopped
        };
        Vm {
            id: local.spec.id,
            paths,
            ctx,
            local,
            pid: None,
            pidfd: None,
            stop_deadline: None,
            stop_why: Why::Stopped,
            state,
            since: time::OffsetDateTime::now_utc(),
            since_at: tokio::time::Instant::now(),
            relay: None,
            helpers: Vec::new(),
            attach: Attachments::default(),
            root: rootsnap::RootSnaps::default(),
            root_read: false,
        }
    }

    fn name(&self) -> String {
        format!("{} ({})", self.local.spec.name, self.id)
    }

    fn save(&self) {
        if let Err(e) = self.local.save(&self.paths.state()) {
            tracing::error!("{}: cannot save state: {e}", self.name());
        }
    }

    fn set(&mut self, s: ObservedState) {
        if self.state != s {
            self.state = s;
            self.since = time::OffsetDateTime::now_utc();
            self.since_at = tokio::time::Instant::now();
        }
        self.publish();
    }

    fn observed(&self) -> ObservedInstance {
        let up = matches!(
            self.state,
            ObservedState::Running | ObservedState::Starting | ObservedState::Stopping
        );
        ObservedInstance {
            liveness: None,
            id: self.id,
            state: self.state,
            reason: if up { None } else { self.local.reason.clone() },
            boot_gen: self.local.boot_gen,
            reboot_gen: self.local.reboot_gen,
            pid: self.pid,
            accel: self.local.accel,
            since: self.since,
            guest: None,
            volumes: self.attach.observed.clone(),
            root_snapshots: self.root.observed.clone(),
            root_reverted_gen: self.root.reverted_gen,
            root_revert_error: self.root.outcome.revert_error.clone(),
        }
    }

    fn publish(&self) {
        // Its heartbeats are judged while it runs under a health policy
        // (vm/watch.rs); a new boot starts the judgement over.
        let running = match (&self.state, &self.local.spec.health) {
            (ObservedState::Running, Some(p)) => Some((p.clone(), self.since_at)),
            _ => None,
        };
        self.ctx
            .watch
            .set_policy(self.id, self.local.spec.health.as_ref());
        self.ctx.watch_health(self.id, running);
        self.ctx.publish(self.observed());
    }

    fn watch_pid(&mut self, pid: u32) {
        // SAFETY: the OwnedFd is moved into the AsyncFd, which owns it (and
        // keeps it open, unchanged) until it is dropped.
        self.pidfd = qemu::pidfd(pid).and_then(|fd| unsafe { AsyncFd::register(fd) }.ok());
    }

    fn alive(&self) -> bool {
        self.pid.map(|p| qemu::is_ours(p, self.id)).unwrap_or(false)
    }

    /// Record that QEMU is gone, and why.
    fn stopped(&mut self, why: Why) {
        self.pid = None;
        self.pidfd = None;
        self.stop_deadline = None;
        self.local.running = false;
        self.local.failed = false;
        self.local.reason = Some(why.into());
        self.save();
        self.set(ObservedState::Stopped);
    }

    fn failed(&mut self, spec: &DesiredInstance, why: String) {
        tracing::error!("{}: {why}", self.name());
        self.pid = None;
        self.pidfd = None;
        self.local.boot_gen = spec.boot_gen;
        self.local.reboot_gen = spec.reboot_gen;
        self.local.running = false;
        self.local.failed = true;
        self.local.reason = Some(StopReason::from(why));
        self.save();
        self.set(ObservedState::Error);
    }

    async fn qmp(&self, command: &'static str) -> Result<String, String> {
        let path = self.paths.qmp();
        let r = tokio::task::spawn_blocking(move || {
            if command == "query-status" {
                qmp::status(&path)
            } else {
                qmp::call(&path, command, None).map(|v| v.to_string())
            }
        })
        .await
        .map_err(|e| e.to_string())?;
        r.map_err(|e| e.to_string())
    }

    /// Power off now: QMP `quit`, then SIGKILL if it lingers.
    async fn power_off(&mut self) {
        let _ = self.qmp("quit").await;
        if let Some(pid) = self.pid {
            let id = self.id;
            let deadline = Instant::now() + Duration::from_secs(3);
            while qemu::is_ours(pid, id) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let _ = tokio::task::spawn_blocking(move || qemu::kill(pid, id)).await;
        }
    }

    /// One step towards `desired`.
    async fn step(&mut self, desired: &Desired) -> Step {
        // First what is: did QEMU exit, or the guest power off?
        if self.pid.is_some() {
            if !self.alive() {
                let why = match self.stop_deadline {
                    Some(_) => self.stop_why,
                    None => Why::Crashed,
                };
                if why == Why::Crashed {
                    tracing::warn!("{}: QEMU exited unexpectedly", self.name());
                }
                self.stopped(why);
            } else if let Ok(status) = self.qmp("query-status").await {
                if status == "shutdown" {
                    let why = if self.stop_deadline.is_some() {
                        self.stop_why
                    } else {
                        Why::GuestPoweroff
                    };
                    self.power_off().await;
                    self.stopped(why);
                } else if self.state == ObservedState::Starting && status == "running" {
                    self.set(ObservedState::Running);
                }
            }
        }
        let spec = match desired {
            Desired::Unknown => return Step::Idle,
            Desired::Removed => {
                self.remove().await;
                return Step::Removed;
            }
            Desired::Orphaned(why) => {
                self.ctx.set_orphan(self.id, Some(&self.local.spec.name));
                if self.pid.is_none() {
                    return Step::Idle;
                }
                if self.stop_deadline.is_none() {
                    tracing::warn!("{}: {why}", self.name());
                }
                return self
                    .stop_step(self.local.spec.stop_timeout_secs, *why, *why)
                    .await;
            }
            Desired::Present(spec) => {
                self.ctx.set_orphan(self.id, None);
                spec.as_ref().clone()
            }
        };
        if spec != self.local.spec {
            self.local.spec = spec.clone();
            self.save();
            // Its health policy may have come or changed.
            self.publish();
        }
        let alive = self.pid.is_some();
        if !alive {
            // Not running: it has what its next launch's command line has.
            let files = attachments::desired_files(&self.ctx, &spec);
            let before = self.attach.observed.clone();
            self.attach.on_command_line(&files);
            if self.attach.observed != before {
                self.publish();
            }
        }
        match spec.power {
            Power::Running if alive => {
                self.stop_deadline = None;
                if self.state == ObservedState::Stopping {
                    self.set(ObservedState::Running);
                }
                if spec.boot_gen > self.local.boot_gen {
                    // Started again while still up: this boot answers the start.
                    self.local.boot_gen = spec.boot_gen;
                    self.save();
                    self.publish();
                }
                if spec.reboot_gen > self.local.reboot_gen {
                    if let Err(e) = self.qmp("system_reset").await {
                        tracing::warn!("{}: reset: {e}", self.name());
                        return Step::Busy;
                    }
                    // A paused VM (QMP stop) stays paused through a reset:
                    // a reset is a new boot, so let it run.
                    if let Err(e) = self.qmp("cont").await {
                        tracing::warn!("{}: cont after reset: {e}", self.name());
                    }
                    tracing::info!("{}: reset", self.name());
                    // A new boot: its guest gets the boot grace again.
                    self.since_at = tokio::time::Instant::now();
                    self.local.reboot_gen = spec.reboot_gen;
                    self.save();
                    self.publish();
                }
                if self.state == ObservedState::Starting {
                    return Step::Busy;
                }
                self.root_snapshots_step(&spec).await;
                self.volumes_step(&spec).await
            }
            Power::Running => {
                let revert_pending = self.root_snapshots_step(&spec).await;
                if spec.boot_gen > self.local.boot_gen {
                    if revert_pending {
                        // Its disk's revert first: retried next step.
                        return Step::Busy;
                    }
                    self.start(&spec).await;
                    Step::Busy
                } else {
                    // The current boot ended; the master decides (restart policy).
                    Step::Idle
                }
            }
            Power::Stopped if alive => {
                self.stop_step(spec.stop_timeout_secs, Why::Stopped, Why::Forced)
                    .await
            }
            Power::Stopped => {
                if self.state == ObservedState::Error && !self.local.failed {
                    self.set(ObservedState::Stopped);
                }
                self.root_snapshots_step(&spec).await;
                Step::Idle
            }
        }
    }

    /// Hot-plug and hot-unplug the volumes of a running VM (vm/attachments.rs).
    async fn volumes_step(&mut self, spec: &DesiredInstance) -> Step {
        if self.state != ObservedState::Running {
            return Step::Idle;
        }
        let before = self.attach.observed.clone();
        let next = self
            .attach
            .converge(&self.ctx, &self.paths.qmp(), spec, self.ctx.detach_timeout)
            .await;
        if self.attach.observed != before {
            self.publish();
        }
        match next {
            Next::Idle => Step::Idle,
            Next::Busy => Step::Busy,
            Next::Restart => {
                // A hung or paused guest never answers the eject: only a
                // new QEMU takes the disk away without two writers.
                self.power_off().await;
                self.pid = None;
                self.pidfd = None;
                self.start(spec).await;
                Step::Busy
            }
        }
    }

    /// One step of stopping a running VM: ACPI shutdown, forced off after
    /// `timeout_secs` (at once for 0). `why` is recorded when the guest
    /// shuts down, `forced` when it is forced off.
    async fn stop_step(&mut self, timeout_secs: u32, why: Why, forced: Why) -> Step {
        match self.stop_deadline {
            None if timeout_secs == 0 => {
                self.power_off().await;
                self.stopped(forced);
            }
            None => {
                tracing::info!("{}: ACPI shutdown ({timeout_secs}s)", self.name());
                if let Err(e) = self.qmp("system_powerdown").await {
                    tracing::warn!("{}: powerdown: {e}", self.name());
                }
                self.stop_why = why;
                self.stop_deadline =
                    Some(Instant::now() + Duration::from_secs(timeout_secs.into()));
                self.set(ObservedState::Stopping);
            }
            Some(deadline) if Instant::now() >= deadline => {
                tracing::info!(
                    "{}: no shutdown after {timeout_secs}s, forcing it off",
                    self.name()
                );
                self.power_off().await;
                self.stopped(forced);
            }
            Some(_) => {}
        }
        Step::Busy
    }

    async fn remove(&mut self) {
        if let Some(r) = self.relay.take() {
            r.abort();
        }
        for h in self.helpers.drain(..) {
            h.abort();
        }
        if self.alive() {
            self.power_off().await;
        }
        self.pid = None;
        self.pidfd = None;
        let trash = self.ctx.instances_dir.join(format!(".trash-{}", self.id));
        let dir = self.paths.dir.clone();
        let res = tokio::task::spawn_blocking(move || {
            std::fs::rename(&dir, &trash)?;
            std::fs::remove_dir_all(&trash)
        })
        .await;
        match res {
            Ok(Ok(())) => tracing::info!("{}: removed with all its files", self.name()),
            Ok(Err(e)) => tracing::error!("{}: removing files: {e}", self.name()),
            Err(e) => tracing::error!("{}: removing files: {e}", self.name()),
        }
        self.ctx.unpublish(self.id);
    }

    /// Wait until QEMU exits (never, when there is no QEMU).
    async fn exited(&self) {
        match &self.pidfd {
            Some(fd) => {
                let _ = fd.readable().await;
            }
            None => std::future::pending::<()>().await,
        }
    }
}

/// The actor's loop: step, publish, wait for a new spec, a tick or an exit.
pub async fn run(mut vm: Vm, mut desired: watch::Receiver<Desired>) {
    // What it holds, before anything is reported (an agent restarted
    // while a detach was under way must not report it done).
    let (ctx, spec, qmp) = (vm.ctx.clone(), vm.local.spec.clone(), vm.paths.qmp());
    vm.attach.adopt(&ctx, &spec, vm.pid.is_some(), &qmp).await;
    // First, so that the relay knows the VM's health policy.
    vm.publish();
    vm.relay = Some(tokio::spawn(super::guest::relay(
        vm.ctx.clone(),
        vm.id,
        vm.paths.agent_sock(),
    )));
    vm.helpers = vec![
        tokio::spawn(super::bootproxy::serve(
            vm.ctx.master.clone(),
            vm.paths.boot_sock(),
        )),
        tokio::spawn(super::console::keep_bounded(
            super::console::ConsoleFiles::new(vm.paths.console_log()),
            vm.ctx.guest.console_log_max,
        )),
    ];
    loop {
        let d = desired.borrow_and_update().clone();
        let wait = match vm.step(&d).await {
            Step::Removed => return,
            Step::Busy => Duration::from_millis(100),
            Step::Idle => Duration::from_secs(1),
        };
        tokio::select! {
            r = desired.changed() => {
                if r.is_err() {
                    return; // the manager is gone: the agent is shutting down
                }
            }
            _ = tokio::time::sleep(wait) => {}
            _ = vm.exited() => {}
        }
    }
}
