use super::*;
use crate::scheduler::Unplaced;
use cm_api::agent::{ObservedInstance, ObservedState};
use cm_api::image::{FileRole, ImageFile, ImageKind};
use cm_api::words::{EventKind, OperationKind};

pub(crate) fn facts(total: u64) -> HostFacts {
    HostFacts {
        memory_total_mib: total,
        memory_available_mib: total / 2,
        vcpus: 4,
        accel: cm_api::words::ResolvedAccel::Tcg,
        ..Default::default()
    }
}

pub(crate) fn image(s: &dyn Store) -> Image {
    let img = Image {
        id: Uuid::new_v4(),
        name: "tiny".into(),
        kind: ImageKind::Kernel,
        files: vec![ImageFile {
            role: FileRole::Kernel,
            size: 1,
            sha256: "00".into(),
            format: None,
            virtual_size: None,
        }],
        cmdline: None,
        created_at: to_ts(now_ms()),
    };
    s.insert_image(&img).unwrap();
    img
}

pub(crate) fn new_instance(name: &str, image: &Image, mem: u64) -> NewInstance {
    NewInstance {
        owner: None,
        health: None,
        volumes: Vec::new(),
        root: None,
        id: InstanceId::new_v4(),
        name: name.into(),
        image_id: image.id.into(),
        flavor: None,
        memory_mib: mem,
        vcpus: 1,
        disk_gib: 0,
        ports: vec![],
        restart_policy: Default::default(),
        accel: Default::default(),
        stop_timeout_secs: 30,
        dynamic_domain: None,
    }
}

pub(super) fn first_host(caps: &[HostCapacity]) -> std::result::Result<HostId, Unplaced> {
    Ok(caps[0].id)
}

pub(super) fn observed(id: Uuid, state: ObservedState, boot: u64) -> ObservedInstance {
    ObservedInstance {
        liveness: None,
        id,
        state,
        reason: None,
        boot_gen: boot,
        reboot_gen: 0,
        pid: Some(42),
        accel: Some(cm_api::words::ResolvedAccel::Tcg),
        since: to_ts(now_ms()),
        guest: None,
        volumes: Vec::new(),
        root_snapshots: Vec::new(),
        root_reverted_gen: 0,
        root_revert_error: None,
    }
}

#[test]
fn reopening_keeps_everything_and_migrates_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cloud.db");
    {
        let s = SqliteStore::open(&path).unwrap();
        s.set_setting("cloud_id", "abc").unwrap();
        s.register_host("h1", "hash1", &facts(1000), 100).unwrap();
    }
    let s = SqliteStore::open(&path).unwrap();
    assert_eq!(s.get_setting("cloud_id").unwrap().as_deref(), Some("abc"));
    assert_eq!(s.list_hosts().unwrap().len(), 1);
    assert_eq!(
        s.list_flavors().unwrap().len(),
        cm_api::image::builtin_flavors().len()
    );
}

#[test]
fn promised_memory_counts_every_instance_until_purged() {
    let s = SqliteStore::in_memory().unwrap();
    let h = s.register_host("h1", "t", &facts(4096), 0).unwrap();
    let img = image(&s);
    let n = new_instance("a", &img, 512);
    let op = new_operation(OperationKind::InstanceCreate, "a", n.id, "placed");
    let row = s
        .create_instance(&n, None, &first_host, &op, None, now_ms())
        .unwrap();
    assert_eq!(row.host_id, h);
    assert_eq!(s.get_host("h1").unwrap().promised_mib, 512);
    // Deleted but not yet removed by the host: still promised.
    let ch = s
        .change_instance(n.id, DesiredChange::Delete, None, now_ms())
        .unwrap();
    assert!(ch.effective);
    let host_generation = s.get_host("h1").unwrap().generation;
    assert_eq!(s.get_host("h1").unwrap().promised_mib, 512);
    assert_eq!(s.get_host("h1").unwrap().instance_count, 0);
    // A report from before the deletion was applied does not purge it.
    let out = s
        .record_report(h, &facts(4096), host_generation - 1, &[], now_ms())
        .unwrap();
    assert!(out.purged.is_empty());
    let out = s
        .record_report(h, &facts(4096), host_generation, &[], now_ms())
        .unwrap();
    assert_eq!(out.purged.len(), 1);
    assert_eq!(s.get_host("h1").unwrap().promised_mib, 0);
}

