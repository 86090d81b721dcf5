//! Volume operations, completed from their host's reports
//! (docs/storage.md, "Operations"): create when the file is reported,
//! resize when it is at least the size asked, attach when the instance
//! holds it, detach when no instance does, delete when the record is gone.
//! A failed attach is undone (the volume is `available` again); a detach
//! the guest refused is undone too (the volume stays attached).

use super::{failed, ok, Outcome};
use crate::state::App;
use crate::store::volume::{VolumeChange, VolumeRow};
use crate::store::{now_ms, HostId, Millis, OperationRow};
use cm_api::agent::AttachmentState;
use cm_api::operation::OperationStatus;
use cm_api::words::OperationKind as K;
use cm_api::{ErrorBody, ErrorCode};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// The outcome of a volume's operation, and the change that undoes a
/// failed attach or detach.
pub fn evaluate(
    op: &OperationRow,
    v: Option<&VolumeRow>,
    host_up: bool,
) -> (Outcome, Option<VolumeChange>) {
    let kind = op.op.kind;
    let Some(v) = v else {
        return match kind {
            K::VolumeDelete => (ok("deleted"), None),
            _ => (failed("deleted", "the volume was deleted".into()), None),
        };
    };
    if v.deleted && kind != K::VolumeDelete {
        return (failed("deleted", "the volume was deleted".into()), None);
    }
    let waiting = |what: String| {
        let p = if host_up {
            what
        } else {
            format!("host {} is down; waiting for it", v.host_name)
        };
        (Outcome::Running(p), None)
    };
    let host_failed = |e: &str| failed("error", format!("host {}: {e}", v.host_name));
    match kind {
        K::VolumeCreate => match (&v.facts.size_bytes, &v.facts.error) {
            (Some(_), _) => (ok("made"), None),
            (None, Some(e)) => (host_failed(e), None),
            (None, None) => waiting("waiting for the host to make it".into()),
        },
        K::VolumeResize => match (v.facts.size_bytes, &v.facts.error) {
            (Some(s), _) if s >= op.want => (ok("grown"), None),
            (_, Some(e)) => (host_failed(e), None),
            _ => waiting("waiting for the host to grow it".into()),
        },
        K::VolumeAttach => {
            let Some((i, name)) = v.instance.as_ref().filter(|_| v.attach_gen == op.want) else {
                let why = "detached (or its instance deleted) before it was attached";
                return (failed("detached", why.into()), None);
            };
            let attached = v.held_by(*i) && v.facts.attach_state == Some(AttachmentState::Attached);
            if attached && v.facts.attach_error.is_none() {
                return (ok("attached"), None);
            }
            let error = v.facts.attach_error.as_ref().or(v.facts.error.as_ref());
            match error {
                Some(e) => {
                    let undo = VolumeChange::Revert {
                        expected: op.want,
                        to: None,
                    };
                    (
                        host_failed(&format!("attaching to {name}: {e}")),
                        Some(undo),
                    )
                }
                None => waiting(format!("waiting for {name} to hold it")),
            }
        }
        K::VolumeDetach => {
            if v.attach_gen != op.want || v.instance.is_some() {
                let why = "attached again before it was released";
                return (failed("attached", why.into()), None);
            }
            let Some((i, name)) = &v.facts.holder else {
                return (ok("detached"), None);
            };
            match (&v.facts.attach_error, v.force_detach) {
                (Some(e), false) => {
                    let undo = VolumeChange::Revert {
                        expected: op.want,
                        to: Some(*i),
                    };
                    let msg = format!(
                        "{e}; the volume stays attached to {name}. `cm volume detach {} \
                         --force` restarts the VM without it",
                        v.name
                    );
                    (host_failed(&msg), Some(undo))
                }
                (_, true) => waiting(format!(
                    "waiting for {name} to release it (or to be restarted without it)"
                )),
                (None, false) => waiting(format!("waiting for {name} to release it")),
            }
        }
        K::VolumeDelete => match &v.facts.error {
            Some(e) if v.facts.size_bytes.is_some() => (
                host_failed(&format!(
                    "{e} (the deletion stays recorded: the host removes it when it can)"
                )),
                None,
            ),
            _ => waiting("waiting for the host to remove its file".into()),
        },
        _ => (
            failed("wrong target", "not an operation on a volume".into()),
            None,
        ),
    }
}

/// A volume operation that waited `deadline` for its host while the host
/// was down gives up with `host_unavailable`; the change stays recorded.
pub fn gave_up(
    op: &OperationRow,
    host: &str,
    down_since: Option<Millis>,
    now: Millis,
    deadline: Duration,
) -> Option<Outcome> {
    let since = down_since?;
    let created = cm_api::time::timestamp_ms(op.op.created_at);
    if now - since.max(created) < cm_api::time::duration_millis(deadline) {
        return None;
    }
    Some(Outcome::Done(
        OperationStatus::Failed,
        "host down".into(),
        Some(ErrorBody {
            code: ErrorCode::HostUnavailable,
            message: format!(
                "host {host} is down: gave up after waiting {}s for it; the change is \
                 recorded and applied if the host returns",
                deadline.as_secs()
            ),
            field: None,
        }),
    ))
}

pub(super) fn is_volume(k: K) -> bool {
    matches!(
        k,
        K::VolumeCreate | K::VolumeResize | K::VolumeAttach | K::VolumeDetach | K::VolumeDelete
    )
}

/// Look at one volume operation; true when it changed.
pub(super) async fn operation(
    app: &Arc<App>,
    op: &OperationRow,
    up: &HashMap<HostId, bool>,
    down_since: &HashMap<HostId, Millis>,
    now: Millis,
) -> crate::app::Result<bool> {
    let target = op.op.target_id.to_string();
    let vol = match app.db(move |s| s.get_volume(&target)).await {
        Ok(v) => Some(v),
        Err(crate::app::Error::NotFound(_)) => None,
        Err(e) => return Err(e),
    };
    let host_up = vol
        .as_ref()
        .is_none_or(|v| up.get(&v.host_id).copied().unwrap_or(false));
    let late = vol.as_ref().and_then(|v| {
        gave_up(
            op,
            &v.host_name,
            down_since.get(&v.host_id).copied(),
            now,
            app.settings.down_host_op_timeout,
        )
    });
    let (outcome, undo) = match late {
        Some(l) => (l, None),
        None => evaluate(op, vol.as_ref(), host_up),
    };
    if let (Some(undo), Some(v)) = (undo, &vol) {
        let id = v.id;
        let row = app
            .db(move |s| s.change_volume(id, undo, None, None, now_ms()))
            .await?;
        app.hub.notify(row.host_id);
    }
    super::record(app, op, outcome).await
}

#[cfg(test)]
#[path = "volumes_tests.rs"]
mod tests;
