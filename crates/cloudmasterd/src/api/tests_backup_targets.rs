//! `POST /v1/backups` with `to` (docs/storage.md, "Backups to a host over
//! ssh") through the router: every bad target is `400` on field `to` and
//! writes nothing; an ssh target is kept canonical, shown, and becomes the
//! chain's default and its desired mirror; a second ssh target is `409` on
//! `to`; the host's mirror facts show in the backup without an event.

use super::router;
use super::tests::app;
use super::tests_backups::{event_messages, made, report, volume};
use super::tests_volumes::{call, world};
use axum::http::Method;
use cm_api::backup::BackupKind;
use serde_json::{json, Value};
use uuid::Uuid;

const NAS: &str = "ssh://backup@nas:22/srv/cm-backups";

async fn post(r: &axum::Router, body: Value) -> (u16, Value) {
    let (st, v) = call(r, Method::POST, "/v1/backups", Some(body), None).await;
    (st, v)
}

#[tokio::test]
async fn every_bad_target_is_refused_on_to_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path(), &[]);
    world(&app);
    let r = router(app.clone());
    volume(&r, "data", "h1").await;
    let cases = [
        ("", "'host'"),
        ("Host", "'host'"),
        ("nas:/srv", "ssh://"),
        ("rsync://nas/srv", "ssh://"),
        ("ssh://nas", "needs a path"),
        ("ssh://nas/srv/../etc", "'..'"),
        ("ssh://nas/srv/a b", "not ' '"),
        ("ssh://nas/srv/$(reboot)", "not '$'"),
        ("ssh://nas/srv;rm -rf", "not ';'"),
        ("ssh://-oProxyCommand=x/srv", "host '-oProxyCommand=x'"),
        ("ssh://-l@nas/srv", "user '-l'"),
        ("ssh://nas:0/srv", "port '0'"),
        ("ssh://nas:99999/srv", "port '99999'"),
        ("ssh://[nas]/srv", "IPv6"),
        ("ssh://nas/srv\n", "not '\\n'"),
        ("ssh://a\u{1b}[31m@nas/srv", "user 'a?[31m'"),
    ];
    let mut wrong = Vec::new();
    for (to, words) in cases {
        let before = app.store.generation();
        let (st, v) = post(&r, json!({"volume": "data", "to": to})).await;
        let e = &v["error"];
        let msg = e["message"].as_str().unwrap_or("");
        if (st, &e["code"], &e["field"]) != (400, &json!("invalid_input"), &json!("to"))
            || !msg.contains(words)
            || msg.chars().any(char::is_control)
        {
            wrong.push(format!("{to:?}: {st} {v}"));
        }
        if app.store.generation() != before {
            wrong.push(format!("{to:?}: wrote to the store"));
        }
    }
    let long = format!("ssh://nas/{}", "a".repeat(600));
    let (st, v) = post(&r, json!({"volume": "data", "to": long})).await;
    assert_eq!((st, &v["error"]["field"]), (400, &json!("to")), "{v}");
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert!(app.store.list_backups().unwrap().is_empty());
}

#[tokio::test]
async fn an_ssh_target_keeps_the_chain_there_and_shows_its_copy() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path(), &[]);
    world(&app);
    let r = router(app.clone());
    volume(&r, "data", "h1").await;
    let data = app.store.get_volume("data").unwrap().id.uuid();
    let h1 = app.store.get_host("h1").unwrap().id;
    // Written loosely (a trailing slash): kept canonical.
    let (st, v) = post(
        &r,
        json!({"volume": "data", "name": "b1", "to": format!("{NAS}/")}),
    )
    .await;
    assert_eq!(st, 202, "{v}");
    assert_eq!(v["backup"]["target"], NAS, "{v}");
    assert!(v["backup"].get("mirrored").is_none(), "not made yet: {v}");
    let b1: Uuid = v["backup"]["id"].as_str().unwrap().parse().unwrap();
    let (_, v) = call(&r, Method::GET, "/v1/backups/b1", None, None).await;
    assert_eq!(v["target"], NAS, "{v}");
    assert_eq!(
        app.store.host_chains(h1).unwrap()[0].mirror.as_deref(),
        Some(NAS)
    );
    // Made, not copied yet: the host says why.
    let mut seen = made(b1, data, BackupKind::Full);
    seen.mirrored = Some(false);
    seen.mirror_error = Some("ssh: connect to host nas port 22: Connection refused".into());
    report(&app, std::slice::from_ref(&seen));
    let (_, v) = call(&r, Method::GET, "/v1/backups/b1", None, None).await;
    assert_eq!(
        (&v["state"], &v["mirrored"]),
        (&json!("ready"), &json!(false))
    );
    assert!(
        v["mirror_error"].as_str().unwrap().contains("refused"),
        "{v}"
    );
    // Copied: shown, and no event for it (only the backup's making).
    seen.mirrored = Some(true);
    seen.mirror_error = None;
    report(&app, &[seen]);
    let (_, v) = call(&r, Method::GET, "/v1/backups/b1", None, None).await;
    assert_eq!(v["mirrored"], true, "{v}");
    assert!(v.get("mirror_error").is_none(), "{v}");
    assert_eq!(event_messages(&r, "backup.created").await.len(), 1);
    assert!(event_messages(&r, "backup.error").await.is_empty());

    // Omitted: the chain's target.
    let (st, v) = post(&r, json!({"volume": "data", "name": "b2"})).await;
    assert_eq!((st, &v["backup"]["target"]), (202, &json!(NAS)), "{v}");
    let b2: Uuid = v["backup"]["id"].as_str().unwrap().parse().unwrap();
    report(
        &app,
        &[
            made(b1, data, BackupKind::Full),
            made(b2, data, BackupKind::Incremental),
        ],
    );
    // Another ssh target: 409 on `to`, naming the one in use; nothing written.
    let before = app.store.generation();
    let (st, v) = post(
        &r,
        json!({"volume": "data", "name": "b3", "to": "ssh://other/srv"}),
    )
    .await;
    let e = &v["error"];
    assert_eq!(
        (st, &e["code"], &e["field"]),
        (409, &json!("conflict"), &json!("to")),
        "{v}"
    );
    let msg = e["message"].as_str().unwrap();
    assert!(
        msg.contains(NAS) && msg.contains("delete those backups first"),
        "{msg}"
    );
    assert_eq!(app.store.generation(), before);
    // `host`: made in the (mirrored) chain.
    let (st, v) = post(&r, json!({"volume": "data", "name": "b3", "to": "host"})).await;
    assert_eq!((st, &v["backup"]["target"]), (202, &json!("host")), "{v}");
    assert_eq!(
        app.store.host_chains(h1).unwrap()[0].mirror.as_deref(),
        Some(NAS)
    );
    let b3: Uuid = v["backup"]["id"].as_str().unwrap().parse().unwrap();
    report(
        &app,
        &[
            made(b1, data, BackupKind::Full),
            made(b2, data, BackupKind::Incremental),
            made(b3, data, BackupKind::Incremental),
        ],
    );
    // A schedule made without a target keeps the chain's.
    let (st, v) = post(&r, json!({"volume": "data", "every": "1h"})).await;
    assert_eq!(st, 202, "{v}");
    assert_eq!(
        (&v["schedule"]["target"], &v["backup"]["target"]),
        (&json!(NAS), &json!(NAS))
    );
    let (_, v) = call(&r, Method::GET, "/v1/backup-schedules", None, None).await;
    assert_eq!(v[0]["target"], NAS, "{v}");
}
