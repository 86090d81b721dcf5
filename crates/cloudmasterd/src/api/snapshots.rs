//! `/v1/snapshots` (docs/storage.md, "Snapshots"): create (of a volume or
//! of an instance's root disk), list, show, and the slow actions (restore,
//! clone, delete), each answered `202` with its operation. The rules are in
//! `app::snapshots`.

use super::bearer::Admin;
use super::error::{ApiResult, Body};
use super::extract::{Path, Query};
use super::openapi::Errors;
use crate::app::snapshots;
use crate::idempotency::Keyed;
use crate::state::App;
use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use cm_api::snapshot::{CloneSnapshot, CreateSnapshot, Snapshot, SnapshotAccepted, SnapshotQuery};
use cm_api::volume::VolumeAccepted;
use std::sync::Arc;

type Accepted = ApiResult<(StatusCode, Json<SnapshotAccepted>)>;

fn accepted(a: SnapshotAccepted) -> (StatusCode, Json<SnapshotAccepted>) {
    (StatusCode::ACCEPTED, Json(a))
}

#[utoipa::path(
    get,
    path = "/v1/snapshots",
    tag = "snapshots",
    params(cm_api::snapshot::SnapshotQuery),
    responses((status = 200, description = "OK", body = Vec<cm_api::snapshot::Snapshot>), Errors),
    security(("bearer" = [])),
)]
pub async fn list(
    State(app): State<Arc<App>>,
    _: Admin,
    Query(q): Query<SnapshotQuery>,
) -> ApiResult<Json<Vec<Snapshot>>> {
    Ok(Json(snapshots::list(&app, q.volume, q.instance).await?))
}

#[utoipa::path(
    post,
    path = "/v1/snapshots",
    tag = "snapshots",
    request_body = cm_api::snapshot::CreateSnapshot,
    responses((status = 202, description = "recorded; the operation tells when its host took it", body = cm_api::snapshot::SnapshotAccepted), Errors),
    security(("bearer" = [])),
)]
pub async fn create(
    State(app): State<Arc<App>>,
    _: Admin,
    keyed: Option<Extension<Keyed>>,
    Body(req): Body<CreateSnapshot>,
) -> Accepted {
    let k = keyed.map(|Extension(k)| k);
    Ok(accepted(snapshots::create(&app, k, req).await?))
}

#[utoipa::path(
    get,
    path = "/v1/snapshots/{name}",
    tag = "snapshots",
    params(("name" = String, Path, description = "snapshot name or id")),
    responses((status = 200, description = "OK", body = cm_api::snapshot::Snapshot), Errors),
    security(("bearer" = [])),
)]
pub async fn show(
    State(app): State<Arc<App>>,
    _: Admin,
    Path(name): Path<String>,
) -> ApiResult<Json<Snapshot>> {
    Ok(Json(snapshots::show(&app, name).await?))
}

#[utoipa::path(
    delete,
    path = "/v1/snapshots/{name}",
    tag = "snapshots",
    params(("name" = String, Path, description = "snapshot name or id")),
    responses((status = 202, description = "delete recorded; done when its host removed it", body = cm_api::snapshot::SnapshotAccepted), Errors),
    security(("bearer" = [])),
)]
pub async fn delete(
    State(app): State<Arc<App>>,
    _: Admin,
    keyed: Option<Extension<Keyed>>,
    Path(name): Path<String>,
) -> Accepted {
    let k = keyed.map(|Extension(k)| k);
    Ok(accepted(snapshots::delete(&app, k, name).await?))
}

#[utoipa::path(
    post,
    path = "/v1/snapshots/{name}/restore",
    tag = "snapshots",
    params(("name" = String, Path, description = "snapshot name or id")),
    responses((status = 202, description = "revert recorded; done when its host reverted the disk", body = cm_api::snapshot::SnapshotAccepted), Errors),
    security(("bearer" = [])),
)]
pub async fn restore(
    State(app): State<Arc<App>>,
    _: Admin,
    keyed: Option<Extension<Keyed>>,
    Path(name): Path<String>,
) -> Accepted {
    let k = keyed.map(|Extension(k)| k);
    Ok(accepted(snapshots::restore(&app, k, name).await?))
}

#[utoipa::path(
    post,
    path = "/v1/snapshots/{name}/clone",
    tag = "snapshots",
    params(("name" = String, Path, description = "snapshot name or id")),
    request_body = cm_api::snapshot::CloneSnapshot,
    responses((status = 202, description = "the new volume recorded on the snapshot's host; its volume.create tells when it is made", body = cm_api::volume::VolumeAccepted), Errors),
    security(("bearer" = [])),
)]
pub async fn clone(
    State(app): State<Arc<App>>,
    _: Admin,
    keyed: Option<Extension<Keyed>>,
    Path(name): Path<String>,
    Body(req): Body<CloneSnapshot>,
) -> ApiResult<(StatusCode, Json<VolumeAccepted>)> {
    let k = keyed.map(|Extension(k)| k);
    let a = snapshots::clone(&app, k, name, req).await?;
    Ok((StatusCode::ACCEPTED, Json(a)))
}
