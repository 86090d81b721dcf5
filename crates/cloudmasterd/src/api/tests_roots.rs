//! Persistent roots through the router (docs/storage.md, "Persistent
//! roots"): `persistent` makes `NAME-root`, every refusal is its status,
//! code and field and writes nothing, a snapshot of a persistent instance
//! is its volume's, and a freed root boots another instance on its host.

use super::router;
use super::tests::app;
use super::tests_volumes::{call, world, Case};
use crate::store::now_ms;
use axum::http::Method;
use cm_api::agent::ObservedVolume;
use cm_api::image::{FileRole, Image, ImageFile, ImageKind};
use serde_json::{json, Value};

const MIB: u64 = 1 << 20;

/// A qcow2 disk image of 16 MiB, `disk`.
fn disk_image(app: &crate::state::App) {
    app.store
        .insert_image(&Image {
            id: uuid::Uuid::new_v4(),
            name: "disk".into(),
            kind: ImageKind::Disk,
            files: vec![ImageFile {
                role: FileRole::Disk,
                size: MIB,
                sha256: "00".into(),
                format: Some("qcow2".into()),
                virtual_size: Some(16 * MIB),
            }],
            cmdline: None,
            created_at: cm_api::time::to_timestamp(now_ms()),
        })
        .unwrap();
}

/// Its host reports the volume's file made.
fn made(app: &crate::state::App, name: &str) {
    let s = app.store.as_ref();
    let v = s.get_volume(name).unwrap();
    let file = ObservedVolume {
        id: v.id.uuid(),
        size_bytes: v.size_bytes,
        allocated_bytes: 4096,
        error: None,
        snapshots: Vec::new(),
        reverted_gen: 0,
        revert_error: None,
    };
    s.record_volume_report(v.host_id, &[file], &[], &|_| Vec::new(), now_ms())
        .unwrap();
}

