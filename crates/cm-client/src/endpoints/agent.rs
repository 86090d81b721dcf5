//! `/v1/agent/*`: what a host agent calls, with its host token (registration
//! with the join token in the body).

use crate::request::{get, send, Endpoint, Request};
use cm_api::agent::{AgentReply, DesiredState, HostReport, RegisterHost, Registered};
use cm_api::answer::{Ack, Delivered};
use cm_api::image::FileRole;
use reqwest::Method;
use std::time::Duration;
use uuid::Uuid;

/// How long a host's call waits for an answer.
const AGENT_TIMEOUT: Duration = Duration::from_secs(30);

pub fn register(req: &RegisterHost) -> Endpoint<Registered> {
    Endpoint::new(
        Request::new(Method::POST, "/v1/agent/register".to_string())
            .json(req)
            .no_auth()
            .timeout(AGENT_TIMEOUT),
    )
}

/// Long-poll the desired state past `after`, for up to `wait` seconds.
pub fn desired(after: u64, wait: u64) -> Endpoint<DesiredState> {
    let mut e = get(format!("/v1/agent/desired?after={after}&wait={wait}"));
    e.request.timeout = Some(Duration::from_secs(wait + 30));
    e
}

pub fn report(rep: &HostReport) -> Endpoint<Ack> {
    let mut e = send(Method::POST, "/v1/agent/report".to_string(), rep);
    e.request.timeout = Some(AGENT_TIMEOUT);
    e
}

pub fn reply(id: Uuid, reply: &AgentReply) -> Endpoint<Delivered> {
    let mut e = send(Method::POST, format!("/v1/agent/replies/{id}"), reply);
    e.request.timeout = Some(AGENT_TIMEOUT);
    e
}

/// An image file, streamed: open it with a transport's `download`.
pub fn image_file(id: Uuid, role: FileRole) -> Request {
    Request::new(
        Method::GET,
        format!("/v1/agent/images/{id}/{}", role.as_str()),
    )
}

/// A transfer's file, streamed: open it with a transport's `download`
/// (docs/storage.md, "Transfers").
pub fn transfer_file(id: Uuid) -> Request {
    Request::new(Method::GET, format!("/v1/agent/transfers/{id}"))
}

/// The path a host sends a transfer's file to (`Client::put_transfer`).
pub fn transfer_path(id: Uuid) -> String {
    format!("/v1/agent/transfers/{id}")
}
