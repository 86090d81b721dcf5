//! `/v1/backups` and `/v1/backup-schedules` through the router: a backup
//! made by its host's report, listed, shown and deleted; a schedule's tick
//! and retention; every refusal of docs/storage.md ("Backups (point 6)")
//! is its status, code and field and writes nothing.

use super::router;
use super::tests::app;
use super::tests_volumes::{call, world, Case};
use crate::app::backup_events;
use crate::state::App;
use crate::store::now_ms;
use crate::store::sqlite::tests::facts;
use axum::http::Method;
use cm_api::agent::{DiskRef, ObservedBackup};
use cm_api::backup::BackupKind;
use cm_api::snapshot::{Consistency, SnapshotOf};
use serde_json::{json, Value};
use uuid::Uuid;

const MIB: u64 = 1 << 20;

/// What the host reports of a made backup.
fn made(id: Uuid, disk: Uuid, kind: BackupKind) -> ObservedBackup {
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
    }
}

/// h1 reports (its applied generation, then these backups).
fn report(app: &App, seen: &[ObservedBackup]) {
    let s = app.store.as_ref();
    let h1 = s.get_host("h1").unwrap();
    let mut f = facts(1 << 20);
    f.disk_free_mib = 1000;
    s.record_report(h1.id, &f, h1.generation, &[], now_ms())
        .unwrap();
    s.record_backup_report(h1.id, seen, &backup_events::events, now_ms())
        .unwrap();
}

