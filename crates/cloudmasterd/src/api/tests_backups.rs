//! `/v1/backups` and `/v1/backup-schedules` through the router: a backup
//! made by its host's report, listed, shown and deleted; a schedule's tick
//! and retention (the refusals: tests_backup_refusals.rs).

use super::router;
use super::tests::app;
use super::tests_volumes::{call, world};
use crate::app::backup_events;
use crate::state::App;
use crate::store::now_ms;
use crate::store::sqlite::tests::facts;
use axum::http::Method;
use cm_api::agent::{DiskRef, ObservedBackup};
use cm_api::backup::BackupKind;
use cm_api::snapshot::{Consistency, SnapshotOf};
use serde_json::json;
use uuid::Uuid;

pub(super) const MIB: u64 = 1 << 20;

/// What the host reports of a made backup.
pub(super) fn made(id: Uuid, disk: Uuid, kind: BackupKind) -> ObservedBackup {
    ObservedBackup {
        id,
        disk: DiskRef {
            of: SnapshotOf::Volume,
            disk,
            backup: None,
        },
        kind: Some(kind),
        full_reason: (kind == BackupKind::Full).then(|| "the first backup of this chain".into()),
        consistency: Some(Consistency::Offline),
        size_bytes: 1 << 30,
        file_bytes: 300 * MIB,
        took_ms: 1200,
        error: None,
        mirrored: None,
        mirror_error: None,
    }
}

/// h1 reports (its applied generation, then these backups).
pub(super) fn report(app: &App, seen: &[ObservedBackup]) {
    let s = app.store.as_ref();
    let h1 = s.get_host("h1").unwrap();
    let mut f = facts(1 << 20);
    f.disk_free_mib = 1000;
    s.record_report(h1.id, &f, h1.generation, &[], now_ms())
        .unwrap();
    s.record_backup_report(h1.id, seen, &backup_events::events, now_ms())
        .unwrap();
}

pub(super) async fn event_messages(r: &axum::Router, kind: &str) -> Vec<String> {
    let path = format!("/v1/events?type={kind}");
    let (st, v) = call(r, Method::GET, &path, None, None).await;
    assert_eq!(st, 200, "{v}");
    v.as_array()
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{} {}",
                e["target"].as_str().unwrap(),
                e["message"].as_str().unwrap()
            )
        })
        .collect()
}

pub(super) async fn volume(r: &axum::Router, name: &str, host: &str) {
    let body = json!({"name": name, "size_bytes": 8 * MIB, "host": host});
    let (st, v) = call(r, Method::POST, "/v1/volumes", Some(body), None).await;
    assert_eq!(st, 202, "{v}");
}

