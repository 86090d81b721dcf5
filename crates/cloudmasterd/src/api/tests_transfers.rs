//! Transfers and volume moves through the router: the agreed HTTP of
//! `PUT/GET /v1/agent/transfers/{id}` (only the asked host, 422 on a sha256
//! mismatch with nothing kept, 413 past the bound, a repeat PUT answered 200
//! without change, 409 before receipt), the refusals of a move, and a move
//! ended by the new host's report (the old copy a leftover until gone).

use super::router;
use super::tests::app;
use super::tests_volumes::{call, world};
use crate::auth::{hash, Principal};
use crate::state::App;
use crate::store::now_ms;
use axum::body::Body;
use axum::http::{header, Method, Request};
use cm_api::agent::ObservedVolume;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tower::ServiceExt;

const MIB: u64 = 1 << 20;

/// A host agent's call with its token and a raw body.
async fn agent(
    r: &axum::Router,
    m: Method,
    token: &str,
    path: &str,
    sha: Option<&str>,
    body: Vec<u8>,
) -> (u16, Vec<u8>) {
    let mut req = Request::builder()
        .method(m)
        .uri(path)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_LENGTH, body.len());
    if let Some(s) = sha {
        req = req.header("x-cm-sha256", s);
    }
    let resp = r
        .clone()
        .oneshot(req.body(Body::from(body)).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 24)
        .await
        .unwrap();
    (status, bytes.to_vec())
}

fn tokens(app: &App) {
    for h in ["h1", "h2"] {
        let id = app.store.get_host(h).unwrap().id;
        app.remember_token(hash(&format!("cmh_{h}")), Principal::Host(id));
    }
}

fn file(id: uuid::Uuid) -> ObservedVolume {
    ObservedVolume {
        id,
        size_bytes: 100 * MIB,
        allocated_bytes: 196_608,
        error: None,
        snapshots: Vec::new(),
        reverted_gen: 0,
        revert_error: None,
    }
}

