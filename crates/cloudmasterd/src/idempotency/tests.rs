//! The replay, the mismatch, a retry during the first run, expiry, and a
//! crash between a create's commit and its answer, on a real store on disk
//! driven through the real router.

use super::*;
use crate::api::instances;
use crate::bootcfg::Keyring;
use crate::state::Settings;
use crate::store::sqlite::SqliteStore;
use crate::store::{new_operation, NewInstance, Store};
use axum::http::HeaderMap;
use axum::routing::post;
use axum::{Extension, Router};
use cm_api::host::HostFacts;
use cm_api::image::{FileRole, Image, ImageFile, ImageKind};
use std::path::Path;
use tower::ServiceExt;
use uuid::Uuid;

const TOKEN: &str = "cma_idempotency_test";

/// The master's state on `dir`, as a start (or a restart after a crash) makes it.
fn open(dir: &Path) -> Arc<App> {
    let store = SqliteStore::open(&dir.join("cloud.db")).unwrap();
    store
        .replace_admin_token(&crate::auth::hash(TOKEN))
        .unwrap();
    let settings = Settings {
        data_dir: dir.to_path_buf(),
        report_interval: Duration::from_secs(3),
        host_down_after: Duration::from_secs(3600),
        host_reserved_mib: 0,
        stop_timeout_secs: 30,
        guest_addr: "10.0.2.2:8107".into(),
        remove_stale_after: None,
    };
    let keys = Keyring::open(&dir.join("boot.key")).unwrap();
    Arc::new(App::new(Arc::new(store), settings, Uuid::new_v4(), keys).unwrap())
}

/// A fresh master with one host and the image `tiny`.
fn master() -> (tempfile::TempDir, Arc<App>) {
    let dir = tempfile::tempdir().unwrap();
    let app = open(dir.path());
    let facts = HostFacts {
        memory_total_mib: 4096,
        memory_available_mib: 4096,
        vcpus: 2,
        accel: "tcg".into(),
        ..Default::default()
    };
    app.store
        .register_host("h1", &crate::auth::hash("cmh_x"), &facts, 0)
        .unwrap();
    app.store
        .insert_image(&Image {
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
            created_at: crate::store::to_ts(now_ms()),
        })
        .unwrap();
    (dir, app)
}

struct Reply {
    status: u16,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
    fn replayed(&self) -> bool {
        self.headers.get(REPLAYED).is_some_and(|v| v == "true")
    }
}

async fn send(
    router: &Router,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: &serde_json::Value,
) -> Reply {
    let mut req = axum::http::Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("content-type", "application/json");
    if let Some(k) = key {
        req = req.header("Idempotency-Key", k);
    }
    let req = req
        .body(Body::from(serde_json::to_vec(body).unwrap()))
        .unwrap();
    let resp = router.clone().oneshot(req).await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap()
        .to_vec();
    Reply {
        status,
        headers,
        body,
    }
}

fn web(name: &str) -> serde_json::Value {
    serde_json::json!({"name": name, "image": "tiny", "memory_mib": 128})
}

#[tokio::test]
async fn a_retry_with_the_same_key_gets_the_first_answer_and_creates_nothing() {
    let (_dir, app) = master();
    let router = crate::api::router(app.clone());
    let first = send(&router, "POST", "/v1/instances", Some("k-1"), &web("web")).await;
    assert_eq!(first.status, 202, "{:?}", first.json());
    assert!(!first.replayed());
    let again = send(&router, "POST", "/v1/instances", Some("k-1"), &web("web")).await;
    assert_eq!(again.status, 202, "{:?}", again.json());
    assert_eq!(again.body, first.body, "the same answer, byte for byte");
    assert!(again.replayed());
    assert_eq!(app.store.list_instances().unwrap().len(), 1);
    // Without the key, the same request is a second create: refused.
    let bare = send(&router, "POST", "/v1/instances", None, &web("web")).await;
    assert_eq!(bare.status, 409);
    assert_eq!(bare.json()["error"]["code"], "already_exists");
    // An action too: the retry of a stop is its first operation.
    let stop = send(
        &router,
        "POST",
        "/v1/instances/web/stop",
        Some("k-2"),
        &serde_json::json!({}),
    )
    .await;
    assert_eq!(stop.status, 202, "{:?}", stop.json());
    let stop2 = send(
        &router,
        "POST",
        "/v1/instances/web/stop",
        Some("k-2"),
        &serde_json::json!({}),
    )
    .await;
    assert_eq!(stop2.json()["id"], stop.json()["id"]);
    assert_eq!(app.store.list_operations(10).unwrap().len(), 2);
    // Answers other than instances' are recorded after the fact: an error too.
    let f = serde_json::json!({"name": "c1", "memory_mib": 256, "vcpus": 1});
    let made = send(&router, "POST", "/v1/flavors", Some("k-3"), &f).await;
    assert_eq!(made.status, 201, "{:?}", made.json());
    let remade = send(&router, "POST", "/v1/flavors", Some("k-3"), &f).await;
    assert_eq!(
        (remade.status, remade.body.clone()),
        (201, made.body.clone())
    );
    let missing = send(
        &router,
        "DELETE",
        "/v1/instances/nope",
        Some("k-4"),
        &serde_json::json!({}),
    )
    .await;
    assert_eq!(missing.status, 404);
    let again = send(
        &router,
        "DELETE",
        "/v1/instances/nope",
        Some("k-4"),
        &serde_json::json!({}),
    )
    .await;
    assert_eq!((again.status, again.replayed()), (404, true));
}

