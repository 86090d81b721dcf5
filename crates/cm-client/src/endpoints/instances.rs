//! `/v1/instances*`.

use crate::request::{delete, get, seg, send, Endpoint};
use cm_api::instance::{ConsoleLog, CreateInstance, Instance, InstanceAccepted, StopInstance};
use cm_api::operation::Operation;
use reqwest::Method;

pub fn list() -> Endpoint<Vec<Instance>> {
    get("/v1/instances".to_string())
}

/// One instance, by name or id.
pub fn show(name: &str) -> Endpoint<Instance> {
    get(format!("/v1/instances/{}", seg(name)))
}

pub fn create(req: &CreateInstance) -> Endpoint<InstanceAccepted> {
    send(Method::POST, "/v1/instances".to_string(), req)
}

pub fn start(name: &str) -> Endpoint<Operation> {
    action(name, "start", &serde_json::json!({}))
}

pub fn stop(name: &str, req: &StopInstance) -> Endpoint<Operation> {
    action(name, "stop", req)
}

pub fn reboot(name: &str) -> Endpoint<Operation> {
    action(name, "reboot", &serde_json::json!({}))
}

pub fn delete_instance(name: &str) -> Endpoint<Operation> {
    delete(format!("/v1/instances/{}", seg(name)))
}

/// The last `bytes` of its serial console.
pub fn console(name: &str, bytes: u64) -> Endpoint<ConsoleLog> {
    get(format!("/v1/instances/{}/console?bytes={bytes}", seg(name)))
}

fn action<B: serde::Serialize>(name: &str, verb: &str, body: &B) -> Endpoint<Operation> {
    send(
        Method::POST,
        format!("/v1/instances/{}/{verb}", seg(name)),
        body,
    )
}
