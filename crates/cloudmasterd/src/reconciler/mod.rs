//! The master's control loop: compares desired and observed state and acts.
//!
//! Each pass (every half second, or at once after a report):
//! - marks hosts down when they stop reporting (an event on each change),
//! - applies restart policies, with exponential back-off,
//! - completes operations whose condition is met.
//!
//! Everything it reads is in the store, so a restarted master carries on.

use crate::state::App;
use crate::store::HostId;
use crate::store::{now_ms, DesiredChange, InstanceRow, Millis, OperationRow};
use crate::view;
use cm_api::agent::{ObservedState as O, Power};
use cm_api::host::HostState;
use cm_api::instance::RestartPolicy;
use cm_api::operation::OperationStatus;
use cm_api::words::{EventKind, KnownStopReason as Why, OperationKind as K, StopReason};
use cm_api::{ErrorBody, ErrorCode};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// An instance that ran this long before failing restarts without back-off.
const STABLE_AFTER_MS: Millis = 60_000;
const MAX_BACKOFF_SECS: u64 = 60;

pub async fn run(app: Arc<App>) {
    let mut hosts: HashMap<HostId, HostState> = HashMap::new();
    let mut first = true;
    let mut last_stale_sweep = std::time::Instant::now();
    loop {
        if let Err(e) = pass(&app, &mut hosts, first).await {
            tracing::error!("reconciler: {e}");
        }
        first = false;
        if let Some(timeout) = app.settings.remove_stale_after {
            // remove_stale on a schedule: every minute, or every tenth of the timeout.
            let every = (timeout / 10).clamp(Duration::from_secs(1), Duration::from_secs(60));
            if last_stale_sweep.elapsed() >= every {
                last_stale_sweep = std::time::Instant::now();
                if let Err(e) = crate::app::configs::remove_stale_now(&app, timeout).await {
                    tracing::error!("remove_stale: {e}");
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = app.kick.notified() => {}
        }
    }
}

async fn pass(
    app: &Arc<App>,
    known: &mut HashMap<HostId, HostState>,
    first: bool,
) -> crate::app::Result<()> {
    let now = now_ms();
    let hosts = app.db(|s| s.list_hosts()).await?;
    let mut up = HashMap::new();
    let mut down_since = HashMap::new();
    for h in &hosts {
        let state = view::host_state(h, now, app.settings.host_down_after);
        up.insert(h.id, state != HostState::Down);
        if state == HostState::Down {
            let silent_from = h.last_seen.unwrap_or(h.registered_at);
            down_since.insert(
                h.id,
                silent_from + cm_api::time::duration_millis(app.settings.host_down_after),
            );
        }
        let before = known.insert(h.id, state);
        if !first
            && before.is_some()
            && before != Some(state)
            && (state == HostState::Down || before == Some(HostState::Down))
        {
            let msg = if state == HostState::Down {
                format!(
                    "down: no report for {}s",
                    app.settings.host_down_after.as_secs()
                )
            } else {
                "back: reporting again".to_string()
            };
            app.event(EventKind::HostState, &h.name, &msg).await;
            // Deployables on it decide again (unreachable, or back).
            app.engines.wake_all();
        }
    }
    restart_policies(app, &up, now).await?;
    // Schedules make their backups before the operations are looked at.
    if let Err(e) = crate::app::backups::tick(app).await {
        tracing::error!("backup schedules: {e}");
    }
    operations(app, &up, &down_since, now).await
}

/// What the restart policy does with a running instance whose boot ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    GiveUp(&'static str),
    Schedule { at: Millis, delay_secs: u64 },
    Restart { backoff_step: u32 },
    Wait,
}

/// Whether a VM that stopped for this reason failed (`on-failure` restarts
/// it) rather than being stopped or powered off on purpose.
fn is_failure(why: Why) -> bool {
    match why {
        Why::Crashed => true,
        Why::GuestPoweroff
        | Why::Stopped
        | Why::Forced
        | Why::New
        | Why::Orphaned
        | Why::HostRefused => false,
    }
}

pub fn decide(i: &InstanceRow, now: Millis) -> Decision {
    let failed = match (i.observed.state, &i.observed.reason) {
        (Some(O::Error), _) => true,
        (_, Some(StopReason::Known(why))) => is_failure(*why),
        (_, Some(StopReason::Text(_)) | None) => false,
    };
    let restart = match i.spec.restart_policy {
        RestartPolicy::No => false,
        RestartPolicy::OnFailure => failed,
        RestartPolicy::Always => true,
    };
    if !restart {
        return Decision::GiveUp(match i.spec.restart_policy {
            RestartPolicy::No => "restart policy is no",
            _ => "it powered off cleanly",
        });
    }
    let ran_long = match (i.restart.running_since, i.observed.since) {
        (Some(start), Some(end)) => end - start >= STABLE_AFTER_MS,
        _ => false,
    };
    let step = if ran_long { 0 } else { i.restart.backoff_step };
    match i.restart.next_at {
        None => {
            let delay_secs = (1u64 << step.min(6)).min(MAX_BACKOFF_SECS);
            Decision::Schedule {
                at: now + cm_api::time::duration_millis(Duration::from_secs(delay_secs)),
                delay_secs,
            }
        }
        Some(t) if now >= t => Decision::Restart {
            backoff_step: step + 1,
        },
        Some(_) => Decision::Wait,
    }
}

async fn restart_policies(
    app: &Arc<App>,
    up: &HashMap<HostId, bool>,
    now: Millis,
) -> crate::app::Result<()> {
    let down = app.db(|s| s.instances_down()).await?;
    for i in down {
        // Unreachable is not dead: nothing is decided for a host that is down.
        if !up.get(&i.host_id).copied().unwrap_or(false) {
            continue;
        }
        let change = match decide(&i, now) {
            Decision::Wait => continue,
            Decision::GiveUp(why) => {
                app.event(
                    EventKind::InstanceRestart,
                    &i.name,
                    &format!("not restarted: {why}"),
                )
                .await;
                DesiredChange::GiveUp
            }
            Decision::Schedule { at, delay_secs } => {
                let why = i
                    .observed
                    .reason
                    .clone()
                    .unwrap_or_else(|| "stopped".into());
                app.event(
                    EventKind::InstanceRestart,
                    &i.name,
                    &format!(
                        "{why}; restarting in {delay_secs}s ({})",
                        i.spec.restart_policy.as_str()
                    ),
                )
                .await;
                DesiredChange::ScheduleRestart { at }
            }
            Decision::Restart { backoff_step } => DesiredChange::Restart {
                expected_boot_gen: i.desired.boot_gen,
                backoff_step,
            },
        };
        let id = i.id;
        let ch = app
            .db(move |s| s.change_instance(id, change, None, now_ms()))
            .await?;
        if ch.effective && !matches!(change, DesiredChange::ScheduleRestart { .. }) {
            app.hub.notify(i.host_id);
            if let DesiredChange::Restart { .. } = change {
                app.event(
                    EventKind::InstanceRestart,
                    &i.name,
                    &format!("restart #{}", ch.row.restart.count),
                )
                .await;
            }
        }
    }
    Ok(())
}

/// The outcome of an operation, given its instance now.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    Running(String),
    Done(OperationStatus, String, Option<ErrorBody>),
}