fn create(name: &str, extra: Value) -> Option<Value> {
    let mut b = json!({"name": name, "memory_mib": 64});
    if let (Some(b), Some(e)) = (b.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    Some(b)
}

#[tokio::test]
async fn persistent_roots_are_made_refused_and_booted_again() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path(), &[]);
    world(&app);
    disk_image(&app);
    let r = router(app.clone());
    let (st, v) = call(
        &r,
        Method::POST,
        "/v1/instances",
        create(
            "p",
            json!({"image": "disk", "persistent": true, "host": "h1"}),
        ),
        None,
    )
    .await;
    assert_eq!(st, 202, "{v}");
    assert_eq!(v["instance"]["root_volume"], "p-root", "{v}");
    let (_, vol) = call(&r, Method::GET, "/v1/volumes/p-root", None, None).await;
    assert_eq!(
        (
            &vol["root_of"],
            &vol["image"],
            &vol["attached_to"],
            &vol["state"]
        ),
        (&json!("p"), &json!("disk"), &json!("p"), &json!("creating")),
        "{vol}"
    );
    assert_eq!(vol["size_bytes"], 16 * MIB, "the image's virtual size");
    // The host is asked to make it as an overlay on the image, and to boot
    // the instance from it.
    let h1 = app.store.get_host("h1").unwrap().id;
    let wait = std::time::Duration::ZERO;
    let d = crate::app::agent::desired(&app, h1, None, wait)
        .await
        .unwrap();
    let root = d.volumes.iter().find(|v| v.name == "p-root").unwrap();
    assert_eq!(root.image.as_ref().map(|i| i.name.as_str()), Some("disk"));
    let p = d.instances.iter().find(|i| i.name == "p").unwrap();
    assert_eq!(p.root_volume, Some(root.id));
    assert!(p.volumes.is_empty(), "a root is not a data disk");
    made(&app, "p-root");
    // Once its file is reported, it is no longer made from the image.
    let d = crate::app::agent::desired(&app, h1, None, wait)
        .await
        .unwrap();
    let root = d.volumes.iter().find(|v| v.name == "p-root").unwrap();
    assert_eq!(root.image, None);
    let (_, vol) = call(&r, Method::GET, "/v1/volumes/p-root", None, None).await;
    assert_eq!(vol["state"], "attached", "{vol}");
    for (path, body) in [
        (
            "/v1/volumes",
            json!({"name": "q-root", "size_bytes": MIB, "host": "h1"}),
        ),
        (
            "/v1/volumes",
            json!({"name": "far", "size_bytes": MIB, "host": "h2"}),
        ),
        (
            "/v1/volumes",
            json!({"name": "data", "size_bytes": MIB, "host": "h1"}),
        ),
        ("/v1/volumes/data/attach", json!({"instance": "vm0"})),
    ] {
        let (st, v) = call(&r, Method::POST, path, Some(body), None).await;
        assert_eq!(st, 202, "{path}: {v}");
    }
    made(&app, "far");
    let cases: Vec<Case> = vec![
        (
            "persistent on a kernel image",
            Method::POST,
            "/v1/instances",
            create("k", json!({"image": "tiny", "persistent": true})),
            (409, "conflict", Some("image")),
        ),
        (
            "persistent and a root volume",
            Method::POST,
            "/v1/instances",
            create("k", json!({"persistent": true, "root_volume": "p-root"})),
            (400, "invalid_input", Some("root_volume")),
        ),
        (
            "a root volume and an image",
            Method::POST,
            "/v1/instances",
            create("k", json!({"image": "disk", "root_volume": "p-root"})),
            (400, "invalid_input", Some("image")),
        ),
        (
            "no such root volume",
            Method::POST,
            "/v1/instances",
            create("k", json!({"root_volume": "ghost"})),
            (404, "not_found", Some("root_volume")),
        ),
        (
            "an empty volume as root",
            Method::POST,
            "/v1/instances",
            create("k", json!({"root_volume": "far"})),
            (409, "conflict", Some("root_volume")),
        ),
        (
            "a root volume in use",
            Method::POST,
            "/v1/instances",
            create("k", json!({"root_volume": "p-root"})),
            (409, "conflict", Some("root_volume")),
        ),
        (
            "a root volume attached as data",
            Method::POST,
            "/v1/instances",
            create("k", json!({"root_volume": "data"})),
            (409, "conflict", Some("root_volume")),
        ),
        (
            "a root's name taken by a volume",
            Method::POST,
            "/v1/instances",
            create("q", json!({"image": "disk", "persistent": true})),
            (409, "conflict", Some("name")),
        ),
        (
            "a root volume deleted",
            Method::DELETE,
            "/v1/volumes/p-root",
            None,
            (409, "conflict", None),
        ),
        (
            "a root volume detached",
            Method::POST,
            "/v1/volumes/p-root/detach",
            None,
            (409, "conflict", None),
        ),
        (
            "a root volume attached elsewhere",
            Method::POST,
            "/v1/volumes/p-root/attach",
            Some(json!({"instance": "vm0"})),
            (409, "conflict", Some("instance")),
        ),
        (
            "a root volume as a data volume",
            Method::POST,
            "/v1/instances",
            create("k", json!({"image": "disk", "volumes": ["p-root"]})),
            (409, "conflict", Some("volumes")),
        ),
        (
            "the image under a root volume deleted",
            Method::DELETE,
            "/v1/images/disk",
            None,
            (409, "conflict", Some("name")),
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

    // A snapshot of the persistent instance is one of its volume.
    let (st, snap) = call(
        &r,
        Method::POST,
        "/v1/snapshots",
        Some(json!({"name": "s1", "instance": "p"})),
        None,
    )
    .await;
    assert_eq!(st, 202, "{snap}");
    assert_eq!(snap["snapshot"]["of"], "volume", "{snap}");

    // Deleted, the instance leaves its root; it boots another on its host.
    let (st, _) = call(&r, Method::DELETE, "/v1/instances/p", None, None).await;
    assert_eq!(st, 202);
    let (_, vol) = call(&r, Method::GET, "/v1/volumes/p-root", None, None).await;
    assert_eq!(vol["state"], "available", "{vol}");
    assert_eq!((vol.get("root_of"), &vol["image"]), (None, &json!("disk")));
    let (st, v) = call(
        &r,
        Method::POST,
        "/v1/instances",
        create("k", json!({"root_volume": "p-root", "host": "h2"})),
        None,
    )
    .await;
    assert_eq!((st, &v["error"]["field"]), (409, &json!("host")), "{v}");
    let (st, v) = call(
        &r,
        Method::POST,
        "/v1/instances",
        create("k", json!({"root_volume": "p-root"})),
        None,
    )
    .await;
    assert_eq!(st, 202, "{v}");
    let i = &v["instance"];
    assert_eq!(
        (&i["image"], &i["host"], &i["root_volume"]),
        (&json!("disk"), &json!("h1"), &json!("p-root"))
    );
}
