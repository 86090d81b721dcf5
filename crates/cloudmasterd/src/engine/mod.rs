//! The policy engine of deployables (seed 001, issue 11): the CPE starts
//! one DPE per deployable and restarts a DPE that dies; a DPE gathers its
//! deployable's config and state from the store, decides (the escalation
//! ladder), and acts through the app layer.
//!
//! [`Handle`] is how the rest of the master wakes them: after a host's
//! report changes an owned instance, after an apply, a delete, an
//! evacuation, or a host going up or down.

mod act;
mod act_rollout;
pub mod cpe;
pub mod dpe;
pub mod freeze;
mod housekeep;
pub mod ladder;
pub mod moves;
pub mod observe;
pub mod pool;
pub mod pool_haproxy;
mod pool_hold;
mod pool_sync;
pub mod render;
pub mod rollout;
#[cfg(test)]
mod tests;

use cm_api::ids::DeployableId;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// Wakes DPEs and the CPE. Cheap to clone.
#[derive(Clone, Default)]
pub struct Handle {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    /// One per deployable, made on first use by either side.
    dpes: Mutex<HashMap<DeployableId, Arc<Notify>>>,
    /// Wakes the CPE: a deployable was created or deleted.
    cpe: Notify,
    /// Deployables whose DPE must panic at its next pass (debug routes).
    poisoned: Mutex<HashSet<DeployableId>>,
    /// The balancers pools name (engine/pool_haproxy.rs).
    balancers: pool_haproxy::Balancers,
}

impl Handle {
    /// The notify a DPE waits on.
    pub fn notify_of(&self, id: DeployableId) -> Arc<Notify> {
        match self.inner.dpes.lock() {
            Ok(mut m) => m.entry(id).or_default().clone(),
            Err(_) => Arc::new(Notify::new()),
        }
    }

    /// Wake one deployable's DPE (its state may have changed).
    pub fn wake(&self, id: DeployableId) {
        self.notify_of(id).notify_one();
    }

    /// Wake every DPE (a host went up or down).
    pub fn wake_all(&self) {
        if let Ok(m) = self.inner.dpes.lock() {
            for n in m.values() {
                n.notify_one();
            }
        }
    }

    /// Tell the CPE the set of deployables changed.
    pub fn deployables_changed(&self) {
        self.inner.cpe.notify_one();
    }

    /// What the CPE waits on.
    pub fn cpe_notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.inner.cpe.notified()
    }

    /// Forget a deployable's notify once its DPE is gone for good.
    pub fn forget(&self, id: DeployableId) {
        if let Ok(mut m) = self.inner.dpes.lock() {
            m.remove(&id);
        }
    }

    /// The balancers pools name, shared by every DPE.
    pub fn balancers(&self) -> &pool_haproxy::Balancers {
        &self.inner.balancers
    }

    /// Debug routes only: make this DPE panic at its next pass.
    pub fn poison(&self, id: DeployableId) {
        if let Ok(mut p) = self.inner.poisoned.lock() {
            p.insert(id);
        }
        self.wake(id);
    }

    /// True once after `poison(id)`.
    pub fn take_poison(&self, id: DeployableId) -> bool {
        self.inner
            .poisoned
            .lock()
            .map(|mut p| p.remove(&id))
            .unwrap_or(false)
    }
}