#[test]
fn live_names_are_unique_but_a_deleting_name_can_be_reused() {
    let s = SqliteStore::in_memory().unwrap();
    s.register_host("h1", "t", &facts(4096), 0).unwrap();
    let img = image(&s);
    let a = new_instance("web", &img, 128);
    s.create_instance(
        &a,
        None,
        &first_host,
        &new_operation(OperationKind::InstanceCreate, "web", a.id, ""),
        None,
        now_ms(),
    )
    .unwrap();
    let b = new_instance("web", &img, 128);
    let err = s
        .create_instance(
            &b,
            None,
            &first_host,
            &new_operation(OperationKind::InstanceCreate, "web", b.id, ""),
            None,
            now_ms(),
        )
        .unwrap_err();
    assert!(matches!(err, StoreError::AlreadyExists(_)), "{err}");
    s.change_instance(a.id, DesiredChange::Delete, None, now_ms())
        .unwrap();
    s.create_instance(
        &b,
        None,
        &first_host,
        &new_operation(OperationKind::InstanceCreate, "web", b.id, ""),
        None,
        now_ms(),
    )
    .unwrap();
    assert_eq!(s.get_instance("web").unwrap().id, b.id);
    assert!(s.get_instance(&a.id.to_string()).unwrap().desired.deleted);
}

#[test]
fn a_refused_placement_writes_nothing() {
    let s = SqliteStore::in_memory().unwrap();
    s.register_host("h1", "t", &facts(4096), 0).unwrap();
    let img = image(&s);
    let n = new_instance("big", &img, 1 << 20);
    let refuse = |_: &[HostCapacity]| {
        Err(Unplaced::NoCapacity {
            message: "full".into(),
            field: "memory_mib",
        })
    };
    let err = s
        .create_instance(
            &n,
            None,
            &refuse,
            &new_operation(OperationKind::InstanceCreate, "big", n.id, ""),
            None,
            now_ms(),
        )
        .unwrap_err();
    assert!(matches!(err, StoreError::Unplaced(_)));
    assert!(s.list_instances().unwrap().is_empty());
    assert!(s.list_operations(10).unwrap().is_empty());
}

#[test]
fn reports_update_observed_state_and_start_is_idempotent() {
    let s = SqliteStore::in_memory().unwrap();
    let h = s.register_host("h1", "t", &facts(4096), 0).unwrap();
    let img = image(&s);
    let n = new_instance("a", &img, 128);
    s.create_instance(
        &n,
        None,
        &first_host,
        &new_operation(OperationKind::InstanceCreate, "a", n.id, ""),
        None,
        now_ms(),
    )
    .unwrap();
    // A start while the first boot is pending changes nothing.
    let ch = s
        .change_instance(n.id, DesiredChange::Start, None, now_ms())
        .unwrap();
    assert!(!ch.effective);
    assert_eq!(ch.row.desired.boot_gen, 1);
    let out = s
        .record_report(
            h,
            &facts(4096),
            2,
            &[observed(n.id.uuid(), ObservedState::Running, 1)],
            now_ms(),
        )
        .unwrap();
    assert_eq!(out.changed.len(), 1);
    let row = s.get_instance("a").unwrap();
    assert_eq!(row.observed.state, Some(ObservedState::Running));
    assert!(row.restart.running_since.is_some());
    // The same report again is no change.
    let out = s
        .record_report(
            h,
            &facts(4096),
            2,
            &[observed(n.id.uuid(), ObservedState::Running, 1)],
            now_ms(),
        )
        .unwrap();
    assert!(out.changed.is_empty());
    // Crashed: the restart policy sees it as down.
    s.record_report(
        h,
        &facts(4096),
        2,
        &[observed(n.id.uuid(), ObservedState::Stopped, 1)],
        now_ms(),
    )
    .unwrap();
    assert_eq!(s.instances_down().unwrap().len(), 1);
    let ch = s
        .change_instance(
            n.id,
            DesiredChange::Restart {
                expected_boot_gen: 1,
                backoff_step: 1,
            },
            None,
            now_ms(),
        )
        .unwrap();
    assert!(ch.effective);
    assert_eq!(ch.row.desired.boot_gen, 2);
    assert_eq!(ch.row.restart.count, 1);
    // A second restart for the same boot is ignored.
    let ch = s
        .change_instance(
            n.id,
            DesiredChange::Restart {
                expected_boot_gen: 1,
                backoff_step: 1,
            },
            None,
            now_ms(),
        )
        .unwrap();
    assert!(!ch.effective);
    assert!(s.instances_down().unwrap().is_empty());
}

