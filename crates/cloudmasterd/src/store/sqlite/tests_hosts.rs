//! Host identity, revocation, evacuation and orphans in the store.

use super::tests::{facts, first_host, image, new_instance, observed};
use super::*;
use crate::scheduler::Unplaced;
use cm_api::agent::{ObservedState, OrphanVm};
use cm_api::words::OperationKind;

fn create(s: &SqliteStore, name: &str, img: &Image, host: HostId) -> InstanceId {
    let n = new_instance(name, img, 128);
    let place = move |caps: &[HostCapacity]| -> std::result::Result<HostId, Unplaced> {
        Ok(caps
            .iter()
            .find(|c| c.id == host)
            .map(|c| c.id)
            .unwrap_or(caps[0].id))
    };
    s.create_instance(
        &n,
        None,
        &place,
        &new_operation(OperationKind::InstanceCreate, name, n.id, ""),
        None,
        now_ms(),
    )
    .unwrap();
    n.id
}

#[test]
fn a_registered_name_is_refused_and_keeps_its_record_and_token() {
    let s = SqliteStore::in_memory().unwrap();
    let a = s.register_host("h1", "t1", &facts(1000), 0).unwrap();
    let err = s.register_host("h1", "t2", &facts(1000), 0).unwrap_err();
    match err {
        StoreError::Conflict(m) => {
            assert_eq!(m, "host h1 is registered; `cm host remove h1` first")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(s.get_host("h1").unwrap().id, a);
    let tokens = s.all_tokens().unwrap();
    assert_eq!(tokens.len(), 1);
    assert_eq!(tokens[0].0, "t1");
}

#[test]
fn every_token_change_moves_the_epoch() {
    let s = SqliteStore::in_memory().unwrap();
    let e0 = s.token_epoch().unwrap();
    s.replace_admin_token("a1").unwrap();
    let e1 = s.token_epoch().unwrap();
    assert!(e1 > e0);
    s.register_host("h1", "t1", &facts(1000), 0).unwrap();
    let e2 = s.token_epoch().unwrap();
    assert!(e2 > e1);
    s.delete_host("h1", false, now_ms()).unwrap();
    assert!(s.token_epoch().unwrap() > e2);
    assert_eq!(s.all_tokens().unwrap().len(), 1);
}

#[test]
fn removing_a_host_with_instances_needs_force_and_forgets_them() {
    let s = SqliteStore::in_memory().unwrap();
    let h = s.register_host("h1", "t1", &facts(4096), 0).unwrap();
    let img = image(&s);
    let id = create(&s, "a", &img, h);
    let err = s.delete_host("h1", false, now_ms()).unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict(ref m) if m.contains("--force")),
        "{err}"
    );
    assert_eq!(s.all_tokens().unwrap().len(), 1, "nothing changed");
    let (row, forgotten) = s.delete_host("h1", true, now_ms()).unwrap();
    assert_eq!(row.id, h);
    assert_eq!(forgotten.len(), 1);
    assert_eq!(forgotten[0].id, id);
    assert!(s.list_instances().unwrap().is_empty());
    assert!(s.all_tokens().unwrap().is_empty());
    let op = &s.list_operations(10).unwrap()[0];
    assert_eq!(op.status, OperationStatus::Failed);
    assert_eq!(
        op.error.as_ref().unwrap().code,
        cm_api::ErrorCode::HostUnavailable
    );
}

#[test]
fn evacuation_moves_live_instances_all_or_nothing() {
    let s = SqliteStore::in_memory().unwrap();
    let dead = s.register_host("dead", "t1", &facts(4096), 0).unwrap();
    let img = image(&s);
    let a = create(&s, "a", &img, dead);
    let b = create(&s, "b", &img, dead);
    s.change_instance(b, DesiredChange::Stop { timeout_secs: 0 }, None, now_ms())
        .unwrap();
    let gone = create(&s, "gone", &img, dead);
    s.change_instance(gone, DesiredChange::Delete, None, now_ms())
        .unwrap();
    // Applied nothing yet: the deleted one waits for its host.
    s.record_report(
        dead,
        &facts(4096),
        0,
        &[observed(a.uuid(), ObservedState::Running, 1)],
        now_ms(),
    )
    .unwrap();
    // Not down: refused.
    let up = |_: &HostRow| false;
    let err = s
        .evacuate_host("dead", false, &up, &|_, c| first_host(c), now_ms())
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Refused { ref message, field: "force" } if message.contains("not down"))
    );
    // No other host: refused, nothing moved.
    let down = |_: &HostRow| true;
    let err = s
        .evacuate_host(
            "dead",
            false,
            &down,
            &|_, c| first_host_or_none(c),
            now_ms(),
        )
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Unplaced(ref u) if u.to_string() == "cannot place a: no host"),
        "{err}"
    );
    assert_eq!(s.get_instance("a").unwrap().host_id, dead);
    let other = s.register_host("other", "t2", &facts(4096), 0).unwrap();
    let (host, moved) = s
        .evacuate_host("dead", false, &down, &|_, c| first_host(c), now_ms())
        .unwrap();
    assert_eq!(host.id, dead);
    assert_eq!(moved.len(), 2, "the deleted one stays with its host");
    let a_row = s.get_instance("a").unwrap();
    assert_eq!(a_row.host_id, other);
    assert_eq!(a_row.desired.boot_gen, 2, "a new boot on the new host");
    assert_eq!(a_row.observed.state, None);
    assert!(moved.iter().any(|m| m.row.id == a && m.op.is_some()));
    assert!(moved.iter().any(|m| m.row.id == b && m.op.is_none()));
    assert_eq!(s.get_instance("b").unwrap().desired.power, Power::Stopped);
    assert_eq!(s.host_deletions(dead).unwrap(), vec![gone.uuid()]);
    assert!(s.host_desired(dead).unwrap().1.is_empty());
}

