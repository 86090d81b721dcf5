//! A VM's volumes (docs/storage.md): on the command line at launch, and on
//! a running VM hot-plugged and hot-unplugged until what QEMU holds (asked
//! each time through QMP, vm/hotplug.rs) is the desired list. The VM's
//! actor (vm/actor/) calls `converge` on each step while the VM runs.

use super::hotplug::{self, Held};
use super::VmContext;
use cm_api::agent::{AttachmentState, DesiredInstance, ObservedAttachment};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// How long a `device_del` call waits for `DEVICE_DELETED` while it holds
/// the monitor; a slower guest is seen by a later `query`.
const RELEASE_WAIT: Duration = Duration::from_secs(1);
/// A release not seen yet is asked for again this often: a guest whose
/// OS was still booting when asked never heard it (Linux clears pending
/// ACPI events as it starts; QEMU lets the request be repeated for this).
const REASK: Duration = Duration::from_secs(3);
/// A failed hot-plug is tried again after this long (or at once when the
/// desired list changes).
const ATTACH_RETRY: Duration = Duration::from_secs(10);

/// What the actor does next.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Nothing under way.
    Idle,
    /// A guest is releasing a disk: look again soon.
    Busy,
    /// A forced detach timed out: stop QEMU hard and launch it again with
    /// the desired list.
    Restart,
}

/// The volumes of `spec` whose files exist, in order, with their files.
pub fn desired_files(ctx: &VmContext, spec: &DesiredInstance) -> Vec<(Uuid, PathBuf)> {
    spec.volumes
        .iter()
        .map(|a| (a.volume, ctx.volumes.path(a.volume)))
        .filter(|(_, f)| f.exists())
        .collect()
}

#[derive(Debug, Default)]
pub struct Attachments {
    /// Disks whose release was asked (`device_del`), by node, and when.
    releasing: HashMap<String, Instant>,
    /// When each of them was last asked.
    asked: HashMap<String, Instant>,
    /// Detaches that timed out, by node, with the message: not tried again
    /// until the desired list changes.
    timed_out: HashMap<String, String>,
    /// Hot-plugs that failed, and when.
    failed: HashMap<Uuid, Instant>,
    /// The desired list (volumes, force) the above belong to.
    for_list: Option<(Vec<Uuid>, Vec<Uuid>)>,
    /// What the VM has, for its reports.
    pub observed: Vec<ObservedAttachment>,
    /// QEMU was seen to hold no volume and none is wanted: nothing to ask
    /// it until the desired list changes (most VMs have no volumes).
    quiet: bool,
}

fn attached(volume: Uuid) -> ObservedAttachment {
    ObservedAttachment {
        volume,
        state: AttachmentState::Attached,
        error: None,
    }
}

impl Attachments {
    /// A VM not running (or just launched): it has what its command line has.
    pub fn on_command_line(&mut self, files: &[(Uuid, PathBuf)]) {
        self.quiet = false;
        self.releasing.clear();
        self.asked.clear();
        self.timed_out.clear();
        self.observed = files.iter().map(|(id, _)| attached(*id)).collect();
    }

    /// What a VM has when its actor begins (an agent start), before any
    /// report: a running one is asked, a stopped one has its command line.
    pub async fn adopt(
        &mut self,
        ctx: &VmContext,
        spec: &DesiredInstance,
        running: bool,
        qmp: &Path,
    ) {
        let want = desired_files(ctx, spec);
        if !running {
            self.on_command_line(&want);
            return;
        }
        match blocking(qmp, hotplug::query).await {
            Ok(held) => {
                let ids = self.known_ids(ctx, spec);
                self.observe(&held, &[], &[], &want, &ids);
            }
            Err(e) => tracing::warn!("{}: query-block: {e}", spec.name),
        }
    }

