//! `/v1/volumes*` (docs/storage.md).

use crate::request::{delete, get, seg, send, Endpoint};
use cm_api::volume::{
    AttachVolume, CreateVolume, DetachVolume, MoveVolume, ResizeVolume, Volume, VolumeAccepted,
};
use reqwest::Method;

pub fn list() -> Endpoint<Vec<Volume>> {
    get("/v1/volumes".to_string())
}

/// One volume, by name or id.
pub fn show(name: &str) -> Endpoint<Volume> {
    get(format!("/v1/volumes/{}", seg(name)))
}

pub fn create(req: &CreateVolume) -> Endpoint<VolumeAccepted> {
    send(Method::POST, "/v1/volumes".to_string(), req)
}

pub fn resize(name: &str, req: &ResizeVolume) -> Endpoint<VolumeAccepted> {
    action(name, "resize", req)
}

pub fn attach(name: &str, req: &AttachVolume) -> Endpoint<VolumeAccepted> {
    action(name, "attach", req)
}

pub fn detach(name: &str, req: &DetachVolume) -> Endpoint<VolumeAccepted> {
    action(name, "detach", req)
}

/// Copy it, offline, to another host (docs/storage.md, "Moving a volume").
pub fn move_volume(name: &str, req: &MoveVolume) -> Endpoint<VolumeAccepted> {
    action(name, "move", req)
}

pub fn delete_volume(name: &str) -> Endpoint<VolumeAccepted> {
    delete(format!("/v1/volumes/{}", seg(name)))
}

fn action<B: serde::Serialize>(name: &str, verb: &str, body: &B) -> Endpoint<VolumeAccepted> {
    send(
        Method::POST,
        format!("/v1/volumes/{}/{verb}", seg(name)),
        body,
    )
}
