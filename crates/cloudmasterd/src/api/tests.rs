//! In-process tests of the router's edges (tower's `oneshot`, an in-memory
//! store): every refusal is the JSON error document, whatever the route and
//! whatever is wrong with the request; the event stream's lag notice.

use super::router;
use crate::state::App;
use crate::store::sqlite::SqliteStore;
use crate::store::Store;
use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use clap::Parser;
use cm_api::words::{EventKind, OperationKind};
use std::sync::Arc;
use tower::ServiceExt;

pub(super) const TOKEN: &str = "cma_test";

pub(super) fn app(dir: &std::path::Path, extra: &[&str]) -> Arc<App> {
    app_on(dir, extra, SqliteStore::in_memory().unwrap())
}

fn app_on(dir: &std::path::Path, extra: &[&str], store: SqliteStore) -> Arc<App> {
    let mut argv = vec!["cloudmasterd", "--data-dir"];
    let d = dir.to_string_lossy().to_string();
    argv.push(&d);
    argv.extend_from_slice(extra);
    let args = crate::config::Args::parse_from(argv);
    let cfg = crate::config::Config::load(&args).unwrap();
    store
        .replace_admin_token(&crate::auth::hash(TOKEN))
        .unwrap();
    store
        .set_setting(crate::auth::JOIN_TOKEN_HASH, &crate::auth::hash("cmj_test"))
        .unwrap();
    let keys = crate::bootcfg::Keyring::from_key([7; 32]);
    let store: Arc<dyn Store> = Arc::new(store);
    let uploads = crate::uploads::Uploads::new(&cfg.settings).unwrap();
    Arc::new(App::new(store, cfg.settings, uuid::Uuid::new_v4(), keys, uploads).unwrap())
}

/// Every `(method, path)` of the router, read from the OpenAPI document the
/// router is built with (`api::authed_routes`, ...), so that a route added
/// there is tested without anyone remembering to.
fn routes() -> Vec<(Method, String)> {
    let doc = super::openapi_document();
    let mut out = Vec::new();
    for (path, item) in &doc.paths.paths {
        for (m, op) in [
            (Method::GET, &item.get),
            (Method::POST, &item.post),
            (Method::PUT, &item.put),
            (Method::PATCH, &item.patch),
            (Method::DELETE, &item.delete),
        ] {
            if op.is_some() {
                out.push((m, path.clone()));
            }
        }
    }
    out
}

/// The path with each `{param}` filled in with something well formed.
fn fill(path: &str, with: Option<&str>) -> String {
    let mut out = String::new();
    for seg in path.split('/').skip(1) {
        out.push('/');
        if seg.starts_with('{') {
            out.push_str(with.unwrap_or(match seg {
                "{uuid}" | "{id}" => "5c6b5a1e-7f0e-4a43-9d5e-3f1f2f0c9a11",
                "{role}" => "kernel",
                "{file}" => "meta-data",
                _ => "nope",
            }));
        } else {
            out.push_str(seg);
        }
    }
    out
}

fn is_open(path: &str) -> bool {
    path.starts_with("/boot/")
        || path.starts_with("/nocloud/")
        || path == "/v1/agent/register"
        || path == "/v1/openapi.json"
}

struct Answer {
    status: StatusCode,
    ctype: String,
    body: Vec<u8>,
}

async fn send(r: &Router, req: Request<Body>) -> Answer {
    let resp = r.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let ctype = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap_or_default()
        .to_vec();
    Answer {
        status,
        ctype,
        body,
    }
}

/// A refusal must be a 4xx with `{"error": {"code", "message", ...}}`.
fn check_refusal(what: &str, a: &Answer) {
    assert!(
        a.status.is_client_error(),
        "{what}: {} {}",
        a.status,
        String::from_utf8_lossy(&a.body)
    );
    check_shape(what, a);
}

