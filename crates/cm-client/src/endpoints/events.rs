//! `/v1/operations*` and `/v1/events` (a page, a long-poll, or a stream).

use crate::request::{get, seg, Endpoint, Request};
use cm_api::event::Event;
use cm_api::operation::Operation;
use reqwest::Method;
use std::time::Duration;

pub fn operations() -> Endpoint<Vec<Operation>> {
    get("/v1/operations".to_string())
}

pub fn operation(id: &str) -> Endpoint<Operation> {
    get(format!("/v1/operations/{}", seg(id)))
}

/// Long-poll an operation until it ends or `secs` pass (the master caps
/// the wait at 60 s); the call's timeout leaves room for the wait.
pub fn wait_operation(id: &str, secs: u64) -> Endpoint<Operation> {
    let mut e = get(format!("/v1/operations/{}?wait={secs}", seg(id)));
    e.request.timeout = Some(Duration::from_secs(secs + 30));
    e
}

/// Which events to read: after `since`, of one kind and/or one
/// deployable, at most `limit`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventQuery {
    pub since: i64,
    pub kind: Option<String>,
    pub limit: Option<u32>,
    pub deployable: Option<String>,
}

impl EventQuery {
    fn path(&self) -> String {
        let mut path = format!("/v1/events?since={}", self.since);
        if let Some(k) = &self.kind {
            path.push_str(&format!("&type={}", seg(k)));
        }
        if let Some(l) = self.limit {
            path.push_str(&format!("&limit={l}"));
        }
        if let Some(d) = &self.deployable {
            path.push_str(&format!("&deployable={}", seg(d)));
        }
        path
    }
}

/// A page of events (JSON).
pub fn events(q: &EventQuery) -> Endpoint<Vec<Event>> {
    get(q.path())
}

/// The same query as a stream of server-sent events (`Accept:
/// text/event-stream`): open it with a transport's `stream`.
pub fn event_stream(q: &EventQuery) -> Request {
    Request::new(Method::GET, q.path())
}