#[tokio::test]
async fn a_backup_is_made_by_its_host_listed_and_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path(), &[]);
    world(&app);
    let r = router(app.clone());
    volume(&r, "data", "h1").await;
    let h1_gen = app.store.get_host("h1").unwrap().generation;
    let body = json!({"volume": "data", "name": "b1"});
    let (st, v) = call(
        &r,
        Method::POST,
        "/v1/backups",
        Some(body.clone()),
        Some("k1"),
    )
    .await;
    assert_eq!(st, 202, "{v}");
    assert_eq!(v["backup"]["state"], "creating", "{v}");
    assert_eq!(v["backup"]["host"], "h1", "{v}");
    assert_eq!(v["backup"]["target"], "host", "{v}");
    assert_eq!(v["operation"]["kind"], "backup.create", "{v}");
    // The same key again: the same answer, nothing new.
    let (st2, again) = call(&r, Method::POST, "/v1/backups", Some(body), Some("k1")).await;
    assert_eq!((st2, &again["backup"]["id"]), (202, &v["backup"]["id"]));
    let h1 = app.store.get_host("h1").unwrap();
    assert!(h1.generation > h1_gen, "the host's chains changed");
    // Its desired state lists the chain.
    let chains = app.store.host_chains(h1.id).unwrap();
    let data = app.store.get_volume("data").unwrap().id.uuid();
    let b1: Uuid = v["backup"]["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(chains.len(), 1);
    assert_eq!((chains[0].disk.disk, &chains[0].backups), (data, &vec![b1]));
    // A second backup while the first is being made: refused.
    let (st, v) = call(
        &r,
        Method::POST,
        "/v1/backups",
        Some(json!({"volume": "data", "name": "b2"})),
        None,
    )
    .await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (409, Some("conflict")),
        "{v}"
    );
    // ... and so is deleting it.
    let (st, _) = call(&r, Method::DELETE, "/v1/backups/b1", None, None).await;
    assert_eq!(st, 409);

    report(&app, &[made(b1, data, BackupKind::Full)]);
    let (_, v) = call(&r, Method::GET, "/v1/backups/b1", None, None).await;
    assert_eq!(v["state"], "ready", "{v}");
    assert_eq!(v["kind"], "full", "{v}");
    assert_eq!(v["full_reason"], "the first backup of this chain", "{v}");
    assert_eq!(v["file_bytes"], 300 * MIB, "{v}");
    let words = "full (the first backup of this chain), offline consistency, 1.0G disk, \
                 300 MiB file, in 1.2 s";
    assert_eq!(
        event_messages(&r, "backup.created").await,
        vec![format!("b1 of data on h1: {words}")]
    );
    // A second report of the same facts tells nothing new.
    report(&app, &[made(b1, data, BackupKind::Full)]);
    assert_eq!(event_messages(&r, "backup.created").await.len(), 1);

    let (st, v) = call(
        &r,
        Method::POST,
        "/v1/backups",
        Some(json!({"volume": "data", "name": "b2"})),
        None,
    )
    .await;
    assert_eq!(st, 202, "{v}");
    let b2: Uuid = v["backup"]["id"].as_str().unwrap().parse().unwrap();
    report(
        &app,
        &[made(b1, data, BackupKind::Full), {
            let mut e = made(b2, data, BackupKind::Incremental);
            (e.kind, e.full_reason, e.consistency) = (None, None, None);
            e.error = Some("qemu-img: disk full".into());
            e
        }],
    );
    let (_, v) = call(&r, Method::GET, "/v1/backups/b2", None, None).await;
    assert_eq!(
        (&v["state"], &v["error"]),
        (&json!("error"), &json!("qemu-img: disk full"))
    );
    assert_eq!(event_messages(&r, "backup.error").await.len(), 1);
    // A failed one is no longer asked of the host.
    let chains = app.store.host_chains(h1.id).unwrap();
    assert_eq!(chains[0].backups, vec![b1]);

    let (_, v) = call(&r, Method::GET, "/v1/backups?volume=data", None, None).await;
    let names: Vec<_> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].clone())
        .collect();
    assert_eq!(names, vec![json!("b1"), json!("b2")]);
    let (_, v) = call(&r, Method::GET, "/v1/backups?instance=vm0", None, None).await;
    assert_eq!(v, json!([]));

    let (st, v) = call(&r, Method::DELETE, "/v1/backups/b1", None, None).await;
    assert_eq!(st, 202, "{v}");
    assert_eq!(v["operation"]["kind"], "backup.delete", "{v}");
    assert_eq!(v["backup"]["state"], "deleting", "{v}");
    assert_eq!(app.store.host_chains(h1.id).unwrap()[0].deleted, vec![b1]);
    // The host still holds it: deleting still.
    report(&app, &[made(b1, data, BackupKind::Full)]);
    let (st, _) = call(&r, Method::GET, "/v1/backups/b1", None, None).await;
    assert_eq!(st, 200);
    // Removed: the record is gone, with its event.
    report(&app, &[]);
    let (st, _) = call(&r, Method::GET, "/v1/backups/b1", None, None).await;
    assert_eq!(st, 404);
    assert_eq!(
        event_messages(&r, "backup.deleted").await,
        vec!["b1 removed from the chain of data on h1".to_string()]
    );
    // A backup outlives its volume.
    let (st, v) = call(&r, Method::DELETE, "/v1/volumes/data", None, None).await;
    assert_eq!(st, 202, "{v}");
    let (st, _) = call(&r, Method::GET, "/v1/backups/b2", None, None).await;
    assert_eq!(st, 200);
}

