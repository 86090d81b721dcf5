//! `/v1/configs*` and `/v1/config-domains*`: boot-time config records.

use crate::request::{delete, get, seg, send, Endpoint};
use cm_api::answer::{NameDeleted, UuidRemoved};
use cm_api::boot::{
    Config, ConfigDetail, CreateDomain, Domain, DomainCreated, PreRegister, Registered,
    RemoveStale, Removed, SetConfig,
};
use reqwest::Method;

pub fn pre_register(req: &PreRegister) -> Endpoint<Registered> {
    send(Method::POST, "/v1/configs".to_string(), req)
}

/// Every record, or those of one domain.
pub fn list(domain: Option<&str>) -> Endpoint<Vec<Config>> {
    match domain {
        Some(d) => get(format!("/v1/configs?domain={}", seg(d))),
        None => get("/v1/configs".to_string()),
    }
}

pub fn detail(uuid: &str) -> Endpoint<ConfigDetail> {
    get(format!("/v1/configs/{}", seg(uuid)))
}

pub fn set_config(uuid: &str, req: &SetConfig) -> Endpoint<Config> {
    send(
        Method::PUT,
        format!("/v1/configs/{}/config", seg(uuid)),
        req,
    )
}

pub fn remove(uuid: &str) -> Endpoint<UuidRemoved> {
    delete(format!("/v1/configs/{}", seg(uuid)))
}

pub fn remove_stale(req: &RemoveStale) -> Endpoint<Removed> {
    send(Method::POST, "/v1/configs/remove-stale".to_string(), req)
}

pub fn domains() -> Endpoint<Vec<Domain>> {
    get("/v1/config-domains".to_string())
}

pub fn create_domain(req: &CreateDomain) -> Endpoint<DomainCreated> {
    send(Method::POST, "/v1/config-domains".to_string(), req)
}

pub fn delete_domain(name: &str) -> Endpoint<NameDeleted> {
    delete(format!("/v1/config-domains/{}", seg(name)))
}