async fn event_messages(r: &axum::Router, kind: &str) -> Vec<String> {
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

async fn volume(r: &axum::Router, name: &str, host: &str) {
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

#[tokio::test]
async fn every_backup_refusal_has_its_code_and_field_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path(), &[]);
    world(&app);
    let r = router(app.clone());
    volume(&r, "data", "h1").await;
    let body = json!({"volume": "data", "name": "b1", "every": "1h"});
    let (st, v) = call(&r, Method::POST, "/v1/backups", Some(body), None).await;
    assert_eq!(st, 202, "{v}");
    let some = |b: Value| Some(b);
    let post = Method::POST;
    let cases: Vec<Case> = vec![
        (
            "neither a volume nor an instance",
            post.clone(),
            "/v1/backups",
            some(json!({"name": "z"})),
            (400, "invalid_input", Some("volume")),
        ),
        (
            "both a volume and an instance",
            post.clone(),
            "/v1/backups",
            some(json!({"volume": "data", "instance": "vm0"})),
            (400, "invalid_input", Some("volume")),
        ),
        (
            "no such volume",
            post.clone(),
            "/v1/backups",
            some(json!({"volume": "ghost"})),
            (404, "not_found", Some("volume")),
        ),
        (
            "no such instance",
            post.clone(),
            "/v1/backups",
            some(json!({"instance": "ghost"})),
            (404, "not_found", Some("instance")),
        ),
        (
            "a target not built",
            post.clone(),
            "/v1/backups",
            some(json!({"volume": "data", "to": "ssh://far"})),
            (400, "invalid_input", Some("to")),
        ),
        (
            "every unreadable",
            post.clone(),
            "/v1/backups",
            some(json!({"volume": "data", "every": "often"})),
            (400, "invalid_input", Some("every")),
        ),
        (
            "every under a minute",
            post.clone(),
            "/v1/backups",
            some(json!({"volume": "data", "every": "30s"})),
            (400, "invalid_input", Some("every")),
        ),
        (
            "keep without every",
            post.clone(),
            "/v1/backups",
            some(json!({"volume": "data", "keep": 3})),
            (400, "invalid_input", Some("keep")),
        ),
        (
            "keep out of range",
            post.clone(),
            "/v1/backups",
            some(json!({"volume": "data", "every": "1d", "keep": 0})),
            (400, "invalid_input", Some("keep")),
        ),
        (
            "a bad name",
            post.clone(),
            "/v1/backups",
            some(json!({"volume": "data", "name": "Bad!"})),
            (400, "invalid_input", Some("name")),
        ),
        (
            "an unknown field",
            post.clone(),
            "/v1/backups",
            some(json!({"volume": "data", "color": "red"})),
            (400, "invalid_input", Some("color")),
        ),
        (
            "a name taken",
            post.clone(),
            "/v1/backups",
            some(json!({"volume": "data", "name": "b1"})),
            (409, "already_exists", Some("name")),
        ),
        (
            "a schedule taken",
            post.clone(),
            "/v1/backups",
            some(json!({"volume": "data", "name": "b9", "every": "1h"})),
            (409, "already_exists", Some("name")),
        ),
        (
            "a backup while the chain's last is being made",
            post.clone(),
            "/v1/backups",
            some(json!({"volume": "data", "name": "b2"})),
            (409, "conflict", None),
        ),
        (
            "a delete of one being made",
            Method::DELETE,
            "/v1/backups/b1",
            None,
            (409, "conflict", None),
        ),
        (
            "a delete of no backup",
            Method::DELETE,
            "/v1/backups/ghost",
            None,
            (404, "not_found", None),
        ),
        (
            "a show of no backup",
            Method::GET,
            "/v1/backups/ghost",
            None,
            (404, "not_found", None),
        ),
        (
            "an unschedule of no schedule",
            Method::DELETE,
            "/v1/backup-schedules/ghost",
            None,
            (404, "not_found", None),
        ),
    ];
    let mut wrong = Vec::new();
    for (what, m, path, body, want) in cases {
        let before = app.store.generation();
        let (st, v) = call(&r, m, path, body, None).await;
        let got = (
            st,
            v["error"]["code"].as_str().unwrap_or(""),
            v["error"]["field"].as_str(),
        );
        if got != want {
            wrong.push(format!("{what}: got {got:?}, want {want:?}: {v}"));
        }
        if app.store.generation() != before {
            wrong.push(format!("{what}: wrote to the store"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // A volume being deleted is refused.
    let (st, _) = call(&r, Method::DELETE, "/v1/volumes/data", None, None).await;
    assert_eq!(st, 202);
    let (st, v) = call(
        &r,
        Method::POST,
        "/v1/backups",
        Some(json!({"volume": "data", "name": "late"})),
        None,
    )
    .await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (409, Some("conflict")),
        "{v}"
    );
    let (st, v) = call(
        &r,
        Method::DELETE,
        "/v1/backup-schedules/data-every-1h",
        None,
        None,
    )
    .await;
    assert_eq!((st, &v["name"]), (200, &json!("data-every-1h")), "{v}");
}

#[tokio::test]
async fn a_restore_is_a_transfer_from_the_chain_imported_on_another_host() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path(), &[]);
    world(&app);
    let r = router(app.clone());
    volume(&r, "data", "h1").await;
    let s = app.store.as_ref();
    let data = s.get_volume("data").unwrap().id.uuid();
    let mut ids = Vec::new();
    for name in ["b1", "big"] {
        let body = json!({"volume": "data", "name": name});
        let (st, v) = call(&r, Method::POST, "/v1/backups", Some(body), None).await;
        assert_eq!(st, 202, "{v}");
        ids.push(v["backup"]["id"].as_str().unwrap().parse::<Uuid>().unwrap());
        let mut small = made(ids[0], data, BackupKind::Full);
        small.size_bytes = 8 * MIB;
        let mut seen = vec![small];
        if ids.len() == 2 {
            seen.push(made(ids[1], data, BackupKind::Incremental));
        }
        report(&app, &seen);
    }
    let restore = |body: Value, of: &'static str| {
        let r = r.clone();
        async move {
            let path = format!("/v1/backups/{of}/restore");
            call(&r, Method::POST, &path, Some(body), None).await
        }
    };
    let cases = [
        (
            json!({"as": "Bad!"}),
            "b1",
            (400, "invalid_input", Some("as")),
        ),
        (
            json!({"as": "data"}),
            "b1",
            (409, "already_exists", Some("as")),
        ),
        (
            json!({"as": "x", "host": "h2"}),
            "big",
            (409, "no_capacity", Some("host")),
        ),
        (json!({"as": "x"}), "ghost", (404, "not_found", None)),
        (
            json!({"as": "x", "size": 1}),
            "b1",
            (400, "invalid_input", Some("size")),
        ),
    ];
    for (body, of, want) in cases {
        let before = app.store.generation();
        let (st, v) = restore(body.clone(), of).await;
        let got = (
            st,
            v["error"]["code"].as_str().unwrap_or(""),
            v["error"]["field"].as_str(),
        );
        assert_eq!(got, want, "{body}: {v}");
        assert_eq!(app.store.generation(), before, "{body}: wrote to the store");
    }

    let (st, v) = restore(json!({"as": "data2", "host": "h2"}), "b1").await;
    assert_eq!(st, 202, "{v}");
    assert_eq!(v["operation"]["kind"], "backup.restore", "{v}");
    assert_eq!(v["operation"]["target"], "data2", "{v}");
    assert_eq!(v["volume"]["host"], "h2", "{v}");
    let op = v["operation"]["id"].as_str().unwrap().to_string();
    let (h1, h2) = (s.get_host("h1").unwrap().id, s.get_host("h2").unwrap().id);
    // The chain's host sends the backup, flattened.
    let exports = s.host_transfers(h1).unwrap().exports;
    assert_eq!(exports.len(), 1);
    assert_eq!(
        (exports[0].disk.disk, exports[0].disk.backup),
        (data, Some(ids[0]))
    );
    // The new volume is no file to make on h2 until its import.
    let data2 = s.get_volume("data2").unwrap();
    let listed = |h| s.host_volumes(h).unwrap().iter().any(|v| v.id == data2.id);
    assert!(!listed(h2));
    s.transfer_received(exports[0].id, 4096, &"a".repeat(64), now_ms())
        .unwrap();
    let imports = s.host_transfers(h2).unwrap().imports;
    assert_eq!(imports.len(), 1);
    assert_eq!(imports[0].volume_id, data2.id);
    // h2 imported it: the restore succeeds, with its event.
    let file = cm_api::agent::ObservedVolume {
        id: data2.id.uuid(),
        size_bytes: 8 * MIB,
        allocated_bytes: 4096,
        error: None,
        snapshots: Vec::new(),
        reverted_gen: 0,
        revert_error: None,
    };
    s.record_volume_report(
        h2,
        std::slice::from_ref(&file),
        &[],
        &|_| Vec::new(),
        now_ms(),
    )
    .unwrap();
    let out = s
        .record_transfer_report(h2, &[], std::slice::from_ref(&file), now_ms())
        .unwrap();
    assert_eq!(out.moves.len(), 1);
    assert!(out.moves[0].outcome.is_ok(), "{:?}", out.moves[0].outcome);
    let (_, v) = call(&r, Method::GET, &format!("/v1/operations/{op}"), None, None).await;
    assert_eq!(v["status"], "succeeded", "{v}");
    assert!(
        v["progress"]
            .as_str()
            .unwrap()
            .starts_with("restored from backup b1 on h1"),
        "{v}"
    );
    let told = event_messages(&r, "backup.restored").await;
    assert_eq!(told.len(), 1, "{told:?}");
    assert!(listed(h2), "a volume like any other now");
    // The chain's host keeps its chain: no leftover of data2 there.
    assert!(s.host_transfers(h1).unwrap().leftovers.is_empty());
}
