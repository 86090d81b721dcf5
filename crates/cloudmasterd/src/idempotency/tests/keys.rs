//! `Keys` and the store: one change per key, a retry during the first run,
//! expiry and the bound on the number of keys.

use super::*;
use cm_api::words::OperationKind;
use cm_api::ErrorCode;

fn claim(key: &str, body: &[u8]) -> Claim {
    Claim::new(&Principal::Admin, key.into(), "POST", "/v1/x", body)
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
            owner: None,
            health: None,
            volumes: Vec::new(),
            root: None,
            id: crate::store::InstanceId::new_v4(),
            name: name.into(),
            image_id: app.store.get_image("tiny").unwrap().id.into(),
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
        let op = new_operation(OperationKind::InstanceCreate, name, new.id, "");
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

#[tokio::test]
async fn a_retry_during_the_first_run_waits_for_its_answer_or_hears_in_progress() {
    let (_dir, app) = master();
    // Long enough for the first run's answer to reach the store on a
    // loaded machine (an fsync can take a second there) while a retry waits.
    let keys = Arc::new(Keys {
        wait_in_flight: Duration::from_secs(3),
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
                    secret: false,
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
    assert_eq!(other.unwrap_err().code(), ErrorCode::IdempotencyKeyReused);
    // The same request: waits, then in_progress.
    let busy = keys
        .run(claim("slow", b"a"), || async { ("again", None) })
        .await;
    assert_eq!(busy.unwrap_err().code(), ErrorCode::InProgress);
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
                body: b"first".to_vec(),
                secret: false,
            }
        ),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn keys_expire_and_their_number_is_bounded() {
    let (_dir, app) = master();
    let now = now_ms();
    let day = cm_api::time::duration_millis(TTL);
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