#[tokio::test]
async fn the_same_key_with_another_request_is_refused_and_changes_nothing() {
    let (_dir, app) = master();
    let router = crate::api::router(app.clone());
    assert_eq!(
        send(&router, "POST", "/v1/instances", Some("k"), &web("web"))
            .await
            .status,
        202
    );
    for (method, path, body) in [
        ("POST", "/v1/instances", web("web2")),
        ("POST", "/v1/instances/web/stop", serde_json::json!({})),
    ] {
        let r = send(&router, method, path, Some("k"), &body).await;
        assert_eq!(r.status, 422, "{method} {path}: {:?}", r.json());
        assert_eq!(r.json()["error"]["code"], "idempotency_key_reused");
        assert_eq!(r.json()["error"]["field"], "Idempotency-Key");
    }
    let names: Vec<String> = app
        .store
        .list_instances()
        .unwrap()
        .into_iter()
        .map(|i| i.name)
        .collect();
    assert_eq!(names, ["web"]);
    for bad in ["", "has space", &"x".repeat(256)] {
        let r = send(&router, "POST", "/v1/instances", Some(bad), &web("web3")).await;
        assert_eq!(r.status, 400, "{bad:?}");
        assert_eq!(r.json()["error"]["field"], "Idempotency-Key");
    }
    // The draft's quoted form is the same key.
    let r = send(&router, "POST", "/v1/instances", Some("\"k\""), &web("web")).await;
    assert!(r.replayed(), "{:?}", r.json());
}

/// The handler alone, as if the master died right after the create's commit:
/// the middleware never recorded anything, only the handler's transaction.
fn handler_only(app: Arc<App>, keyed: Option<Keyed>) -> Router {
    let r = Router::new().route("/v1/instances", post(instances::create));
    let r = match keyed {
        Some(k) => r.layer(Extension(k)),
        None => r,
    };
    r.layer(Extension(Principal::Admin)).with_state(app)
}

#[tokio::test]
async fn a_create_committed_just_before_a_crash_is_answered_after_the_restart() {
    let (dir, app) = master();
    let body = serde_json::to_vec(&web("web")).unwrap();
    let claim = Claim::new(
        &Principal::Admin,
        "k-crash".into(),
        "POST",
        "/v1/instances",
        &body,
    );
    let lost = send(
        &handler_only(app.clone(), Some(Keyed(claim))),
        "POST",
        "/v1/instances",
        None,
        &web("web"),
    )
    .await;
    assert_eq!(lost.status, 202);
    drop(app);

    // The restarted master answers the retry with the first answer.
    let app = open(dir.path());
    let router = crate::api::router(app.clone());
    let retry = send(
        &router,
        "POST",
        "/v1/instances",
        Some("k-crash"),
        &web("web"),
    )
    .await;
    assert_eq!(retry.status, 202, "{:?}", retry.json());
    assert!(retry.replayed());
    assert_eq!(retry.body, lost.body);
    assert_eq!(
        app.store.list_instances().unwrap().len(),
        1,
        "never a second instance"
    );

    // What a handler that ignored the key would have left: a retry that runs
    // again and says "exists already" about the user's own instance.
    let blind = send(
        &handler_only(app.clone(), None),
        "POST",
        "/v1/instances",
        None,
        &web("db"),
    )
    .await;
    assert_eq!(blind.status, 202);
    drop(app);
    let app = open(dir.path());
    let router = crate::api::router(app.clone());
    let retry = send(
        &router,
        "POST",
        "/v1/instances",
        Some("k-blind"),
        &web("db"),
    )
    .await;
    assert_eq!(retry.json()["error"]["code"], "already_exists");
}

