//! `/v1/deployables` through the router: apply, unchanged, diff (writes
//! nothing), show, the stored source, rollback, delete, and the events of
//! one deployable as a page and as a stream.

use super::router;
use super::tests::{app, req, seed_instances};
use super::tests_input::GOOD_SPEC;
use crate::state::App;
use axum::body::Body;
use axum::http::{header, Method, StatusCode};
use cm_api::deploy::{ApplyAnswer, ChangeKind, Deployable, DeployableList, SpecSource};
use cm_api::words::DeployableState;
use serde_json::{json, Value};
use std::time::Duration;
use tower::ServiceExt;

/// The deployable `shop` (GOOD_SPEC) at generation 1.
pub(super) fn seed_shop(app: &App) {
    let spec = cm_api::deploy::load(cm_api::deploy::SpecFormat::Yaml, GOOD_SPEC).unwrap();
    app.store
        .apply_deployable(
            &spec,
            cm_api::deploy::SpecFormat::Yaml,
            GOOD_SPEC,
            &Default::default(),
            1,
        )
        .unwrap();
}

async fn call(
    r: &axum::Router,
    method: Method,
    uri: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let b = match &body {
        Some(v) => Body::from(serde_json::to_vec(v).unwrap()),
        None => Body::empty(),
    };
    let mut rq = req(&method, uri, true);
    if body.is_some() {
        rq = rq.header(header::CONTENT_TYPE, "application/json");
    }
    let resp = r.clone().oneshot(rq.body(b).unwrap()).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 22)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn yaml(text: &str) -> Value {
    json!({"format": "yaml", "source": text})
}

#[tokio::test]
async fn apply_diff_show_rollback_delete() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path(), &[]);
    seed_instances(&app, 1);
    let r = router(app.clone());
    let put = "/v1/deployables/shop";
    let (st, v) = call(&r, Method::PUT, put, Some(yaml(GOOD_SPEC))).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let a: ApplyAnswer = serde_json::from_value(v).unwrap();
    assert!(a.changed);
    assert_eq!(a.changes[0].kind, ChangeKind::Add);
    assert_eq!(a.changes[0].slots, [0, 1]);
    let d = a.deployable.unwrap();
    assert_eq!((d.generation, d.state), (1, DeployableState::Converging));

    // The same spec again: unchanged, nothing committed.
    let before = app.store.generation();
    let (_, v) = call(&r, Method::PUT, put, Some(yaml(GOOD_SPEC))).await;
    let a: ApplyAnswer = serde_json::from_value(v).unwrap();
    assert!(!a.changed && a.changes.is_empty());
    assert_eq!(app.store.generation(), before);

    let v2 = GOOD_SPEC.replace("count: 2", "count: 3");
    let (_, v) = call(&r, Method::PUT, put, Some(yaml(&v2))).await;
    let a: ApplyAnswer = serde_json::from_value(v).unwrap();
    let d = a.deployable.unwrap();
    assert_eq!((d.generation, d.rollout_from), (2, Some(1)));
    assert_eq!(a.changes[0].why, "count 2 → 3");

    // A diff answers and writes nothing.
    let before = app.store.generation();
    let (st, v) = call(
        &r,
        Method::POST,
        "/v1/deployables/shop/diff",
        Some(yaml(GOOD_SPEC)),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let a: ApplyAnswer = serde_json::from_value(v).unwrap();
    assert_eq!(
        (a.changes[0].kind, a.changes[0].slots.clone()),
        (ChangeKind::Remove, vec![2])
    );
    assert_eq!(app.store.generation(), before);
    // A diff of a deployable not there yet: everything is added.
    let blog = GOOD_SPEC.replace("shop", "blog");
    let (_, v) = call(
        &r,
        Method::POST,
        "/v1/deployables/blog/diff",
        Some(yaml(&blog)),
    )
    .await;
    let a: ApplyAnswer = serde_json::from_value(v).unwrap();
    assert!(a.deployable.is_none() && a.changed);

    let (_, v) = call(&r, Method::GET, "/v1/deployables/shop", None).await;
    let d: Deployable = serde_json::from_value(v).unwrap();
    assert_eq!(d.spec.map(|s| s.assemblies[0].count), Some(3));
    let (_, v) = call(
        &r,
        Method::GET,
        "/v1/deployables/shop/spec?generation=1",
        None,
    )
    .await;
    let s: SpecSource = serde_json::from_value(v).unwrap();
    assert_eq!(s.source, GOOD_SPEC);

    // Rollback: generation 1's spec as generation 3.
    let (st, v) = call(
        &r,
        Method::POST,
        "/v1/deployables/shop/rollback",
        Some(json!({})),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let a: ApplyAnswer = serde_json::from_value(v).unwrap();
    assert_eq!(a.deployable.map(|d| d.generation), Some(3));
    let (_, v) = call(&r, Method::GET, "/v1/deployables/shop", None).await;
    let d: Deployable = serde_json::from_value(v).unwrap();
    assert_eq!(d.spec.map(|s| s.assemblies[0].count), Some(2));

    // Events by deployable: blog's are not shop's.
    call(&r, Method::PUT, "/v1/deployables/blog", Some(yaml(&blog))).await;
    let (_, v) = call(&r, Method::GET, "/v1/events?deployable=shop", None).await;
    let evs: Vec<cm_api::event::Event> = serde_json::from_value(v).unwrap();
    let gens: Vec<Option<u64>> = evs.iter().map(|e| e.detail.generation).collect();
    assert_eq!(gens, [Some(1), Some(2), Some(3)]);
    assert!(
        evs[2].message.contains("rollback to generation 1"),
        "{}",
        evs[2].message
    );

    let (st, v) = call(&r, Method::DELETE, "/v1/deployables/shop", None).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    let d: Deployable = serde_json::from_value(v).unwrap();
    assert_eq!(d.state, DeployableState::Deleting);
    let (_, v) = call(&r, Method::GET, "/v1/deployables", None).await;
    let l: DeployableList = serde_json::from_value(v).unwrap();
    let names: Vec<&str> = l.deployables.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["blog"]);
}

