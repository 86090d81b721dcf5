//! Balancer members a deployable's engine put in (`pool_members`): the
//! intent, written before the balancer is asked, so a restarted master
//! knows what it added, finishes a half-done drain and never adds a
//! server twice (engine/pool_sync.rs).

use super::{InstanceId, Millis, Result};
use cm_api::ids::DeployableId;

/// What the engine wants of a server it put in a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberIntent {
    /// In the pool, taking requests.
    Ready,
    /// Taking no new requests since `updated_at`, until it has none left
    /// or the drain deadline passes.
    Drain,
}

impl MemberIntent {
    pub fn as_str(self) -> &'static str {
        match self {
            MemberIntent::Ready => "ready",
            MemberIntent::Drain => "drain",
        }
    }

    pub fn parse(s: &str) -> Option<MemberIntent> {
        match s {
            "ready" => Some(MemberIntent::Ready),
            "drain" => Some(MemberIntent::Drain),
            _ => None,
        }
    }
}

/// One row of `pool_members`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolMemberRow {
    pub deployable_id: DeployableId,
    pub balancer: String,
    pub backend: String,
    pub server: String,
    pub instance_id: InstanceId,
    /// `ip:port` it was added at.
    pub addr: String,
    pub state: MemberIntent,
    /// When `state` was last set (a drain's start).
    pub updated_at: Millis,
}

pub trait PoolStore {
    /// The members a deployable put in, ordered by balancer, backend, server.
    fn pool_members(&self, deployable: DeployableId) -> Result<Vec<PoolMemberRow>>;
    /// Insert or update a member of `row.deployable_id`; a server of the
    /// same name another deployable owns is a `Conflict` (nothing written).
    fn put_pool_member(&self, row: &PoolMemberRow) -> Result<()>;
    /// Forget a member (it is out of its backend); true when it was there.
    fn delete_pool_member(
        &self,
        deployable: DeployableId,
        balancer: &str,
        backend: &str,
        server: &str,
    ) -> Result<bool>;
}
