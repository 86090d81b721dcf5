//! `/v1/volumes` through the router: every refusal of docs/storage.md is
//! its status, code and field and writes nothing; a keyed create sent
//! twice makes one volume and answers the same.

use super::router;
use super::tests::{app, seed_instances, TOKEN};
use crate::state::App;
use crate::store::now_ms;
use crate::store::sqlite::tests::facts;
use axum::body::Body;
use axum::http::{header, Method, Request};
use serde_json::{json, Value};
use tower::ServiceExt;

const MIB: u64 = 1 << 20;

/// What is sent, and the status, code and field of the refusal.
pub(super) type Case = (
    &'static str,
    Method,
    &'static str,
    Option<Value>,
    (u16, &'static str, Option<&'static str>),
);

pub(super) async fn call(
    r: &axum::Router,
    m: Method,
    path: &str,
    body: Option<Value>,
    key: Option<&str>,
) -> (u16, Value) {
    let mut req = Request::builder()
        .method(m)
        .uri(path)
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"));
    if let Some(k) = key {
        req = req.header("Idempotency-Key", k);
    }
    let body = match body {
        Some(b) => {
            req = req.header(header::CONTENT_TYPE, "application/json");
            Body::from(serde_json::to_vec(&b).unwrap())
        }
        None => Body::empty(),
    };
    let resp = r.clone().oneshot(req.body(body).unwrap()).await.unwrap();
    let status = resp.status().as_u16();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// Host h1 (vm0, 1000 MiB of disk, volume `data` attached to vm0) and
/// host h2 (volume `far`, free).
pub(super) fn world(app: &App) {
    let s = app.store.as_ref();
    seed_instances(app, 1);
    s.register_host("h2", "t2", &facts(1 << 20), 0).unwrap();
    for h in ["h1", "h2"] {
        let id = s.get_host(h).unwrap().id;
        let mut f = facts(1 << 20);
        f.disk_free_mib = 1000;
        s.record_report(id, &f, 0, &[], now_ms()).unwrap();
    }
}

#[tokio::test]
async fn every_volume_refusal_has_its_code_and_field_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path(), &[]);
    world(&app);
    let r = router(app.clone());
    let (st, v) = call(
        &r,
        Method::POST,
        "/v1/volumes",
        Some(json!({"name": "data", "size_bytes": 100 * MIB, "host": "h1"})),
        None,
    )
    .await;
    assert_eq!(st, 202, "{v}");
    assert_eq!(v["operation"]["kind"], "volume.create", "{v}");
    let (st, _) = call(
        &r,
        Method::POST,
        "/v1/volumes",
        Some(json!({"name": "far", "size_bytes": MIB, "host": "h2"})),
        None,
    )
    .await;
    assert_eq!(st, 202);
    let (st, v) = call(
        &r,
        Method::POST,
        "/v1/volumes/data/attach",
        Some(json!({"instance": "vm0"})),
        None,
    )
    .await;
    assert_eq!(st, 202, "{v}");
    let vol = |b: Value| Some(b);
    let cases: Vec<Case> = vec![
        (
            "a bad name",
            Method::POST,
            "/v1/volumes",
            vol(json!({"name": "Bad!", "size_bytes": MIB})),
            (400, "invalid_input", Some("name")),
        ),
        (
            "size 0",
            Method::POST,
            "/v1/volumes",
            vol(json!({"name": "z", "size_bytes": 0})),
            (400, "invalid_input", Some("size_bytes")),
        ),
        (
            "not whole MiB",
            Method::POST,
            "/v1/volumes",
            vol(json!({"name": "z", "size_bytes": MIB + 1})),
            (400, "invalid_input", Some("size_bytes")),
        ),
        (
            "over 64 TiB",
            Method::POST,
            "/v1/volumes",
            vol(json!({"name": "z", "size_bytes": (64u64 << 40) + MIB})),
            (400, "invalid_input", Some("size_bytes")),
        ),
        (
            "a negative size",
            Method::POST,
            "/v1/volumes",
            vol(json!({"name": "z", "size_bytes": -1})),
            (400, "invalid_input", Some("size_bytes")),
        ),
        (
            "a name taken",
            Method::POST,
            "/v1/volumes",
            vol(json!({"name": "data", "size_bytes": MIB})),
            (409, "already_exists", Some("name")),
        ),
        (
            "no such host",
            Method::POST,
            "/v1/volumes",
            vol(json!({"name": "z", "size_bytes": MIB, "host": "nowhere"})),
            (404, "not_found", Some("host")),
        ),
        (
            "too big for any host",
            Method::POST,
            "/v1/volumes",
            vol(json!({"name": "z", "size_bytes": 2000 * MIB})),
            (409, "no_capacity", Some("host")),
        ),
        (
            "too big for the host asked",
            Method::POST,
            "/v1/volumes",
            vol(json!({"name": "z", "size_bytes": 950 * MIB, "host": "h1"})),
            (409, "no_capacity", Some("host")),
        ),
        (
            "a shrink",
            Method::POST,
            "/v1/volumes/data/resize",
            vol(json!({"size_bytes": MIB})),
            (400, "invalid_input", Some("size_bytes")),
        ),
        (
            "a resize past the host's room",
            Method::POST,
            "/v1/volumes/data/resize",
            vol(json!({"size_bytes": 1500 * MIB})),
            (409, "no_capacity", Some("size_bytes")),
        ),
        (
            "a resize of no volume",
            Method::POST,
            "/v1/volumes/ghost/resize",
            vol(json!({"size_bytes": MIB})),
            (404, "not_found", None),
        ),
        (
            "an attach to no instance",
            Method::POST,
            "/v1/volumes/far/attach",
            vol(json!({"instance": "ghost"})),
            (404, "not_found", Some("instance")),
        ),
        (
            "an attach across hosts",
            Method::POST,
            "/v1/volumes/far/attach",
            vol(json!({"instance": "vm0"})),
            (409, "conflict", Some("instance")),
        ),
        (
            "a detach of a free volume",
            Method::POST,
            "/v1/volumes/far/detach",
            None,
            (409, "conflict", None),
        ),
        (
            "a delete while attached",
            Method::DELETE,
            "/v1/volumes/data",
            None,
            (409, "conflict", None),
        ),
        (
            "a show of no volume",
            Method::GET,
            "/v1/volumes/ghost",
            None,
            (404, "not_found", None),
        ),
        (
            "an instance on two volumes' hosts",
            Method::POST,
            "/v1/instances",
            vol(
                json!({"name": "n", "image": "tiny", "memory_mib": 64, "volumes": ["far", "data"]}),
            ),
            (409, "conflict", Some("volumes")),
        ),
        (
            "an instance with an attached volume",
            Method::POST,
            "/v1/instances",
            vol(json!({"name": "n", "image": "tiny", "memory_mib": 64, "volumes": ["data"]})),
            (409, "conflict", Some("volumes")),
        ),
        (
            "an instance on another host than its volume",
            Method::POST,
            "/v1/instances",
            vol(
                json!({"name": "n", "image": "tiny", "memory_mib": 64, "volumes": ["far"], "host": "h1"}),
            ),
            (409, "conflict", Some("volumes")),
        ),
        (
            "an instance with no such volume",
            Method::POST,
            "/v1/instances",
            vol(json!({"name": "n", "image": "tiny", "memory_mib": 64, "volumes": ["ghost"]})),
            (404, "not_found", Some("volumes")),
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
}

#[tokio::test]
async fn a_keyed_create_sent_twice_makes_one_volume() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path(), &[]);
    world(&app);
    let r = router(app.clone());
    let body = json!({"name": "once", "size_bytes": 8 * MIB});
    let (a, first) = call(
        &r,
        Method::POST,
        "/v1/volumes",
        Some(body.clone()),
        Some("k-1"),
    )
    .await;
    let (b, again) = call(&r, Method::POST, "/v1/volumes", Some(body), Some("k-1")).await;
    assert_eq!((a, b), (202, 202), "{first} {again}");
    assert_eq!(first, again);
    assert_eq!(app.store.list_volumes().unwrap().len(), 1);
    // The answer shows the volume and its operation.
    assert_eq!(first["volume"]["state"], "creating");
    assert_eq!(first["volume"]["size_bytes"], 8 * MIB);
    let (_, list) = call(&r, Method::GET, "/v1/volumes", None, None).await;
    assert_eq!(list[0]["name"], "once");
}