#[tokio::test]
async fn the_event_stream_filters_by_deployable() {
    use futures::StreamExt;
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path(), &[]);
    seed_instances(&app, 1);
    let r = router(app.clone());
    let resp = r
        .clone()
        .oneshot(
            req(&Method::GET, "/v1/events?since=0&deployable=shop", true)
                .header(header::ACCEPT, "text/event-stream")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body().into_data_stream();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut text = String::new();
    let mut read_until = async |text: &mut String, want: &str| {
        while !text.contains(want) {
            let chunk = tokio::time::timeout_at(deadline, body.next())
                .await
                .expect("the stream went quiet")
                .unwrap()
                .unwrap();
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
    };
    // The first events are read back from the store (the follower does not
    // know the live order yet); after them, live events pass the filter.
    let put = "/v1/deployables/shop";
    call(&r, Method::PUT, put, Some(yaml(GOOD_SPEC))).await;
    read_until(&mut text, "created at generation 1").await;
    let v = GOOD_SPEC.replace("count: 2", "count: 3");
    call(&r, Method::PUT, put, Some(yaml(&v))).await;
    read_until(&mut text, "at generation 2").await;
    let blog = GOOD_SPEC.replace("shop", "blog");
    call(&r, Method::PUT, "/v1/deployables/blog", Some(yaml(&blog))).await;
    app.event(cm_api::words::EventKind::InstanceState, "vm0", "not shop's")
        .await;
    let v2 = GOOD_SPEC.replace("count: 2", "count: 5");
    call(&r, Method::PUT, "/v1/deployables/shop", Some(yaml(&v2))).await;
    read_until(&mut text, "at generation 3").await;
    assert!(
        !text.contains("blog") && !text.contains("not shop's"),
        "{text}"
    );
}
