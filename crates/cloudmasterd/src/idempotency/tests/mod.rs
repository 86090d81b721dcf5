//! The replay, the mismatch, a retry during the first run, expiry, and a
//! crash between a create's commit and its answer, on a real store on disk
//! driven through the real router.

use super::*;
use crate::api::instances;
use crate::bootcfg::Keyring;
use crate::store::sqlite::SqliteStore;
use crate::store::{new_operation, NewInstance, Store};
use axum::body::Body;
use axum::http::HeaderMap;
use axum::routing::post;
use axum::{Extension, Router};
use clap::Parser;
use cm_api::host::HostFacts;
use cm_api::image::{FileRole, Image, ImageFile, ImageKind};
use std::path::Path;
use tower::ServiceExt;
use uuid::Uuid;

const TOKEN: &str = "cma_idempotency_test";
/// Host h1's token.
const HOST_TOKEN: &str = "cmh_idempotency_test";

/// The master's state on `dir`, as a start (or a restart after a crash) makes it.
fn open(dir: &Path) -> Arc<App> {
    let store = SqliteStore::open(&dir.join("cloud.db")).unwrap();
    store
        .replace_admin_token(&crate::auth::hash(TOKEN))
        .unwrap();
    let d = dir.to_string_lossy().to_string();
    let args = crate::config::Args::parse_from([
        "cloudmasterd",
        "--data-dir",
        &d,
        "--report-interval",
        "3",
        "--host-down-after",
        "3600",
        "--host-reserved-mib",
        "0",
    ]);
    let settings = crate::config::Config::load(&args).unwrap().settings;
    let keys = Keyring::open(&dir.join("boot.key")).unwrap();
    let uploads = crate::uploads::Uploads::new(&settings).unwrap();
    Arc::new(App::new(Arc::new(store), settings, Uuid::new_v4(), keys, uploads).unwrap())
}

/// A fresh master with one host and the image `tiny`.
fn master() -> (tempfile::TempDir, Arc<App>) {
    let dir = tempfile::tempdir().unwrap();
    let app = open(dir.path());
    let facts = HostFacts {
        memory_total_mib: 4096,
        memory_available_mib: 4096,
        vcpus: 2,
        accel: cm_api::words::ResolvedAccel::Tcg,
        ..Default::default()
    };
    let host = app
        .store
        .register_host("h1", &crate::auth::hash(HOST_TOKEN), &facts, 0)
        .unwrap();
    app.remember_token(crate::auth::hash(HOST_TOKEN), Principal::Host(host));
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

async fn send_as(
    token: &str,
    router: &Router,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: &serde_json::Value,
) -> Reply {
    let mut req = axum::http::Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {token}"))
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

async fn send(
    router: &Router,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: &serde_json::Value,
) -> Reply {
    send_as(TOKEN, router, method, path, key, body).await
}

fn web(name: &str) -> serde_json::Value {
    serde_json::json!({"name": name, "image": "tiny", "memory_mib": 128})
}

mod http;
mod keys;