    /// Every volume this host knows, by node: what QEMU holds is named so.
    fn known_ids(&self, ctx: &VmContext, spec: &DesiredInstance) -> HashMap<String, Uuid> {
        let mut ids: HashMap<String, Uuid> = super::super::volumes::files::list(ctx.volumes.dir())
            .into_iter()
            .chain(spec.volumes.iter().map(|a| a.volume))
            .map(|id| (cm_api::volume::qemu_node(id), id))
            .collect();
        ids.extend(
            self.observed
                .iter()
                .map(|o| (cm_api::volume::qemu_node(o.volume), o.volume)),
        );
        ids
    }

    /// One step on a running VM whose monitor is `qmp`.
    pub async fn converge(
        &mut self,
        ctx: &VmContext,
        qmp: &Path,
        spec: &DesiredInstance,
        timeout: Duration,
    ) -> Next {
        let list = (
            spec.volumes.iter().map(|a| a.volume).collect::<Vec<_>>(),
            spec.force_detach.clone(),
        );
        if self.for_list.as_ref() != Some(&list) {
            self.timed_out.clear();
            // Tried again at once; a volume no longer wanted here has no
            // attach failure any more.
            for id in self.failed.keys().filter(|id| !list.0.contains(id)) {
                ctx.volumes.set_attach_error(*id, None);
            }
            self.failed.clear();
            self.for_list = Some(list);
            self.quiet = false;
        }
        let want = desired_files(ctx, spec);
        if self.quiet && want.is_empty() {
            return Next::Idle;
        }
        // A volume no longer wanted here has no attach failure any more.
        self.failed.retain(|id, _| {
            let keep = want.iter().any(|(w, _)| w == id);
            if !keep {
                ctx.volumes.set_attach_error(*id, None);
            }
            keep
        });
        let ids = self.known_ids(ctx, spec);
        let held = match blocking(qmp, hotplug::query).await {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!("{}: query-block: {e}", spec.name);
                return Next::Busy;
            }
        };
        let mut next = Next::Idle;
        let wanted: HashMap<String, Uuid> = want
            .iter()
            .map(|(id, _)| (cm_api::volume::qemu_node(*id), *id))
            .collect();
        let mut gone = Vec::new();
        // Disks to take away: ask the guest, wait, give up or restart.
        for node in held.devices.iter().filter(|n| !wanted.contains_key(*n)) {
            if self.timed_out.contains_key(node) {
                continue;
            }
            let id = ids.get(node).copied();
            match self.releasing.get(node) {
                None => {
                    tracing::info!("{}: detaching {node} (device_del)", spec.name);
                    let n = node.clone();
                    match blocking(qmp, move |q| hotplug::request_release(q, &n, RELEASE_WAIT))
                        .await
                    {
                        Ok(true) => gone.push(node.clone()),
                        Ok(false) => {
                            self.releasing.insert(node.clone(), Instant::now());
                            next = Next::Busy;
                        }
                        Err(e) => {
                            // A request already pending (an agent restart) is fine.
                            tracing::warn!("{}: device_del {node}: {e}", spec.name);
                            self.releasing.insert(node.clone(), Instant::now());
                            next = Next::Busy;
                        }
                    }
                }
                Some(since) if since.elapsed() >= timeout => {
                    if id.is_some_and(|id| spec.force_detach.contains(&id)) {
                        tracing::warn!(
                            "{}: the guest did not release {node} within {}s: restarting it without",
                            spec.name,
                            timeout.as_secs()
                        );
                        return Next::Restart;
                    }
                    let msg = format!(
                        "the guest did not release the disk within {} s (detach with --force \
                         to restart the instance without it)",
                        timeout.as_secs()
                    );
                    tracing::warn!("{}: {node}: {msg}", spec.name);
                    self.releasing.remove(node);
                    self.asked.remove(node);
                    self.timed_out.insert(node.clone(), msg);
                }
                Some(since) => {
                    next = Next::Busy;
                    let last = self.asked.get(node).copied().unwrap_or(*since);
                    if last.elapsed() >= REASK {
                        self.asked.insert(node.clone(), Instant::now());
                        let n = node.clone();
                        match blocking(qmp, move |q| {
                            hotplug::request_release(q, &n, Duration::ZERO)
                        })
                        .await
                        {
                            Ok(true) => gone.push(node.clone()),
                            Ok(false) => {}
                            // "already in the process of unplug": still pending.
                            Err(e) => {
                                tracing::debug!("{}: device_del {node} again: {e}", spec.name)
                            }
                        }
                    }
                }
            }
        }
        // Nodes whose disks are gone and that are not wanted: drop them.
        let devices_left: Vec<&String> =
            held.devices.iter().filter(|n| !gone.contains(n)).collect();
        let nodes: std::collections::BTreeSet<&String> = held.nodes.iter().chain(&gone).collect();
        for node in nodes {
            if devices_left.contains(&node) || wanted.contains_key(node) {
                continue;
            }
            let n = node.clone();
            match blocking(qmp, move |q| hotplug::drop_node(q, &n)).await {
                Ok(()) => tracing::info!("{}: detached {node}", spec.name),
                Err(e) => {
                    tracing::warn!("{}: blockdev-del {node}: {e}", spec.name);
                    next = Next::Busy;
                }
            }
            self.releasing.remove(node);
            self.asked.remove(node);
        }
        // Disks to add, in order.
        let mut added = Vec::new();
        for (id, file) in &want {
            let node = cm_api::volume::qemu_node(*id);
            if held.devices.contains(&node) {
                ctx.volumes.set_attach_error(*id, None);
                continue;
            }
            if self
                .failed
                .get(id)
                .is_some_and(|t| t.elapsed() < ATTACH_RETRY)
            {
                continue;
            }
            let (v, f, has_node) = (*id, file.clone(), held.nodes.contains(&node));
            match blocking(qmp, move |q| hotplug::attach(q, v, &f, has_node)).await {
                Ok(()) => {
                    tracing::info!("{}: attached volume {id} as {node}", spec.name);
                    ctx.volumes.set_attach_error(*id, None);
                    self.failed.remove(id);
                    added.push(node);
                }
                Err(e) => {
                    tracing::warn!("{}: attaching volume {id}: {e}", spec.name);
                    ctx.volumes
                        .set_attach_error(*id, Some(format!("attaching to {}: {e}", spec.name)));
                    self.failed.insert(*id, Instant::now());
                }
            }
        }
        self.observe(&held, &gone, &added, &want, &ids);
        self.quiet = want.is_empty() && held == Held::default();
        next
    }

    /// What the VM has now: the wanted disks it holds, in order, then the
    /// ones it is releasing.
    fn observe(
        &mut self,
        held: &Held,
        gone: &[String],
        added: &[String],
        want: &[(Uuid, PathBuf)],
        ids: &HashMap<String, Uuid>,
    ) {
        let has = |n: &String| (held.devices.contains(n) && !gone.contains(n)) || added.contains(n);
        let mut out: Vec<ObservedAttachment> = want
            .iter()
            .filter(|(id, _)| has(&cm_api::volume::qemu_node(*id)))
            .map(|(id, _)| attached(*id))
            .collect();
        for node in held.devices.iter().filter(|n| has(n)) {
            let Some(id) = ids.get(node) else { continue };
            if want.iter().any(|(w, _)| w == id) {
                continue;
            }
            out.push(ObservedAttachment {
                volume: *id,
                state: AttachmentState::Detaching,
                error: self.timed_out.get(node).cloned(),
            });
        }
        // A release asked for a disk that is wanted again is not timed any
        // more (if the guest lets it go, it is plugged in again).
        self.releasing.retain(|n, _| {
            held.devices.contains(n)
                && !gone.contains(n)
                && !want
                    .iter()
                    .any(|(id, _)| cm_api::volume::qemu_node(*id) == *n)
        });
        let releasing = &self.releasing;
        self.asked.retain(|n, _| releasing.contains_key(n));
        self.observed = out;
    }
}

/// Run a blocking QMP call off the runtime.
async fn blocking<T: Send + 'static>(
    qmp: &Path,
    f: impl FnOnce(&Path) -> Result<T, super::qmp::QmpError> + Send + 'static,
) -> Result<T, String> {
    let qmp = qmp.to_path_buf();
    tokio::task::spawn_blocking(move || f(&qmp))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests;