#[tokio::test]
async fn a_committed_key_cannot_commit_a_second_change() {
    let (_dir, app) = master();
    let claim = Claim::new(
        &Principal::Admin,
        "k".into(),
        "POST",
        "/v1/instances",
        b"{}",
    );
    let keyed = Keyed(claim);
    let mk = |name: &str| {
        let new = NewInstance {
            id: Uuid::new_v4(),
            name: name.into(),
            image_id: app.store.get_image("tiny").unwrap().id,
            flavor: None,
            memory_mib: 128,
            vcpus: 1,
            disk_gib: 0,
            ports: vec![],
            restart_policy: Default::default(),
            accel: Default::default(),
            stop_timeout_secs: 30,
            dynamic_domain: None,
        };
        let op = new_operation("instance.create", name, new.id, "");
        let answer = keyed.answer(StatusCode::ACCEPTED, Box::new(|_| Ok(b"{}".to_vec())));
        app.store.create_instance(
            &new,
            None,
            &|caps| Ok(caps[0].id),
            &op,
            Some(&answer),
            now_ms(),
        )
    };
    mk("a").unwrap();
    let err = mk("b").unwrap_err();
    assert!(
        matches!(err, crate::store::StoreError::Conflict(_)),
        "{err}"
    );
    let names: Vec<String> = app
        .store
        .list_instances()
        .unwrap()
        .into_iter()
        .map(|i| i.name)
        .collect();
    assert_eq!(names, ["a"], "the second change rolled back");
    assert_eq!(app.store.list_operations(10).unwrap().len(), 1);
}

fn claim(key: &str, body: &[u8]) -> Claim {
    Claim::new(&Principal::Admin, key.into(), "POST", "/v1/x", body)
}

#[tokio::test]
async fn a_retry_during_the_first_run_waits_for_its_answer_or_hears_in_progress() {
    let (_dir, app) = master();
    let keys = Arc::new(Keys {
        wait_in_flight: Duration::from_millis(300),
        ..Keys::new(app)
    });
    let (release, hold) = tokio::sync::oneshot::channel::<()>();
    let k = keys.clone();
    let first = tokio::spawn(async move {
        k.run(claim("slow", b"a"), || async {
            let _ = hold.await;
            (
                "first",
                Some(Answer {
                    status: 201,
                    body: b"first".to_vec(),
                }),
            )
        })
        .await
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Another request under the key while the first runs: refused at once.
    let other = keys
        .run(claim("slow", b"b"), || async { ("x", None) })
        .await;
    assert_eq!(other.unwrap_err().0.code(), ErrorCode::IdempotencyKeyReused);
    // The same request: waits, then in_progress.
    let busy = keys
        .run(claim("slow", b"a"), || async { ("again", None) })
        .await;
    assert_eq!(busy.unwrap_err().0.code(), ErrorCode::InProgress);
    // A retry that is waiting when the first ends gets the first answer.
    let k = keys.clone();
    let waiting = tokio::spawn(async move {
        k.run(claim("slow", b"a"), || async { ("ran twice", None) })
            .await
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    release.send(()).unwrap();
    assert!(matches!(
        first.await.unwrap().unwrap(),
        Outcome::Fresh("first")
    ));
    match waiting.await.unwrap().unwrap() {
        Outcome::Replayed(a) => assert_eq!(
            a,
            Answer {
                status: 201,
                body: b"first".to_vec()
            }
        ),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn keys_expire_and_their_number_is_bounded() {
    let (_dir, app) = master();
    let now = now_ms();
    let day = TTL.as_millis() as Millis;
    let old = claim("old", b"").record(200, b"old".to_vec(), now - day - 1);
    assert!(app.store.idempotency_put(&old).unwrap());
    assert_eq!(
        app.store.idempotency_get("admin", "old", now).unwrap(),
        None,
        "expired"
    );
    // An expired key can be used again.
    let reused = claim("old", b"new").record(200, b"new".to_vec(), now);
    assert!(app.store.idempotency_put(&reused).unwrap());
    for i in 0..5 {
        let r = claim(&format!("k{i}"), b"").record(200, vec![], now - 5 + i);
        assert!(app.store.idempotency_put(&r).unwrap());
    }
    let stale = claim("stale", b"").record(200, vec![], now - day - 10);
    app.store.idempotency_put(&stale).unwrap();
    let gone = app.store.idempotency_purge(now, 3).unwrap();
    assert_eq!(gone, 4, "the expired one and the oldest beyond 3");
    let left: Vec<&str> = ["old", "k0", "k1", "k2", "k3", "k4", "stale"]
        .into_iter()
        .filter(|k| {
            app.store
                .idempotency_get("admin", k, now)
                .unwrap()
                .is_some()
        })
        .collect();
    assert_eq!(left, ["old", "k3", "k4"]);
}
