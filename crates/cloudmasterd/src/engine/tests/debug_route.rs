//! The debug route that makes a DPE panic: admin only, and only when the
//! master was started with `--debug-routes`.

use super::cpe::app_with_args;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use tower::ServiceExt;

async fn post(
    app: &std::sync::Arc<crate::state::App>,
    path: &str,
    token: Option<&str>,
) -> StatusCode {
    let mut req = Request::post(path);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    crate::api::router(app.clone())
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn the_panic_route_poisons_a_dpe_only_with_the_flag_and_the_admin_token() {
    let dir = tempfile::tempdir().unwrap();
    let path = "/v1/debug/deployables/app/panic";
    let off = app_with_args(dir.path(), &[]);
    assert_eq!(
        post(&off, path, Some("cma_test")).await,
        StatusCode::NOT_FOUND
    );
    let on = app_with_args(dir.path(), &["--debug-routes"]);
    assert_eq!(post(&on, path, None).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        post(&on, "/v1/debug/deployables/nope/panic", Some("cma_test")).await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        post(&on, path, Some("cma_test")).await,
        StatusCode::ACCEPTED
    );
    let id = on.db(|s| s.deployable_id("app")).await.unwrap().unwrap();
    assert!(on.engines.take_poison(id));
    assert!(!on.engines.take_poison(id), "once");
    // Not in the OpenAPI document.
    let doc = serde_json::to_string(&crate::api::openapi_document()).unwrap();
    assert!(!doc.contains("/v1/debug"));
}
