//! The `volume.*` events a host's report makes: a file made, grown or
//! removed, a disk attached or released, a failure. The store appends them
//! in the report's own transaction; `published` tells followers after.

use crate::state::App;
use crate::store::engine::NewEvent;
use crate::store::volume::{VolumeFacts, VolumeReport};
use cm_api::agent::AttachmentState;
use cm_api::volume::human_size;
use cm_api::words::EventKind;

pub(super) fn new_event(kind: EventKind, target: &str, message: String) -> NewEvent {
    NewEvent {
        kind,
        target: target.to_string(),
        message,
        detail: Default::default(),
    }
}

/// The events of a report's changes, in the order they happened.
pub fn events(out: &VolumeReport) -> Vec<NewEvent> {
    let mut evs = Vec::new();
    for ch in &out.changed {
        let (a, b) = (&ch.before.facts, &ch.after.facts);
        let name = &ch.after.name;
        let mut tell = |kind, msg| evs.push(new_event(kind, name, msg));
        match (a.size_bytes, b.size_bytes) {
            (None, Some(size)) => {
                let msg = format!("made on {}: {}", ch.after.host_name, human_size(size));
                tell(EventKind::VolumeCreated, msg);
            }
            (Some(x), Some(y)) if y > x => {
                let msg = format!("grown from {} to {}", human_size(x), human_size(y));
                tell(EventKind::VolumeResized, msg);
            }
            _ => {}
        }
        let attached = |f: &VolumeFacts| {
            f.holder
                .as_ref()
                .filter(|_| f.attach_state == Some(AttachmentState::Attached))
                .map(|h| h.0)
        };
        if let (Some(_), Some((_, who))) = (attached(b), &b.holder) {
            if attached(a) != attached(b) {
                tell(EventKind::VolumeAttached, format!("attached to {who}"));
            }
        }
        if let (Some((_, who)), None) = (&a.holder, &b.holder) {
            tell(EventKind::VolumeDetached, format!("released by {who}"));
        }
        for (was, now) in [(&a.error, &b.error), (&a.attach_error, &b.attach_error)] {
            if let Some(e) = now.as_ref().filter(|e| Some(*e) != was.as_ref()) {
                tell(EventKind::VolumeError, e.clone());
            }
        }
    }
    for gone in &out.purged {
        let msg = format!("its file removed from {}", gone.host_name);
        evs.push(new_event(EventKind::VolumeDeleted, &gone.name, msg));
    }
    evs
}

/// Tell followers of the report's committed events; wake what waits.
pub fn published(app: &App, out: VolumeReport) {
    let moved = !out.changed.is_empty() || !out.purged.is_empty();
    for ev in out.events {
        super::owned::publish(app, ev);
    }
    if moved {
        app.ops_changed();
        app.kick.notify_one();
    }
}
