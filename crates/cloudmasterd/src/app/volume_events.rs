//! The `volume.*` events a host's report makes: a file made, grown or
//! removed, a disk attached or released, a failure.

use crate::state::App;
use crate::store::volume::VolumeReport;
use cm_api::agent::AttachmentState;
use cm_api::volume::human_size;
use cm_api::words::EventKind;

pub async fn report(app: &App, out: &VolumeReport) {
    for ch in &out.changed {
        let (a, b) = (&ch.before.facts, &ch.after.facts);
        let name = &ch.after.name;
        match (a.size_bytes, b.size_bytes) {
            (None, Some(size)) => {
                let msg = format!("made on {}: {}", ch.after.host_name, human_size(size));
                app.event(EventKind::VolumeCreated, name, &msg).await;
            }
            (Some(x), Some(y)) if y > x => {
                let msg = format!("grown from {} to {}", human_size(x), human_size(y));
                app.event(EventKind::VolumeResized, name, &msg).await;
            }
            _ => {}
        }
        let attached = |f: &crate::store::volume::VolumeFacts| {
            f.holder
                .as_ref()
                .filter(|_| f.attach_state == Some(AttachmentState::Attached))
                .map(|h| h.0)
        };
        if let (Some(_), Some((_, who))) = (attached(b), &b.holder) {
            if attached(a) != attached(b) {
                let msg = format!("attached to {who}");
                app.event(EventKind::VolumeAttached, name, &msg).await;
            }
        }
        if let (Some((_, who)), None) = (&a.holder, &b.holder) {
            let msg = format!("released by {who}");
            app.event(EventKind::VolumeDetached, name, &msg).await;
        }
        for (was, now) in [(&a.error, &b.error), (&a.attach_error, &b.attach_error)] {
            if let Some(e) = now.as_ref().filter(|e| Some(*e) != was.as_ref()) {
                app.event(EventKind::VolumeError, name, e).await;
            }
        }
    }
    for gone in &out.purged {
        let msg = format!("its file removed from {}", gone.host_name);
        app.event(EventKind::VolumeDeleted, &gone.name, &msg).await;
    }
    if !out.changed.is_empty() || !out.purged.is_empty() {
        app.ops_changed();
        app.kick.notify_one();
    }
}
