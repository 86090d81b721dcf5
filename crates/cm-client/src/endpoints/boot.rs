//! `/boot/v1/*`: what a guest calls, with its record's uuid and secret
//! (HTTP Basic) instead of a token.

use crate::request::{seg, Endpoint, Request};
use cm_api::answer::Ack;
use cm_api::boot::{AssignDynamic, Assigned, Heartbeat, UpdateCache};
use reqwest::Method;

/// `GET /boot/v1/configs/{uuid}`: the config body, as bytes.
pub fn fetch(uuid: &str, secret: &str) -> Endpoint<Vec<u8>> {
    Endpoint::bytes(
        Request::new(Method::GET, format!("/boot/v1/configs/{}", seg(uuid))).basic(uuid, secret),
    )
}

/// `PUT /boot/v1/configs/{uuid}/status`: what the guest applied.
pub fn update_status(uuid: &str, secret: &str, req: &UpdateCache) -> Endpoint<Ack> {
    Endpoint::new(
        Request::new(
            Method::PUT,
            format!("/boot/v1/configs/{}/status", seg(uuid)),
        )
        .json(req)
        .basic(uuid, secret),
    )
}

pub fn heartbeat(uuid: &str, secret: &str, req: &Heartbeat) -> Endpoint<Ack> {
    Endpoint::new(
        Request::new(
            Method::POST,
            format!("/boot/v1/configs/{}/heartbeat", seg(uuid)),
        )
        .json(req)
        .basic(uuid, secret),
    )
}

/// `POST /boot/v1/assign`: a dynamic record of the domain, with the
/// domain's name (or an instance's credential) and secret.
pub fn assign(user: &str, secret: &str, req: &AssignDynamic) -> Endpoint<Assigned> {
    Endpoint::new(
        Request::new(Method::POST, "/boot/v1/assign".to_string())
            .json(req)
            .basic(user, secret),
    )
}