/// Write an operation's outcome: its new progress, or its end. True when
/// the operation changed (instance, volume and snapshot operations alike).
pub(super) async fn record(
    app: &Arc<App>,
    op: &OperationRow,
    outcome: Outcome,
) -> crate::app::Result<bool> {
    let id = op.op.id;
    match outcome {
        Outcome::Running(p) if p != op.op.progress => {
            app.db(move |s| s.set_operation_progress(id, &p, now_ms()))
                .await?;
            Ok(true)
        }
        Outcome::Running(_) => Ok(false),
        Outcome::Done(status, p, err) => {
            app.db(move |s| s.finish_operation(id, status, &p, err.as_ref(), now_ms()))
                .await?;
            Ok(true)
        }
    }
}

fn failed(progress: &str, message: String) -> Outcome {
    Outcome::Done(
        OperationStatus::Failed,
        progress.to_string(),
        Some(ErrorBody {
            code: ErrorCode::Conflict,
            message,
            field: None,
        }),
    )
}

fn ok(progress: &str) -> Outcome {
    Outcome::Done(OperationStatus::Succeeded, progress.to_string(), None)
}

pub fn evaluate(op: &OperationRow, inst: Option<&InstanceRow>, host_up: bool) -> Outcome {
    let kind = op.op.kind;
    let Some(i) = inst else {
        return if kind == K::InstanceDelete {
            ok("deleted")
        } else {
            failed("deleted", "the instance was deleted".into())
        };
    };
    if i.desired.deleted && kind != K::InstanceDelete {
        return failed("deleted", "the instance was deleted".into());
    }
    let why = || {
        i.observed
            .reason
            .as_ref()
            .map_or_else(|| "unknown reason".into(), StopReason::to_string)
    };
    let waiting = |what: &str| {
        if host_up {
            Outcome::Running(what.to_string())
        } else {
            Outcome::Running(format!("host {} is down; waiting for it", i.host_name))
        }
    };
    match kind {
        // Volume and snapshot operations have their own pass (docs/storage.md).
        K::VolumeCreate
        | K::VolumeResize
        | K::VolumeAttach
        | K::VolumeDetach
        | K::VolumeDelete
        | K::SnapshotCreate
        | K::SnapshotRestore
        | K::SnapshotDelete
        | K::VolumeMove
        | K::ImageCreate
        | K::BackupCreate
        | K::BackupRestore
        | K::BackupDelete => failed("wrong target", "not an operation on an instance".into()),
        K::InstanceDelete => Outcome::Running(if host_up {
            "removing its files on the host".into()
        } else {
            format!("host {} is down; removed when it returns", i.host_name)
        }),
        K::InstanceCreate | K::InstanceStart | K::InstanceEvacuate => {
            if i.observed.boot_gen < op.want {
                if i.desired.power == Power::Stopped {
                    return failed("stopped", "stopped before it started".into());
                }
                return waiting("waiting for the host");
            }
            match i.observed.state {
                Some(O::Running) => ok("running"),
                Some(O::Error) => failed("error", why()),
                Some(O::Stopped) => failed(
                    "stopped",
                    format!("stopped right after starting: {}", why()),
                ),
                Some(O::Preparing) => waiting("preparing disks and image"),
                _ => waiting("starting QEMU"),
            }
        }
        K::InstanceStop => {
            if i.desired.power != Power::Stopped {
                return failed("running", "started again before it stopped".into());
            }
            match i.observed.state {
                Some(O::Stopped) | Some(O::Error) => ok("stopped"),
                // Never launched on its host: nothing to stop. One that
                // ran and is missing from a report (an agent that just
                // restarted) is not known to be stopped: wait for it.
                None if i.observed.boot_gen == 0 => ok("stopped"),
                _ => waiting("waiting for the guest to shut down"),
            }
        }
        K::InstanceReboot => {
            if i.desired.power != Power::Running {
                return failed("stopped", "stopped before the reboot".into());
            }
            if i.observed.reboot_gen >= op.want {
                return match i.observed.state {
                    Some(O::Running) => ok("rebooted"),
                    _ => failed(
                        "stopped",
                        format!("not running after the reboot: {}", why()),
                    ),
                };
            }
            match i.observed.state {
                Some(O::Stopped) | Some(O::Error) if i.observed.boot_gen >= i.desired.boot_gen => {
                    failed("stopped", format!("stopped before the reboot: {}", why()))
                }
                _ => waiting("resetting"),
            }
        }
    }
}