fn first_host_or_none(caps: &[HostCapacity]) -> std::result::Result<HostId, Unplaced> {
    caps.first()
        .map(|c| c.id)
        .ok_or_else(|| Unplaced::NoCapacity {
            message: "no host".into(),
            field: "host",
        })
}

#[test]
fn instances_holding_data_are_never_evacuated() {
    let s = SqliteStore::in_memory().unwrap();
    let dead = s.register_host("dead", "t1", &facts(4096), 0).unwrap();
    s.register_host("other", "t2", &facts(4096), 0).unwrap();
    let img = image(&s);
    let a = create(&s, "a", &img, dead);
    s.tx(|t| {
        t.execute(
            "UPDATE instances SET holds_data = 1 WHERE id = ?1",
            [a.to_string()],
        )?;
        Ok(())
    })
    .unwrap();
    let err = s
        .evacuate_host("dead", false, &|_| true, &|_, c| first_host(c), now_ms())
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict(ref m) if m.contains("a")),
        "{err}"
    );
    assert_eq!(s.get_instance("a").unwrap().host_id, dead);
}

fn orphan(id: Uuid, name: &str) -> OrphanVm {
    OrphanVm {
        id,
        name: name.into(),
        state: ObservedState::Stopped,
        disk_bytes: 4096,
    }
}

#[test]
fn orphans_follow_reports_and_purges_are_recorded_deletions() {
    let s = SqliteStore::in_memory().unwrap();
    let h = s.register_host("h1", "t1", &facts(4096), 0).unwrap();
    let img = image(&s);
    let own = create(&s, "mine", &img, h);
    let (x, y) = (Uuid::new_v4(), Uuid::new_v4());
    let new = s
        .record_orphans(
            h,
            &[orphan(x, "x"), orphan(y, "y"), orphan(own.uuid(), "mine")],
            1,
        )
        .unwrap();
    assert_eq!(new.len(), 2, "its own instance is no orphan");
    assert!(s
        .record_orphans(h, &[orphan(x, "x"), orphan(y, "y")], 2)
        .unwrap()
        .is_empty());
    let list = s.list_orphans(h).unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!((list[0].first_seen, list[0].last_seen), (1, 2));
    assert!(s.host_deletions(h).unwrap().is_empty());
    let g = s.host_desired(h).unwrap().0;
    let err = s.purge_orphans(h, &[Uuid::new_v4()]).unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }));
    let purged = s.purge_orphans(h, &[x]).unwrap();
    assert_eq!(purged.len(), 1);
    assert!(purged[0].purge);
    assert!(s.host_desired(h).unwrap().0 > g, "the host hears of it");
    assert_eq!(s.host_deletions(h).unwrap(), vec![x]);
    // The host removed it: it leaves the list and the deletions.
    s.record_orphans(h, &[orphan(y, "y")], 3).unwrap();
    assert_eq!(s.list_orphans(h).unwrap().len(), 1);
    assert!(s.host_deletions(h).unwrap().is_empty());
    // An orphan whose instance lives on elsewhere says where.
    let other = s.register_host("h2", "t2", &facts(4096), 0).unwrap();
    let moved = create(&s, "moved", &img, other);
    s.record_orphans(h, &[orphan(y, "y"), orphan(moved.uuid(), "moved")], 4)
        .unwrap();
    let list = s.list_orphans(h).unwrap();
    let m = list.iter().find(|o| o.vm_id == moved.uuid()).unwrap();
    assert_eq!(m.now_on_host.as_deref(), Some("h2"));
}

#[test]
fn a_hosts_liveness_is_what_its_row_says() {
    let s = SqliteStore::in_memory().unwrap();
    let a = s.register_host("h1", "t1", &facts(1000), 0).unwrap();
    s.update_host("h1", Some(false), None).unwrap();
    let row = s.get_host("h1").unwrap();
    let live = s.host_liveness(a).unwrap();
    assert_eq!((live.last_seen, live.enabled), (row.last_seen, row.enabled));
    assert!(!live.enabled);
    let unknown = HostId::from(Uuid::new_v4());
    assert!(matches!(
        s.host_liveness(unknown),
        Err(StoreError::NotFound { what: "host", .. })
    ));
}
