use super::*;
use crate::store::volume::VolumeFacts;
use crate::store::{new_operation, HostId, InstanceId};
use cm_api::ids::VolumeId;

fn vol() -> VolumeRow {
    VolumeRow {
        id: VolumeId::new_v4(),
        name: "data".into(),
        host_id: HostId::new_v4(),
        host_name: "h1".into(),
        size_bytes: 10 << 20,
        instance: None,
        attach_pos: 0,
        attach_gen: 0,
        force_detach: false,
        deleted: false,
        deleted_gen: None,
        intent_gen: 1,
        image: None,
        root_of: None,
        facts: VolumeFacts::default(),
        created_at: 0,
        updated_at: 0,
    }
}

fn op(kind: K, want: u64, v: &VolumeRow) -> OperationRow {
    OperationRow {
        op: new_operation(kind, &v.name, v.id, "requested"),
        want,
    }
}

fn is_failed(o: &Outcome, words: &str) -> bool {
    match o {
        Outcome::Done(OperationStatus::Failed, _, Some(e)) => e.message.contains(words),
        _ => false,
    }
}

#[test]
fn create_and_resize_complete_from_the_reported_file() {
    let mut v = vol();
    let create = op(K::VolumeCreate, 0, &v);
    assert!(matches!(
        evaluate(&create, Some(&v), true).0,
        Outcome::Running(_)
    ));
    match evaluate(&create, Some(&v), false).0 {
        Outcome::Running(p) => assert!(p.contains("down"), "{p}"),
        o => panic!("{o:?}"),
    }
    v.facts.error = Some("disk full".into());
    assert!(is_failed(&evaluate(&create, Some(&v), true).0, "disk full"));
    v.facts = VolumeFacts {
        size_bytes: Some(10 << 20),
        ..Default::default()
    };
    assert_eq!(evaluate(&create, Some(&v), true).0, ok("made"));
    let resize = op(K::VolumeResize, 20 << 20, &v);
    assert!(matches!(
        evaluate(&resize, Some(&v), true).0,
        Outcome::Running(_)
    ));
    v.facts.size_bytes = Some(20 << 20);
    assert_eq!(evaluate(&resize, Some(&v), true).0, ok("grown"));
}

#[test]
fn a_failed_attach_is_undone_and_a_refused_detach_keeps_the_volume_attached() {
    let i = InstanceId::new_v4();
    let mut v = vol();
    v.facts.size_bytes = Some(v.size_bytes);
    v.instance = Some((i, "web".into()));
    v.attach_gen = 1;
    let attach = op(K::VolumeAttach, 1, &v);
    assert!(matches!(
        evaluate(&attach, Some(&v), true).0,
        Outcome::Running(_)
    ));
    v.facts.holder = Some((i, "web".into()));
    v.facts.attach_error = Some("device_add: bus full".into());
    let (o, undo) = evaluate(&attach, Some(&v), true);
    assert!(is_failed(&o, "bus full"), "{o:?}");
    assert_eq!(
        undo,
        Some(VolumeChange::Revert {
            expected: 1,
            to: None
        })
    );
    v.facts.attach_error = None;
    v.facts.attach_state = Some(AttachmentState::Attached);
    assert_eq!(evaluate(&attach, Some(&v), true), (ok("attached"), None));
    // Detached since: the attach that waited is superseded.
    v.instance = None;
    v.attach_gen = 2;
    assert!(is_failed(&evaluate(&attach, Some(&v), true).0, "detached"));
    let detach = op(K::VolumeDetach, 2, &v);
    assert!(matches!(
        evaluate(&detach, Some(&v), true).0,
        Outcome::Running(_)
    ));
    v.facts.attach_state = Some(AttachmentState::Detaching);
    v.facts.attach_error = Some("the guest did not release it within 30 s".into());
    let (o, undo) = evaluate(&detach, Some(&v), true);
    assert!(is_failed(&o, "--force"), "{o:?}");
    assert_eq!(
        undo,
        Some(VolumeChange::Revert {
            expected: 2,
            to: Some(i)
        })
    );
    // With force the host restarts the VM: the detach waits for it.
    v.force_detach = true;
    assert_eq!(evaluate(&detach, Some(&v), true).1, None);
    v.facts.holder = None;
    assert_eq!(evaluate(&detach, Some(&v), true), (ok("detached"), None));
}

#[test]
fn delete_completes_when_the_record_is_gone_and_host_down_gives_up() {
    let mut v = vol();
    v.deleted = true;
    let del = op(K::VolumeDelete, 0, &v);
    assert!(matches!(
        evaluate(&del, Some(&v), true).0,
        Outcome::Running(_)
    ));
    assert_eq!(evaluate(&del, None, true).0, ok("deleted"));
    let resize = op(K::VolumeResize, 1, &v);
    assert!(is_failed(&evaluate(&resize, Some(&v), true).0, "deleted"));
    let created = cm_api::time::timestamp_ms(del.op.created_at);
    let d = Duration::from_secs(60);
    assert!(gave_up(&del, "h1", Some(created), created + 1000, d).is_none());
    let late = gave_up(&del, "h1", Some(created), created + 61_000, d);
    assert!(
        matches!(late, Some(Outcome::Done(OperationStatus::Failed, _, Some(e))) if e.code == ErrorCode::HostUnavailable)
    );
}
