//! The master's side of the agent channel: wakes a host's long-poll when its
//! desired state changes, and carries requests to hosts (a console tail) and
//! their replies back. Hosts connect out; this is all in memory, so a master
//! restart only loses requests in flight (their callers get an error).

use crate::app;
use crate::store::HostId;
use cm_api::agent::{AgentReply, AgentRequest};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::{oneshot, watch};
use uuid::Uuid;

#[derive(Default)]
struct Channel {
    /// Bumped on every change; the long-poll waits for it to move.
    wake: Option<watch::Sender<u64>>,
    queued: Vec<AgentRequest>,
    waiting: HashMap<Uuid, oneshot::Sender<AgentReply>>,
}

#[derive(Default)]
pub struct Hub {
    hosts: Mutex<HashMap<HostId, Channel>>,
}

impl Hub {
    fn with<T>(&self, host: HostId, f: impl FnOnce(&mut Channel) -> T) -> T {
        let mut hosts = match self.hosts.lock() {
            Ok(h) => h,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(hosts.entry(host).or_default())
    }

    fn sender(ch: &mut Channel) -> &watch::Sender<u64> {
        ch.wake.get_or_insert_with(|| watch::channel(0).0)
    }

    /// Wake the host's long-poll: its desired state changed.
    pub fn notify(&self, host: HostId) {
        self.with(host, |ch| {
            Self::sender(ch).send_modify(|v| *v += 1);
        });
    }

    pub fn subscribe(&self, host: HostId) -> watch::Receiver<u64> {
        self.with(host, |ch| Self::sender(ch).subscribe())
    }

    /// Requests waiting for this host; each is handed out once.
    pub fn take_requests(&self, host: HostId) -> Vec<AgentRequest> {
        self.with(host, |ch| std::mem::take(&mut ch.queued))
    }

    pub fn has_requests(&self, host: HostId) -> bool {
        self.with(host, |ch| !ch.queued.is_empty())
    }

    /// Queue `req` for `host` and wait for its reply.
    pub async fn request(
        &self,
        host: HostId,
        req: AgentRequest,
        timeout: Duration,
    ) -> app::Result<AgentReply> {
        let id = req.id();
        let (tx, rx) = oneshot::channel();
        self.with(host, |ch| {
            ch.queued.push(req);
            ch.waiting.insert(id, tx);
            Self::sender(ch).send_modify(|v| *v += 1);
        });
        let res = tokio::time::timeout(timeout, rx).await;
        self.with(host, |ch| {
            ch.waiting.remove(&id);
            ch.queued.retain(|r| r.id() != id);
        });
        match res {
            Ok(Ok(reply)) => Ok(reply),
            _ => Err(app::Error::HostUnavailable(
                format!("the host did not answer within {}s", timeout.as_secs()).into(),
            )),
        }
    }

    /// A host's reply; false when nobody waits for it any more.
    pub fn reply(&self, host: HostId, id: Uuid, reply: AgentReply) -> bool {
        let tx = self.with(host, |ch| ch.waiting.remove(&id));
        match tx {
            Some(tx) => tx.send(reply).is_ok(),
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn a_request_reaches_the_host_and_its_reply_the_caller() {
        let hub = Arc::new(Hub::default());
        let host = HostId::new_v4();
        let mut wake = hub.subscribe(host);
        let req = AgentRequest::ConsoleTail {
            id: Uuid::new_v4(),
            instance: Uuid::new_v4(),
            max_bytes: 10,
        };
        let caller = {
            let hub = hub.clone();
            let req = req.clone();
            tokio::spawn(async move { hub.request(host, req, Duration::from_secs(5)).await })
        };
        wake.changed().await.unwrap();
        let got = hub.take_requests(host);
        assert_eq!(got, vec![req.clone()]);
        assert!(hub.reply(
            host,
            req.id(),
            AgentReply::Error {
                message: "x".into()
            }
        ));
        let reply = caller.await.unwrap().unwrap();
        assert_eq!(
            reply,
            AgentReply::Error {
                message: "x".into()
            }
        );
    }

    #[tokio::test]
    async fn an_unanswered_request_times_out_as_host_unavailable() {
        let hub = Hub::default();
        let req = AgentRequest::ConsoleTail {
            id: Uuid::new_v4(),
            instance: Uuid::new_v4(),
            max_bytes: 10,
        };
        let err = hub
            .request(HostId::new_v4(), req, Duration::from_millis(50))
            .await
            .unwrap_err();
        assert_eq!(err.code(), cm_api::ErrorCode::HostUnavailable);
    }
}
