//! Every refusal of `/v1/backups` and `/v1/backup-schedules` in
//! docs/storage.md ("Backups (point 6)") is its status, code and field
//! and writes nothing.

use super::router;
use super::tests::app;
use super::tests_backups::volume;
use super::tests_volumes::{call, world, Case};
use axum::http::Method;
use serde_json::{json, Value};

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
            "a target unreadable",
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