#[tokio::test]
async fn a_move_refuses_what_the_doc_refuses_and_its_transfer_follows_the_agreed_http() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path(), &[]);
    world(&app);
    tokens(&app);
    let r = router(app.clone());
    let body = json!({"name": "data", "size_bytes": 100 * MIB, "host": "h1"});
    let (st, v) = call(&r, Method::POST, "/v1/volumes", Some(body), None).await;
    assert_eq!(st, 202, "{v}");
    let vol: uuid::Uuid = v["volume"]["id"].as_str().unwrap().parse().unwrap();

    // Refusals: status, code, field; nothing written.
    let rows: [(&str, Value, u16, &str, Option<&str>); 5] = [
        (
            "/v1/volumes/data/move",
            json!({"hots": "h2"}),
            400,
            "invalid_input",
            Some("hots"),
        ),
        (
            "/v1/volumes/data/move",
            json!({"host": "h1"}),
            409,
            "conflict",
            Some("host"),
        ),
        (
            "/v1/volumes/data/move",
            json!({"host": "h9"}),
            409,
            "conflict",
            Some("host"),
        ),
        (
            "/v1/volumes/data/move",
            json!({"host": "H 2"}),
            400,
            "invalid_input",
            Some("host"),
        ),
        (
            "/v1/volumes/none/move",
            json!({"host": "h2"}),
            404,
            "not_found",
            None,
        ),
    ];
    for (path, body, status, code, field) in rows {
        let (st, v) = call(&r, Method::POST, path, Some(body.clone()), None).await;
        assert_eq!(st, status, "{path} {body}: {v}");
        assert_eq!(v["error"]["code"], code, "{path} {body}: {v}");
        assert_eq!(v["error"]["field"].as_str(), field, "{path} {body}: {v}");
    }
    assert!(app.store.list_moves().unwrap().is_empty());

    // The move: h1 is asked to export it.
    let (st, v) = call(
        &r,
        Method::POST,
        "/v1/volumes/data/move",
        Some(json!({"host": "h2"})),
        None,
    )
    .await;
    assert_eq!(st, 202, "{v}");
    assert_eq!(v["volume"]["state"], "moving", "{v}");
    assert_eq!(v["volume"]["moving_to"], "h2", "{v}");
    assert_eq!(v["operation"]["kind"], "volume.move", "{v}");
    let op: uuid::Uuid = v["operation"]["id"].as_str().unwrap().parse().unwrap();
    let (st, v) = call(
        &r,
        Method::POST,
        "/v1/volumes/data/move",
        Some(json!({"host": "h2"})),
        None,
    )
    .await;
    assert_eq!(
        (st, v["error"]["field"].as_str()),
        (409, Some("name")),
        "{v}"
    );
    let (st, v) = call(&r, Method::DELETE, "/v1/volumes/data", None, None).await;
    assert_eq!(
        (st, v["error"]["field"].as_str()),
        (409, Some("name")),
        "{v}"
    );
    let h1 = app.store.get_host("h1").unwrap().id;
    let h2 = app.store.get_host("h2").unwrap().id;
    let t = crate::app::transfers::desired(&app, h1).await.unwrap();
    assert_eq!(t.exports.len(), 1);
    let tid = t.exports[0].id;
    assert_eq!(t.exports[0].disk.disk, vol);
    let path = format!("/v1/agent/transfers/{tid}");

    // GET before receipt: 409; the file is qcow2 bytes here.
    let data = b"QFI\xfbnot really a disk but bytes all the same".to_vec();
    let sha = hex::encode(Sha256::digest(&data));
    let (st, _) = agent(&r, Method::GET, "cmh_h2", &path, None, vec![]).await;
    assert_eq!(st, 409);
    // Another host: 404. A wrong sha: 422, nothing kept.
    let (st, _) = agent(&r, Method::PUT, "cmh_h2", &path, Some(&sha), data.clone()).await;
    assert_eq!(st, 404);
    let wrong = "0".repeat(64);
    let (st, b) = agent(&r, Method::PUT, "cmh_h1", &path, Some(&wrong), data.clone()).await;
    assert_eq!(st, 422, "{}", String::from_utf8_lossy(&b));
    let tdir = dir.path().join("transfers");
    assert_eq!(std::fs::read_dir(&tdir).unwrap().count(), 0, "nothing kept");
    // A malformed sha: 400. Too big (declared past the bound): 413.
    let (st, _) = agent(&r, Method::PUT, "cmh_h1", &path, Some("ABC"), data.clone()).await;
    assert_eq!(st, 400);
    let big = vec![0u8; 16];
    let req = Request::builder()
        .method(Method::PUT)
        .uri(&path)
        .header(header::AUTHORIZATION, "Bearer cmh_h1")
        .header(
            header::CONTENT_LENGTH,
            (100 * MIB + (1 << 30) + 1).to_string(),
        )
        .header("x-cm-sha256", &sha)
        .body(Body::from(big))
        .unwrap();
    let resp = r.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status().as_u16(), 413);
    // The right file: 200, kept 0600; again: 200, no change.
    let (st, b) = agent(&r, Method::PUT, "cmh_h1", &path, Some(&sha), data.clone()).await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&b));
    let kept = tdir.join(tid.to_string());
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&kept).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let (st, _) = agent(&r, Method::PUT, "cmh_h1", &path, Some(&wrong), vec![1, 2]).await;
    assert_eq!(st, 200);
    assert_eq!(std::fs::read(&kept).unwrap(), data);
    // Only the importing host reads it.
    let (st, _) = agent(&r, Method::GET, "cmh_h1", &path, None, vec![]).await;
    assert_eq!(st, 404);
    let (st, got) = agent(&r, Method::GET, "cmh_h2", &path, None, vec![]).await;
    assert_eq!((st, got), (200, data.clone()));
    let t2 = crate::app::transfers::desired(&app, h2).await.unwrap();
    assert_eq!(t2.imports.len(), 1);
    assert!(crate::app::transfers::desired(&app, h1)
        .await
        .unwrap()
        .exports
        .is_empty());

    // h2 reports the file: the volume lives there, h1's copy is a leftover.
    crate::app::transfers::report(&app, h2, (vec![], vec![file(vol)]))
        .await
        .unwrap();
    let row = app.store.get_volume("data").unwrap();
    assert_eq!(row.host_name, "h2");
    let o = app.store.get_operation(op).unwrap();
    assert_eq!(
        o.op.status,
        cm_api::operation::OperationStatus::Succeeded,
        "{o:?}"
    );
    assert!(
        o.op.progress.starts_with("moved from h1 to h2: 100M"),
        "{}",
        o.op.progress
    );
    assert!(!kept.exists(), "the transfer's file goes with its use");
    let left = crate::app::transfers::desired(&app, h1)
        .await
        .unwrap()
        .leftovers;
    assert_eq!(left, vec![vol]);
    crate::app::transfers::report(&app, h1, (vec![], vec![file(vol)]))
        .await
        .unwrap();
    assert_eq!(
        crate::app::transfers::desired(&app, h1)
            .await
            .unwrap()
            .leftovers,
        vec![vol]
    );
    crate::app::transfers::report(&app, h1, (vec![], vec![]))
        .await
        .unwrap();
    assert!(crate::app::transfers::desired(&app, h1)
        .await
        .unwrap()
        .leftovers
        .is_empty());
}

