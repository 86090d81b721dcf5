//! `/v1/images*` and `/v1/flavors*`.

use crate::request::{delete, get, seg, send, Endpoint};
use cm_api::answer::NameDeleted;
use cm_api::image::{CreateFlavor, CreateImage, Flavor, Image};
use reqwest::Method;

pub fn images() -> Endpoint<Vec<Image>> {
    get("/v1/images".to_string())
}

pub fn image(name: &str) -> Endpoint<Image> {
    get(format!("/v1/images/{}", seg(name)))
}

pub fn create_image(req: &CreateImage) -> Endpoint<Image> {
    send(Method::POST, "/v1/images".to_string(), req)
}

pub fn delete_image(name: &str) -> Endpoint<NameDeleted> {
    delete(format!("/v1/images/{}", seg(name)))
}

pub fn flavors() -> Endpoint<Vec<Flavor>> {
    get("/v1/flavors".to_string())
}

pub fn flavor(name: &str) -> Endpoint<Flavor> {
    get(format!("/v1/flavors/{}", seg(name)))
}

pub fn create_flavor(req: &CreateFlavor) -> Endpoint<Flavor> {
    send(Method::POST, "/v1/flavors".to_string(), req)
}

pub fn delete_flavor(name: &str) -> Endpoint<NameDeleted> {
    delete(format!("/v1/flavors/{}", seg(name)))
}

/// A disk image made from a stopped instance's root disk (docs/storage.md,
/// "Images from instances").
pub fn image_from_instance(
    req: &cm_api::image::ImageFromInstance,
) -> Endpoint<cm_api::image::ImageAccepted> {
    crate::request::send(
        reqwest::Method::POST,
        "/v1/images/from-instance".to_string(),
        req,
    )
}
