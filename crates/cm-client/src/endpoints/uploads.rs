//! `/v1/uploads*`: resumable uploads of image files (docs/api.md).

use crate::request::{delete, get, seg, send, Endpoint, Request};
use cm_api::answer::IdDeleted;
use cm_api::upload::{CreateUpload, Upload};
use reqwest::Method;
use uuid::Uuid;

/// Unfinished uploads, or those of the bytes with this sha256.
pub fn list(sha256: Option<&str>) -> Endpoint<Vec<Upload>> {
    match sha256 {
        Some(s) => get(format!("/v1/uploads?sha256={}", seg(s))),
        None => get("/v1/uploads".to_string()),
    }
}

pub fn show(id: Uuid) -> Endpoint<Upload> {
    get(format!("/v1/uploads/{id}"))
}

pub fn create(req: &CreateUpload) -> Endpoint<Upload> {
    send(Method::POST, "/v1/uploads".to_string(), req)
}

pub fn delete_upload(id: Uuid) -> Endpoint<IdDeleted> {
    delete(format!("/v1/uploads/{id}"))
}

/// `PATCH /v1/uploads/{id}` with bytes at `offset`: the request without its
/// body, which a transport's `write_upload` streams.
pub fn write(id: Uuid) -> Endpoint<Upload> {
    Endpoint::new(Request::new(Method::PATCH, format!("/v1/uploads/{id}")))
}