fn check_shape(what: &str, a: &Answer) {
    assert!(
        a.ctype.starts_with("application/json"),
        "{what}: {} with content type '{}': {}",
        a.status,
        a.ctype,
        String::from_utf8_lossy(&a.body)
    );
    let v: serde_json::Value = serde_json::from_slice(&a.body)
        .unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {:?}", a.body));
    let e = &v["error"];
    assert!(
        e["code"].is_string() && e["message"].is_string(),
        "{what}: not the error document: {v}"
    );
    assert!(
        serde_json::from_value::<cm_api::ApiError>(v.clone()).is_ok(),
        "{what}: unknown code: {v}"
    );
}

/// An answer that is not a success must be a JSON 4xx.
fn check_answer(what: &str, a: &Answer) {
    if !a.status.is_success() && a.status != StatusCode::NOT_MODIFIED {
        check_refusal(what, a);
    }
}

pub(super) fn req(m: &Method, uri: &str, auth: bool) -> axum::http::request::Builder {
    let b = Request::builder().method(m.clone()).uri(uri);
    if auth {
        b.header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
    } else {
        b
    }
}

#[tokio::test]
async fn every_refusal_of_every_route_is_the_json_error_document() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path(), &[]);
    let r = router(app.clone());
    let routes = routes();
    assert!(
        routes.len() >= 30,
        "routes in the OpenAPI document: {routes:?}"
    );
    let all = [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
    ];
    let mut checked = 0;
    for (m, path) in &routes {
        let what = |kind: &str| format!("{kind}: {m} {path}");
        let good = fill(path, None);
        let has_body = matches!(*m, Method::POST | Method::PUT | Method::PATCH);
        // 1. A query string that does not parse.
        let uri = format!("{good}?wait=abc&since=x&after=-&limit=-1&domain=%FF");
        let a = send(&r, req(m, &uri, true).body(Body::empty()).unwrap()).await;
        check_answer(&what("bad query"), &a);
        // 2. A path segment that is not UTF-8 once decoded.
        if path.contains('{') {
            let a = send(
                &r,
                req(m, &fill(path, Some("%FF%FE")), true)
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
            check_refusal(&what("bad path encoding"), &a);
        }
        // 3. A method the route does not have.
        let owned: Vec<Method> = routes
            .iter()
            .filter(|(_, p)| p == path)
            .map(|(m, _)| m.clone())
            .collect();
        if let Some(other) = all.iter().find(|x| !owned.contains(x)) {
            let a = send(&r, req(other, &good, true).body(Body::empty()).unwrap()).await;
            check_refusal(&what("wrong method"), &a);
        }
        // 4. A route that does not exist below it.
        let a = send(
            &r,
            req(m, &format!("{good}/no-such-thing/x"), true)
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        check_refusal(&what("unknown route"), &a);
        // 5. A body that is not JSON by its content type.
        if has_body {
            let a = send(
                &r,
                req(m, &good, true)
                    .header(header::CONTENT_TYPE, "text/plain")
                    .body(Body::from("{}"))
                    .unwrap(),
            )
            .await;
            check_answer(&what("bad content type"), &a);
        }
        // 6. A body over the limit (the open routes' limit is small).
        if has_body {
            let limit = if is_open(path) {
                app.settings.limits.open_body_max
            } else {
                super::MAX_BODY
            };
            let a = send(
                &r,
                req(m, &good, true)
                    .header(header::CONTENT_TYPE, "application/json")
                    .header(header::CONTENT_LENGTH, limit + 1)
                    .body(Body::from(vec![b' '; limit + 1]))
                    .unwrap(),
            )
            .await;
            check_answer(&what("oversized body"), &a);
            if is_open(path) {
                assert_eq!(
                    a.status,
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "{}",
                    what("oversized")
                );
            }
        }
        // 7. No credentials at all.
        let a = send(&r, req(m, &good, false).body(Body::empty()).unwrap()).await;
        if is_open(path) {
            check_answer(&what("missing auth"), &a);
        } else {
            check_refusal(&what("missing auth"), &a);
            assert_eq!(
                a.status,
                StatusCode::UNAUTHORIZED,
                "{}",
                what("missing auth")
            );
        }
        checked += 1;
        // A route may have succeeded and rotated the admin token
        // (`/v1/tokens/admin/rotate`): give the next one the test's token back.
        app.store
            .replace_admin_token(&crate::auth::hash(TOKEN))
            .unwrap();
        app.refresh_tokens().await.unwrap();
    }
    assert_eq!(checked, routes.len());
    // The refusals the issue names, with the parameter at fault.
    for (uri, field) in [
        (
            "/v1/operations/5c6b5a1e-7f0e-4a43-9d5e-3f1f2f0c9a11?wait=abc",
            "wait",
        ),
        ("/v1/events?since=abc", "since"),
        ("/v1/instances/%FF", "name"),
    ] {
        let a = send(
            &r,
            req(&Method::GET, uri, true).body(Body::empty()).unwrap(),
        )
        .await;
        check_refusal(uri, &a);
        let v: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
        assert_eq!(
            (
                a.status,
                v["error"]["code"].as_str(),
                v["error"]["field"].as_str()
            ),
            (StatusCode::BAD_REQUEST, Some("invalid_input"), Some(field)),
            "{uri}: {v}"
        );
    }
}

#[tokio::test]
async fn a_slow_follower_is_told_it_lagged() {
    use futures::StreamExt;
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path(), &["--event-stream-buffer", "8"]);
    let r = router(app.clone());
    app.event(EventKind::HostState, "t", "before the stream")
        .await;
    let resp = r
        .oneshot(
            req(&Method::GET, "/v1/events?since=0", true)
                .header(header::ACCEPT, "text/event-stream")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body().into_data_stream();
    // The backlog is read; then the follower stops reading.
    let first = tokio::time::timeout(std::time::Duration::from_secs(20), body.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&first).contains("before the stream"));
    for i in 0..40 {
        app.event(EventKind::InstanceState, "t", &format!("event {i}"))
            .await;
    }
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while !text.contains("event 39") {
        let chunk = tokio::time::timeout_at(deadline, body.next())
            .await
            .expect("the stream went quiet")
            .unwrap()
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let lag = text
        .split("\n\n")
        .find(|e| e.contains("event: lagged"))
        .unwrap_or_else(|| panic!("no lag notice in:\n{text}"));
    let data = lag.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
    let lag: cm_api::event::Lagged = serde_json::from_str(data).unwrap();
    assert_eq!(
        lag,
        cm_api::event::Lagged {
            dropped: 32,
            resume_from: 1
        }
    );
    assert!(!text.contains("event 0\""), "dropped events were not sent");
}

/// `n` instances on one host, written straight into the store; their names.
pub(super) fn seed_instances(app: &App, n: usize) -> Vec<String> {
    use crate::store::sqlite::tests::{facts, image, new_instance};
    use crate::store::{new_operation, now_ms, HostCapacity};
    let s = app.store.as_ref();
    s.register_host("h1", "t", &facts(1 << 20), 0).unwrap();
    let img = image(s);
    let first = |caps: &[HostCapacity]| Ok(caps[0].id);
    (0..n)
        .map(|k| {
            let new = new_instance(&format!("vm{k}"), &img, 64);
            let op = new_operation(OperationKind::InstanceCreate, &new.name, new.id, "");
            s.create_instance(&new, None, &first, &op, None, now_ms())
                .unwrap()
                .name
        })
        .collect()
}

#[tokio::test]
async fn the_instance_list_is_rendered_once_per_change_and_gzipped_on_request() {
    use crate::app::instance_list;
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path(), &[]);
    let r = router(app.clone());

    // Kept while nothing is written (and for less than FRESH_MS)...
    let first = instance_list::list(&app).await.unwrap();
    let again = instance_list::list(&app).await.unwrap();
    assert!(Arc::ptr_eq(&first, &again));
    // ...rendered anew after any committed write...
    app.store.set_setting("bench", "1").unwrap();
    let after_write = instance_list::list(&app).await.unwrap();
    assert!(!Arc::ptr_eq(&first, &after_write));
    // ...and once its clock-derived fields may have moved.
    tokio::time::sleep(std::time::Duration::from_millis(
        u64::try_from(instance_list::FRESH_MS).unwrap() + 50,
    ))
    .await;
    let later = instance_list::list(&app).await.unwrap();
    assert!(!Arc::ptr_eq(&after_write, &later));

    // An empty list goes plain even to a client that accepts gzip (it
    // would grow).
    let small = r
        .clone()
        .oneshot(
            req(&Method::GET, "/v1/instances", true)
                .header(header::ACCEPT_ENCODING, "gzip")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert!(small.headers().get(header::CONTENT_ENCODING).is_none());

    // Instances created are in the next list at once (a write).
    let names = seed_instances(&app, 5);
    let listed = instance_list::list(&app).await.unwrap();
    let listed: Vec<cm_api::instance::Instance> = serde_json::from_slice(&listed.json).unwrap();
    assert_eq!(
        listed.iter().map(|i| i.name.clone()).collect::<Vec<_>>(),
        names
    );

    // Plain unless the client accepts gzip; the same JSON either way.
    let plain = r
        .clone()
        .oneshot(
            req(&Method::GET, "/v1/instances", true)
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(plain.status(), StatusCode::OK);
    assert!(plain.headers().get(header::CONTENT_ENCODING).is_none());
    let plain = axum::body::to_bytes(plain.into_body(), 1 << 20)
        .await
        .unwrap();
    let list: Vec<cm_api::instance::Instance> = serde_json::from_slice(&plain).unwrap();
    assert_eq!(list.len(), 5);
    assert!(plain.len() > super::encoding::GZIP_MIN);
    let zipped = r
        .oneshot(
            req(&Method::GET, "/v1/instances", true)
                .header(header::ACCEPT_ENCODING, "br, gzip")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(zipped.headers()[header::CONTENT_ENCODING], "gzip");
    assert_eq!(zipped.headers()[header::VARY], "accept-encoding");
    let zipped = axum::body::to_bytes(zipped.into_body(), 1 << 20)
        .await
        .unwrap();
    let mut unzipped = Vec::new();
    flate2::read::GzDecoder::new(&zipped[..])
        .read_to_end(&mut unzipped)
        .unwrap();
    assert_eq!(unzipped, plain);
}

/// An older master on a store a newer one wrote: an event type it does not
/// know is read back as its word, and the rest of the log with it.
#[tokio::test]
async fn an_event_of_a_type_this_master_does_not_know_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("store.db");
    let app = app_on(dir.path(), &[], SqliteStore::open(&db).unwrap());
    app.event(EventKind::HostState, "h1", "before").await;
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute(
            "INSERT INTO events (time, kind, target, message)
             VALUES (1767225600000, 'tachyon.emitted', 'v1', 'from a newer master')",
            [],
        )
        .unwrap();
    app.event(EventKind::HostState, "h1", "after").await;
    let a = send(
        &router(app),
        req(&Method::GET, "/v1/events?since=0", true)
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(
        a.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&a.body)
    );
    let events: Vec<cm_api::event::Event> = serde_json::from_slice(&a.body).unwrap();
    let got: Vec<(String, &str)> = events
        .iter()
        .map(|e| (e.kind.to_string(), e.message.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("host.state".to_string(), "before"),
            ("tachyon.emitted".to_string(), "from a newer master"),
            ("host.state".to_string(), "after"),
        ]
    );
    assert_eq!(
        events[1].kind,
        cm_api::words::EventType::Unknown("tachyon.emitted".into())
    );
}
