//! `/v1/deployables*`: specs applied, compared, rolled back and deleted.

use crate::request::{delete, get, seg, send, Endpoint};
use cm_api::deploy::{
    ApplyAnswer, ApplyRequest, Deployable, DeployableList, RepairAnswer, RepairRequest,
    RollbackRequest, SpecSource,
};
use reqwest::Method;

pub fn apply(name: &str, req: &ApplyRequest) -> Endpoint<ApplyAnswer> {
    send(Method::PUT, format!("/v1/deployables/{}", seg(name)), req)
}

/// What `apply` would change; the master writes nothing.
pub fn diff(name: &str, req: &ApplyRequest) -> Endpoint<ApplyAnswer> {
    send(
        Method::POST,
        format!("/v1/deployables/{}/diff", seg(name)),
        req,
    )
}

pub fn list() -> Endpoint<DeployableList> {
    get("/v1/deployables".to_string())
}

/// With its spec in force and its slots.
pub fn show(name: &str) -> Endpoint<Deployable> {
    get(format!("/v1/deployables/{}", seg(name)))
}

/// A generation's spec as it was sent (default: the one in force).
pub fn spec(name: &str, generation: Option<u64>) -> Endpoint<SpecSource> {
    match generation {
        Some(g) => get(format!("/v1/deployables/{}/spec?generation={g}", seg(name))),
        None => get(format!("/v1/deployables/{}/spec", seg(name))),
    }
}

pub fn rollback(name: &str, req: &RollbackRequest) -> Endpoint<ApplyAnswer> {
    send(
        Method::POST,
        format!("/v1/deployables/{}/rollback", seg(name)),
        req,
    )
}

/// Clear a failed slot's counters (`cm deploy repair`).
pub fn repair(name: &str, req: &RepairRequest) -> Endpoint<RepairAnswer> {
    send(
        Method::POST,
        format!("/v1/deployables/{}/repair", seg(name)),
        req,
    )
}

/// Answers the deployable in state `deleting`.
pub fn delete_deployable(name: &str) -> Endpoint<Deployable> {
    delete(format!("/v1/deployables/{}", seg(name)))
}
