//! `/v1/backups*` and `/v1/backup-schedules*` (docs/storage.md, "Backups").

use crate::request::{delete, get, seg, send, Endpoint};
use cm_api::backup::{
    Backup, BackupAccepted, BackupQuery, BackupSchedule, CreateBackup, RestoreBackup,
};
use cm_api::operation::Operation;
use cm_api::volume::VolumeAccepted;
use reqwest::Method;
use serde::{Deserialize, Serialize};

/// `202` to `DELETE /v1/backups/{name}`: `{"operation"}` (a
/// `backup.delete`; other fields the master adds are not read).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackupDeleted {
    pub operation: Operation,
}

/// Every backup, or those of one volume or one instance's root disk.
pub fn list(q: &BackupQuery) -> Endpoint<Vec<Backup>> {
    let mut args = Vec::new();
    if let Some(v) = &q.volume {
        args.push(format!("volume={}", seg(v)));
    }
    if let Some(i) = &q.instance {
        args.push(format!("instance={}", seg(i)));
    }
    let query = if args.is_empty() {
        String::new()
    } else {
        format!("?{}", args.join("&"))
    };
    get(format!("/v1/backups{query}"))
}

/// One backup, by name or id.
pub fn show(name: &str) -> Endpoint<Backup> {
    get(format!("/v1/backups/{}", seg(name)))
}

/// Back up a volume or an instance's root disk now (and, with `every`, on
/// that schedule).
pub fn create(req: &CreateBackup) -> Endpoint<BackupAccepted> {
    send(Method::POST, "/v1/backups".to_string(), req)
}

/// A new volume from it, on the chain's host or the one named.
pub fn restore(name: &str, req: &RestoreBackup) -> Endpoint<VolumeAccepted> {
    send(
        Method::POST,
        format!("/v1/backups/{}/restore", seg(name)),
        req,
    )
}

/// Remove it from its chain (a later increment is rebased first).
pub fn delete_backup(name: &str) -> Endpoint<BackupDeleted> {
    delete(format!("/v1/backups/{}", seg(name)))
}

/// Every backup schedule.
pub fn schedules() -> Endpoint<Vec<BackupSchedule>> {
    get("/v1/backup-schedules".to_string())
}

/// End a schedule (its backups stay). `200`; the answer's body is not
/// read beyond being JSON.
pub fn delete_schedule(name: &str) -> Endpoint<serde_json::Value> {
    delete(format!("/v1/backup-schedules/{}", seg(name)))
}
