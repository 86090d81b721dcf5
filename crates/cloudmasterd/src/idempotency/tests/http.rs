//! Through the real router: replay, mismatch, secrets, and a create
//! committed just before a crash.

use super::*;

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

/// Every byte of the store's files, for secrets that must not be there.
fn store_bytes(dir: &Path) -> Vec<u8> {
    let mut all = Vec::new();
    for f in ["cloud.db", "cloud.db-wal"] {
        all.extend(std::fs::read(dir.join(f)).unwrap_or_default());
    }
    all
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
    // Keys are per principal: a host's token with the admin's key gets
    // neither the admin's answer nor a refusal about it, only its own 403.
    let host = send_as(
        HOST_TOKEN,
        &router,
        "POST",
        "/v1/instances",
        Some("k"),
        &web("web"),
    )
    .await;
    assert_eq!(host.status, 403, "{:?}", host.json());
    assert!(!host.replayed());
    // The draft's quoted form is the same key.
    let r = send(&router, "POST", "/v1/instances", Some("\"k\""), &web("web")).await;
    assert!(r.replayed(), "{:?}", r.json());
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
async fn an_answer_that_shows_a_secret_once_is_never_kept() {
    let (dir, app) = master();
    let router = crate::api::router(app.clone());
    let reg = serde_json::json!({"config": "#cm-guest\n"});
    let first = send(&router, "POST", "/v1/configs", Some("k-secret"), &reg).await;
    assert_eq!(first.status, 201, "{:?}", first.json());
    let secret = first.json()["secret"].as_str().unwrap().to_string();
    let dom = send(
        &router,
        "POST",
        "/v1/config-domains",
        Some("k-dom"),
        &serde_json::json!({"name": "web"}),
    )
    .await;
    assert_eq!(dom.status, 201, "{:?}", dom.json());
    let dsecret = dom.json()["secret"].as_str().unwrap().to_string();
    // The retry is not run again (no second record) and shows no secret.
    let again = send(&router, "POST", "/v1/configs", Some("k-secret"), &reg).await;
    assert_eq!(again.status, 409, "{:?}", again.json());
    let msg = again.json()["error"]["message"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(msg.contains("shown only once"), "{msg}");
    assert!(!String::from_utf8_lossy(&again.body).contains(&secret));
    assert_eq!(app.store.list_configs(None).unwrap().len(), 1);
    let bytes = store_bytes(dir.path());
    for s in [&secret, &dsecret] {
        assert!(
            !bytes.windows(s.len()).any(|w| w == s.as_bytes()),
            "a secret shown once is in the store"
        );
    }
    assert!(holds_secret(br#"{"record": {"token": "cmj_x"}}"#));
    assert!(!holds_secret(br#"{"name": "web", "secret_epoch": 1}"#));
}