/// An operation that has waited `deadline` for its host while the host was
/// down gives up with `host_unavailable`; the change it asked for stays
/// recorded (it is applied if the host returns).
pub fn gave_up(
    op: &OperationRow,
    inst: &InstanceRow,
    down_since: Option<Millis>,
    now: Millis,
    deadline: Duration,
) -> Option<Outcome> {
    let since = down_since?;
    let created = cm_api::time::timestamp_ms(op.op.created_at);
    let waited = now - since.max(created);
    if waited < cm_api::time::duration_millis(deadline) {
        return None;
    }
    let h = &inst.host_name;
    let then = if op.op.kind == K::InstanceDelete {
        format!(
            "the delete is recorded: its files are removed if the host returns \
             (or forget the host: cm host remove {h} --force)"
        )
    } else {
        format!(
            "the change is recorded and applied if the host returns; to run the \
             instance elsewhere: cm host evacuate {h}"
        )
    };
    Some(Outcome::Done(
        OperationStatus::Failed,
        "host down".into(),
        Some(ErrorBody {
            code: ErrorCode::HostUnavailable,
            message: format!(
                "host {h} is down: gave up after waiting {}s for it; {then}",
                deadline.as_secs()
            ),
            field: None,
        }),
    ))
}

async fn operations(
    app: &Arc<App>,
    up: &HashMap<HostId, bool>,
    down_since: &HashMap<HostId, Millis>,
    now: Millis,
) -> crate::app::Result<()> {
    let deadline = app.settings.down_host_op_timeout;
    crate::app::transfers::give_up(app, down_since, now, deadline).await?;
    let ops = app.db(|s| s.running_operations()).await?;
    let mut changed = false;
    for op in ops {
        if volumes::is_volume(op.op.kind) {
            changed |= volumes::operation(app, &op, up, down_since, now).await?;
            continue;
        }
        // Finished by the transfers' own records (app::transfers).
        if matches!(
            op.op.kind,
            K::VolumeMove | K::ImageCreate | K::BackupRestore
        ) {
            continue;
        }
        if snapshots::is_snapshot(op.op.kind) {
            changed |= snapshots::operation(app, &op, up, down_since, now).await?;
            continue;
        }
        if backups::is_backup(op.op.kind) {
            changed |= backups::operation(app, &op, up, down_since, now).await?;
            continue;
        }
        let target = op.op.target_id.to_string();
        let inst = match app.db(move |s| s.get_instance(&target)).await {
            Ok(i) => Some(i),
            Err(crate::app::Error::NotFound(_)) => None,
            Err(e) => return Err(e),
        };
        let host_up = inst
            .as_ref()
            .map(|i| up.get(&i.host_id).copied().unwrap_or(false))
            .unwrap_or(true);
        let late = inst.as_ref().and_then(|i| {
            gave_up(
                &op,
                i,
                down_since.get(&i.host_id).copied(),
                now,
                app.settings.down_host_op_timeout,
            )
        });
        let outcome = late.unwrap_or_else(|| evaluate(&op, inst.as_ref(), host_up));
        changed |= record(app, &op, outcome).await?;
    }
    if changed {
        app.ops_changed();
    }
    Ok(())
}

mod backups;
mod snapshots;
mod volumes;

#[cfg(test)]
mod tests;