#[test]
fn operations_finish_once() {
    let s = SqliteStore::in_memory().unwrap();
    s.register_host("h1", "t", &facts(4096), 0).unwrap();
    let img = image(&s);
    let n = new_instance("a", &img, 128);
    let op = new_operation(OperationKind::InstanceCreate, "a", n.id, "placed");
    s.create_instance(&n, None, &first_host, &op, None, now_ms())
        .unwrap();
    assert_eq!(s.running_operations().unwrap().len(), 1);
    s.finish_operation(op.id, OperationStatus::Succeeded, "running", None, now_ms())
        .unwrap();
    s.finish_operation(op.id, OperationStatus::Failed, "x", None, now_ms())
        .unwrap();
    let got = s.get_operation(op.id).unwrap();
    assert_eq!(got.op.status, OperationStatus::Succeeded);
    assert!(s.running_operations().unwrap().is_empty());
}

#[test]
fn events_are_ordered_and_filtered() {
    let s = SqliteStore::in_memory().unwrap();
    let a = s
        .append_event(EventKind::InstanceState, "a", "running", now_ms())
        .unwrap();
    let b = s
        .append_event(EventKind::HostState, "h1", "down", now_ms())
        .unwrap();
    assert!(b.seq > a.seq);
    assert_eq!(s.events_since(0, None, 10).unwrap().len(), 2);
    assert_eq!(s.events_since(a.seq, None, 10).unwrap().len(), 1);
    assert_eq!(
        s.events_since(0, Some("host.state"), 10).unwrap()[0].target,
        "h1"
    );
}

/// `cm instance show NAME` reads one row through indexes, whatever the
/// number of instances (before 0008 it scanned the table: 104 req/s with
/// 20,000 in the store).
#[test]
fn an_instance_is_found_by_id_or_name_without_a_scan() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(&dir.path().join("cloud.db")).unwrap();
    let plan: Vec<String> = s
        .read(|c| {
            let mut st = c.prepare(&format!("EXPLAIN QUERY PLAN {}", instances::get_sql()))?;
            let rows = st.query_map(["x"], |r| r.get::<_, String>(3))?;
            Ok(rows.collect::<rusqlite::Result<Vec<String>>>()?)
        })
        .unwrap();
    assert!(
        plan.iter().any(|l| l.contains("instances_name")),
        "{plan:?}"
    );
    assert!(!plan.iter().any(|l| l.starts_with("SCAN i")), "{plan:?}");
}