#[tokio::test]
async fn a_schedule_makes_backups_when_due_and_keeps_the_newest() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path(), &[]);
    world(&app);
    let r = router(app.clone());
    volume(&r, "data", "h1").await;
    let body = json!({"volume": "data", "every": "1m", "keep": 2});
    let (st, v) = call(&r, Method::POST, "/v1/backups", Some(body), None).await;
    assert_eq!(st, 202, "{v}");
    assert_eq!(v["schedule"]["name"], "data-every-1m", "{v}");
    assert_eq!(v["schedule"]["keep"], 2, "{v}");
    assert_eq!(v["backup"]["schedule"], "data-every-1m", "{v}");
    let first = v["backup"]["name"].as_str().unwrap().to_string();
    assert!(first.starts_with("data-2"), "{first}");
    let (_, v) = call(&r, Method::GET, "/v1/backup-schedules", None, None).await;
    assert_eq!(v.as_array().unwrap().len(), 1, "{v}");

    let s = app.store.as_ref();
    let data = s.get_volume("data").unwrap().id.uuid();
    let mut at = now_ms();
    let n = std::cell::Cell::new(0);
    let tick = |at: i64| {
        s.tick_backup_schedules(
            at,
            &|_| {
                n.set(n.get() + 1);
                format!("data-t{}", n.get())
            },
            &|id, name, kind| crate::store::new_operation(kind, name, id, "by its schedule"),
            &backup_events::tick_events,
        )
        .unwrap()
    };
    // Not due yet.
    assert!(tick(at).made.is_empty());
    // Due, but the first is still being made: skipped, not queued.
    at += 61_000;
    assert!(tick(at).made.is_empty());
    let ready = |app: &App| {
        let seen: Vec<_> = app
            .store
            .list_backups()
            .unwrap()
            .iter()
            .filter(|b| !b.deleted)
            .map(|b| made(b.id, data, BackupKind::Incremental))
            .collect();
        report(app, &seen);
    };
    ready(&app);
    let mut expired = Vec::new();
    for _ in 0..3 {
        at += 61_000;
        let out = tick(at);
        assert_eq!(out.made.len(), 1, "{out:?}");
        expired.extend(out.expired.iter().map(|b| b.name.clone()));
        ready(&app);
    }
    // Four made; each tick keeps the newest two ready ones.
    at += 1;
    let out = tick(at);
    expired.extend(out.expired.iter().map(|b| b.name.clone()));
    assert_eq!(expired, vec![first.clone(), "data-t1".to_string()]);
    let all = s.list_backups().unwrap();
    let live: Vec<_> = all
        .iter()
        .filter(|b| !b.deleted)
        .map(|b| b.name.clone())
        .collect();
    assert_eq!(live, vec!["data-t2", "data-t3"]);

    // The volume purged: the schedule ends with an event; backups stay.
    let (st, v) = call(&r, Method::DELETE, "/v1/volumes/data", None, None).await;
    assert_eq!(st, 202, "{v}");
    let h1 = s.get_host("h1").unwrap();
    s.record_report(h1.id, &facts(1 << 20), h1.generation, &[], now_ms())
        .unwrap();
    s.record_volume_report(h1.id, &[], &[], &|_| Vec::new(), now_ms())
        .unwrap();
    assert!(
        matches!(
            s.get_volume("data"),
            Err(crate::store::StoreError::NotFound { .. })
        ),
        "the volume is purged"
    );
    let out = tick(at + 1);
    assert_eq!(out.ended.len(), 1);
    assert_eq!(event_messages(&r, "backup.schedule").await.len(), 1);
    let (_, v) = call(&r, Method::GET, "/v1/backup-schedules", None, None).await;
    assert_eq!(v, json!([]));
    assert_eq!(s.get_backup("data-t3").unwrap().name, "data-t3");
}
