//! `/v1/snapshots` through the router: every refusal of docs/storage.md
//! ("Snapshots") is its status, code and field and writes nothing.

use super::router;
use super::tests::app;
use super::tests_volumes::{call, world, Case};
use crate::store::now_ms;
use crate::store::sqlite::tests::facts;
use axum::http::Method;
use cm_api::agent::{ObservedSnapshot, ObservedVolume};
use serde_json::{json, Value};

const MIB: u64 = 1 << 20;

#[tokio::test]
async fn every_snapshot_refusal_has_its_code_and_field_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path(), &[]);
    world(&app);
    let r = router(app.clone());
    for (name, host) in [("data", "h1"), ("far", "h2")] {
        let body = json!({"name": name, "size_bytes": 8 * MIB, "host": host});
        let (st, v) = call(&r, Method::POST, "/v1/volumes", Some(body), None).await;
        assert_eq!(st, 202, "{v}");
    }
    let body = json!({"instance": "vm0"});
    let (st, v) = call(
        &r,
        Method::POST,
        "/v1/volumes/data/attach",
        Some(body),
        None,
    )
    .await;
    assert_eq!(st, 202, "{v}");
    for (name, vol) in [("s1", "data"), ("s2", "far")] {
        let body = json!({"name": name, "volume": vol});
        let (st, v) = call(&r, Method::POST, "/v1/snapshots", Some(body), None).await;
        assert_eq!(st, 202, "{v}");
        assert_eq!(v["operation"]["kind"], "snapshot.create", "{v}");
        assert_eq!(v["snapshot"]["state"], "creating", "{v}");
    }
    // h1 took s1 (while vm0 runs).
    let s = app.store.as_ref();
    let h1 = s.get_host("h1").unwrap();
    let data = s.get_volume("data").unwrap();
    let s1 = s.get_snapshot("s1").unwrap();
    let file = ObservedVolume {
        id: data.id.uuid(),
        size_bytes: 8 * MIB,
        allocated_bytes: 0,
        error: None,
        snapshots: vec![ObservedSnapshot {
            id: s1.id,
            consistency: Some(cm_api::snapshot::Consistency::Crash),
            size_bytes: 8 * MIB,
            error: None,
        }],
        reverted_gen: 0,
        revert_error: None,
    };
    let mut f = facts(1 << 20);
    f.disk_free_mib = 1000;
    s.record_report(h1.id, &f, h1.generation, &[], now_ms())
        .unwrap();
    s.record_volume_report(
        h1.id,
        std::slice::from_ref(&file),
        &[],
        &|_| Vec::new(),
        now_ms(),
    )
    .unwrap();
    s.record_snapshot_report(h1.id, &[file], &[], &|_| Vec::new(), now_ms())
        .unwrap();
    let (_, v) = call(&r, Method::GET, "/v1/snapshots/s1", None, None).await;
    assert_eq!(
        (&v["state"], &v["consistency"]),
        (&json!("ready"), &json!("crash"))
    );

    let some = |b: Value| Some(b);
    let post = Method::POST;
    let cases: Vec<Case> = vec![
        (
            "a bad name",
            post.clone(),
            "/v1/snapshots",
            some(json!({"name": "Bad!", "volume": "data"})),
            (400, "invalid_input", Some("name")),
        ),
        (
            "both a volume and an instance",
            post.clone(),
            "/v1/snapshots",
            some(json!({"name": "z", "volume": "data", "instance": "vm0"})),
            (400, "invalid_input", Some("volume")),
        ),
        (
            "neither a volume nor an instance",
            post.clone(),
            "/v1/snapshots",
            some(json!({"name": "z"})),
            (400, "invalid_input", Some("volume")),
        ),
        (
            "no such volume",
            post.clone(),
            "/v1/snapshots",
            some(json!({"name": "z", "volume": "ghost"})),
            (404, "not_found", Some("volume")),
        ),
        (
            "no such instance",
            post.clone(),
            "/v1/snapshots",
            some(json!({"name": "z", "instance": "ghost"})),
            (404, "not_found", Some("instance")),
        ),
        (
            "an instance of a kernel image",
            post.clone(),
            "/v1/snapshots",
            some(json!({"name": "z", "instance": "vm0"})),
            (409, "conflict", Some("instance")),
        ),
        (
            "a name taken",
            post.clone(),
            "/v1/snapshots",
            some(json!({"name": "s1", "volume": "far"})),
            (409, "already_exists", Some("name")),
        ),
        (
            "a restore while the instance runs",
            post.clone(),
            "/v1/snapshots/s1/restore",
            None,
            (409, "conflict", None),
        ),
        (
            "a restore of one not taken",
            post.clone(),
            "/v1/snapshots/s2/restore",
            None,
            (409, "conflict", None),
        ),
        (
            "a clone of one not taken",
            post.clone(),
            "/v1/snapshots/s2/clone",
            some(json!({"volume": "copy"})),
            (409, "conflict", None),
        ),
        (
            "a clone with a bad name",
            post.clone(),
            "/v1/snapshots/s1/clone",
            some(json!({"volume": "Bad!"})),
            (400, "invalid_input", Some("volume")),
        ),
        (
            "a clone onto a name taken",
            post.clone(),
            "/v1/snapshots/s1/clone",
            some(json!({"volume": "far"})),
            (409, "already_exists", Some("volume")),
        ),
        (
            "a restore of no snapshot",
            post.clone(),
            "/v1/snapshots/ghost/restore",
            None,
            (404, "not_found", None),
        ),
        (
            "a delete of no snapshot",
            Method::DELETE,
            "/v1/snapshots/ghost",
            None,
            (404, "not_found", None),
        ),
        (
            "a volume with snapshots",
            Method::DELETE,
            "/v1/volumes/far",
            None,
            (409, "conflict", None),
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
    // Deleted: refused no more for its volume once its host removed it.
    let (st, v) = call(&r, Method::DELETE, "/v1/snapshots/s2", None, None).await;
    assert_eq!(
        (st, &v["snapshot"]["state"]),
        (202, &json!("deleting")),
        "{v}"
    );
}