/// A host's sums over its instances are read from an index alone (0009).
#[test]
fn host_sums_are_read_from_a_covering_index() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(&dir.path().join("cloud.db")).unwrap();
    let plan: Vec<String> = s
        .read(|c| {
            let mut st = c.prepare(&format!("EXPLAIN QUERY PLAN {}", hosts::list_sql()))?;
            let rows = st.query_map([], |r| r.get::<_, String>(3))?;
            Ok(rows.collect::<rusqlite::Result<Vec<String>>>()?)
        })
        .unwrap();
    let sums: Vec<&String> = plan.iter().filter(|l| l.contains("instances")).collect();
    assert_eq!(sums.len(), 2, "{plan:?}");
    assert!(
        sums.iter()
            .all(|l| l.contains("USING COVERING INDEX instances_host_sums")),
        "{plan:?}"
    );
}

#[test]
fn the_generation_grows_with_every_committed_write_and_only_then() {
    let s = SqliteStore::in_memory().unwrap();
    let g0 = s.generation();
    s.list_instances().unwrap();
    s.all_host_liveness().unwrap();
    assert_eq!(s.generation(), g0, "reads change nothing");
    s.set_setting("k", "v").unwrap();
    assert_eq!(s.generation(), g0 + 1);
    // A refused write (nothing committed) leaves it.
    let img = image(&s);
    let g1 = s.generation();
    let n = new_instance("x", &img, 64);
    let refuse = |_: &[HostCapacity]| {
        Err(Unplaced::NoCapacity {
            message: "full".into(),
            field: "memory_mib",
        })
    };
    let op = new_operation(OperationKind::InstanceCreate, "x", n.id, "");
    s.create_instance(&n, None, &refuse, &op, None, now_ms())
        .unwrap_err();
    assert_eq!(s.generation(), g1);
}

/// The joins read per request are prepared once per connection: a new
/// binding does not re-prepare them (see `instances::P1`).
#[test]
fn joined_reads_are_not_re_prepared_for_each_binding() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(&dir.path().join("cloud.db")).unwrap();
    let by_host = format!(
        "SELECT {} FROM {} WHERE i.host_id = {} AND i.deleted = 0 ORDER BY i.name, i.created_at",
        instances::COLS,
        instances::FROM,
        instances::P1
    );
    s.read(|c| {
        for sql in [instances::get_sql(), by_host] {
            for v in ["a", "b", "c"] {
                let mut st = c.prepare_cached(&sql)?;
                let mut rows = st.query([v])?;
                while rows.next()?.is_some() {}
            }
            let st = c.prepare_cached(&sql)?;
            assert_eq!(
                st.get_status(rusqlite::StatementStatus::RePrepare),
                0,
                "{sql}"
            );
        }
        Ok(())
    })
    .unwrap();
}

#[test]
fn an_event_keeps_its_engine_detail_and_is_found_by_deployable() {
    use cm_api::event::EventDetail;
    use cm_api::words::EngineAction;
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(&dir.path().join("cloud.db")).unwrap();
    let detail = EventDetail {
        deployable: Some("shop".into()),
        generation: Some(2),
        object: Some("web-2".into()),
        from: Some("silent".into()),
        to: Some("replaced".into()),
        reason: Some("silent 3.0s (timeout 3s)".into()),
        action: Some(EngineAction::Replace),
        counters: [("replace".to_string(), "1/3 in 10m".to_string())].into(),
    };
    s.append_event(EventKind::HostState, "h1", "host h1 is up", 1)
        .unwrap();
    let written = s
        .append_event_detail(
            EventKind::DeployableAction,
            "web-2",
            "web-2 replaced",
            &detail,
            2,
        )
        .unwrap();
    assert_eq!(written.detail, detail);
    let only = s
        .events_filtered(
            0,
            &EventFilter {
                kind: None,
                deployable: Some("shop".into()),
            },
            10,
        )
        .unwrap();
    assert_eq!(only.len(), 1);
    assert_eq!(only[0], written);
    let all = s.events_since(0, None, 10).unwrap();
    assert_eq!(all.len(), 2);
    assert!(all[0].detail.is_empty());
}
