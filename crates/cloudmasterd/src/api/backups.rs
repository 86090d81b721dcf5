//! `/v1/backups` and `/v1/backup-schedules` (docs/storage.md, "Backups
//! (point 6)"): create (of a volume or of an instance's root disk, now and
//! optionally on a schedule), list, show, delete, restore, and the
//! schedules. The rules are in `app::backups`.

use super::bearer::Admin;
use super::error::{ApiResult, Body};
use super::extract::{Path, Query};
use super::openapi::Errors;
use crate::app::backups;
use crate::idempotency::Keyed;
use crate::state::App;
use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use cm_api::backup::{
    Backup, BackupAccepted, BackupQuery, BackupSchedule, CreateBackup, RestoreBackup,
};
use cm_api::volume::VolumeAccepted;
use std::sync::Arc;

type Accepted = ApiResult<(StatusCode, Json<BackupAccepted>)>;

fn accepted(a: BackupAccepted) -> (StatusCode, Json<BackupAccepted>) {
    (StatusCode::ACCEPTED, Json(a))
}

#[utoipa::path(
    get,
    path = "/v1/backups",
    tag = "backups",
    params(cm_api::backup::BackupQuery),
    responses((status = 200, description = "OK, oldest first", body = Vec<cm_api::backup::Backup>), Errors),
    security(("bearer" = [])),
)]
pub async fn list(
    State(app): State<Arc<App>>,
    _: Admin,
    Query(q): Query<BackupQuery>,
) -> ApiResult<Json<Vec<Backup>>> {
    Ok(Json(backups::list(&app, q.volume, q.instance).await?))
}

#[utoipa::path(
    post,
    path = "/v1/backups",
    tag = "backups",
    request_body = cm_api::backup::CreateBackup,
    responses((status = 202, description = "recorded (with its schedule); the operation tells when its host made it", body = cm_api::backup::BackupAccepted), Errors),
    security(("bearer" = [])),
)]
pub async fn create(
    State(app): State<Arc<App>>,
    _: Admin,
    keyed: Option<Extension<Keyed>>,
    Body(req): Body<CreateBackup>,
) -> Accepted {
    let k = keyed.map(|Extension(k)| k);
    Ok(accepted(backups::create(&app, k, req).await?))
}

#[utoipa::path(
    get,
    path = "/v1/backups/{name}",
    tag = "backups",
    params(("name" = String, Path, description = "backup name or id")),
    responses((status = 200, description = "OK", body = cm_api::backup::Backup), Errors),
    security(("bearer" = [])),
)]
pub async fn show(
    State(app): State<Arc<App>>,
    _: Admin,
    Path(name): Path<String>,
) -> ApiResult<Json<Backup>> {
    Ok(Json(backups::show(&app, name).await?))
}

#[utoipa::path(
    delete,
    path = "/v1/backups/{name}",
    tag = "backups",
    params(("name" = String, Path, description = "backup name or id")),
    responses((status = 202, description = "delete recorded; done when its host removed the file", body = cm_api::backup::BackupAccepted), Errors),
    security(("bearer" = [])),
)]
pub async fn delete(
    State(app): State<Arc<App>>,
    _: Admin,
    keyed: Option<Extension<Keyed>>,
    Path(name): Path<String>,
) -> Accepted {
    let k = keyed.map(|Extension(k)| k);
    Ok(accepted(backups::delete(&app, k, name).await?))
}

#[utoipa::path(
    post,
    path = "/v1/backups/{name}/restore",
    tag = "backups",
    params(("name" = String, Path, description = "backup name or id")),
    request_body = cm_api::backup::RestoreBackup,
    responses((status = 202, description = "the new volume recorded; its backup.restore operation tells when its host imported it", body = cm_api::volume::VolumeAccepted), Errors),
    security(("bearer" = [])),
)]
pub async fn restore(
    State(app): State<Arc<App>>,
    _: Admin,
    keyed: Option<Extension<Keyed>>,
    Path(name): Path<String>,
    Body(req): Body<RestoreBackup>,
) -> ApiResult<(StatusCode, Json<VolumeAccepted>)> {
    let k = keyed.map(|Extension(k)| k);
    let a = crate::app::backup_restore::restore(&app, k, name, req).await?;
    Ok((StatusCode::ACCEPTED, Json(a)))
}

#[utoipa::path(
    get,
    path = "/v1/backup-schedules",
    tag = "backups",
    responses((status = 200, description = "OK", body = Vec<cm_api::backup::BackupSchedule>), Errors),
    security(("bearer" = [])),
)]
pub async fn schedules(
    State(app): State<Arc<App>>,
    _: Admin,
) -> ApiResult<Json<Vec<BackupSchedule>>> {
    Ok(Json(backups::schedules(&app).await?))
}

#[utoipa::path(
    delete,
    path = "/v1/backup-schedules/{name}",
    tag = "backups",
    params(("name" = String, Path, description = "schedule name or id")),
    responses((status = 200, description = "removed; its backups stay", body = cm_api::backup::BackupSchedule), Errors),
    security(("bearer" = [])),
)]
pub async fn unschedule(
    State(app): State<Arc<App>>,
    _: Admin,
    Path(name): Path<String>,
) -> ApiResult<Json<BackupSchedule>> {
    Ok(Json(backups::unschedule(&app, name).await?))
}
