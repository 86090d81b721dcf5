//! `POST /v1/backups/{name}/restore` through the router: its refusals,
//! the export of the backup from the chain's host, the import on another
//! host, the operation and its event.

use super::router;
use super::tests::app;
use super::tests_backups::{event_messages, made, report, volume, MIB};
use super::tests_volumes::{call, world};
use crate::store::now_ms;
use axum::http::Method;
use cm_api::backup::BackupKind;
use serde_json::{json, Value};
use uuid::Uuid;

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