#[tokio::test]
async fn a_failed_export_fails_the_move_and_the_volume_stays() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path(), &[]);
    world(&app);
    let r = router(app.clone());
    let body = json!({"name": "data", "size_bytes": 100 * MIB, "host": "h1"});
    call(&r, Method::POST, "/v1/volumes", Some(body), None).await;
    let (st, v) = call(
        &r,
        Method::POST,
        "/v1/volumes/data/move",
        Some(json!({"host": "h2"})),
        None,
    )
    .await;
    assert_eq!(st, 202, "{v}");
    let op: uuid::Uuid = v["operation"]["id"].as_str().unwrap().parse().unwrap();
    let h1 = app.store.get_host("h1").unwrap().id;
    let tid = crate::app::transfers::desired(&app, h1)
        .await
        .unwrap()
        .exports[0]
        .id;
    let failed = cm_api::agent::ObservedExport {
        id: tid,
        error: "qemu-img convert failed".into(),
    };
    crate::app::transfers::report(&app, h1, (vec![failed], vec![]))
        .await
        .unwrap();
    let o = app.store.get_operation(op).unwrap();
    assert_eq!(o.op.status, cm_api::operation::OperationStatus::Failed);
    let e = o.op.error.unwrap().message;
    assert!(
        e.contains("qemu-img convert failed") && e.contains("stays on h1"),
        "{e}"
    );
    let (_, v) = call(&r, Method::GET, "/v1/volumes/data", None, None).await;
    assert_eq!(
        (v["host"].as_str(), v["state"].as_str()),
        (Some("h1"), Some("creating")),
        "{v}"
    );
    assert!(app.store.list_moves().unwrap().is_empty());
}

#[tokio::test]
async fn a_start_removes_stray_transfer_files_and_keeps_received_ones() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path(), &[]);
    world(&app);
    tokens(&app);
    let r = router(app.clone());
    let body = json!({"name": "data", "size_bytes": 100 * MIB, "host": "h1"});
    call(&r, Method::POST, "/v1/volumes", Some(body), None).await;
    let body = Some(json!({"host": "h2"}));
    call(&r, Method::POST, "/v1/volumes/data/move", body, None).await;
    let h1 = app.store.get_host("h1").unwrap().id;
    let tid = crate::app::transfers::desired(&app, h1)
        .await
        .unwrap()
        .exports[0]
        .id;
    let data = b"a disk".to_vec();
    let sha = hex::encode(Sha256::digest(&data));
    let path = format!("/v1/agent/transfers/{tid}");
    let (st, _) = agent(&r, Method::PUT, "cmh_h1", &path, Some(&sha), data).await;
    assert_eq!(st, 200);
    let tdir = dir.path().join("transfers");
    std::fs::write(tdir.join(format!("{tid}.part")), b"half").unwrap();
    std::fs::write(tdir.join(uuid::Uuid::new_v4().to_string()), b"ended").unwrap();
    crate::app::transfers::sweep_on_start(dir.path(), app.store.as_ref()).unwrap();
    let left: Vec<String> = std::fs::read_dir(&tdir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, vec![tid.to_string()]);
}

#[tokio::test]
async fn a_move_whose_new_host_stays_down_fails_and_the_volume_stays() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path(), &[]);
    world(&app);
    let r = router(app.clone());
    let body = json!({"name": "data", "size_bytes": 100 * MIB, "host": "h1"});
    call(&r, Method::POST, "/v1/volumes", Some(body), None).await;
    let body = Some(json!({"host": "h2"}));
    let (_, v) = call(&r, Method::POST, "/v1/volumes/data/move", body, None).await;
    let op: uuid::Uuid = v["operation"]["id"].as_str().unwrap().parse().unwrap();
    let h2 = app.store.get_host("h2").unwrap().id;
    let now = now_ms();
    let deadline = std::time::Duration::from_secs(60);
    // Down, but not for long enough: the move waits.
    let down = std::collections::HashMap::from([(h2, now - 1_000)]);
    crate::app::transfers::give_up(&app, &down, now, deadline)
        .await
        .unwrap();
    assert_eq!(app.store.list_moves().unwrap().len(), 1);
    // Down past the deadline: failed, the volume stays on h1.
    let later = now + 61_000;
    crate::app::transfers::give_up(&app, &down, later, deadline)
        .await
        .unwrap();
    assert!(app.store.list_moves().unwrap().is_empty());
    let o = app.store.get_operation(op).unwrap();
    assert_eq!(o.op.status, cm_api::operation::OperationStatus::Failed);
    let e = o.op.error.unwrap().message;
    assert!(
        e.contains("host h2 is down") && e.contains("stays on h1"),
        "{e}"
    );
    assert_eq!(app.store.get_volume("data").unwrap().host_name, "h1");
}
