//! `/v1/snapshots*` (docs/storage.md, "Snapshots").

use crate::request::{delete, get, seg, send, Endpoint};
use cm_api::snapshot::{CloneSnapshot, CreateSnapshot, Snapshot, SnapshotAccepted, SnapshotQuery};
use cm_api::volume::VolumeAccepted;
use reqwest::Method;

/// Every snapshot, or those of one volume or one instance's root disk.
pub fn list(q: &SnapshotQuery) -> Endpoint<Vec<Snapshot>> {
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
    get(format!("/v1/snapshots{query}"))
}

/// One snapshot, by name or id.
pub fn show(name: &str) -> Endpoint<Snapshot> {
    get(format!("/v1/snapshots/{}", seg(name)))
}

pub fn create(req: &CreateSnapshot) -> Endpoint<SnapshotAccepted> {
    send(Method::POST, "/v1/snapshots".to_string(), req)
}

/// Revert its disk to it (the disk's user stopped).
pub fn restore(name: &str) -> Endpoint<SnapshotAccepted> {
    send(
        Method::POST,
        format!("/v1/snapshots/{}/restore", seg(name)),
        &serde_json::json!({}),
    )
}

/// A new volume from it, on its host.
pub fn clone(name: &str, req: &CloneSnapshot) -> Endpoint<VolumeAccepted> {
    send(
        Method::POST,
        format!("/v1/snapshots/{}/clone", seg(name)),
        req,
    )
}

pub fn delete_snapshot(name: &str) -> Endpoint<SnapshotAccepted> {
    delete(format!("/v1/snapshots/{}", seg(name)))
}
