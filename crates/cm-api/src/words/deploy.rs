//! Words of deployables (issue 11): the states of a deployable and of its
//! slots, a guest's liveness as its host judges it, and the engine's actions.

use serde::{Deserialize, Serialize};
use std::fmt;

words! {
    /// A deployable's state as a whole.
    pub enum DeployableState {
        /// Instances are being created or replaced toward the spec.
        Converging = "converging",
        /// Every slot is healthy at the spec in force.
        Healthy = "healthy",
        /// Some slot is not healthy (or failed); the rest serve.
        Degraded = "degraded",
        /// A changed spec is being rolled out one slot at a time.
        Rolling = "rolling",
        /// A rollout stopped at a slot whose health checks failed.
        RolloutFailed = "rollout_failed",
        /// Destructive actions are held: half or more went silent together.
        Frozen = "frozen",
        /// Every slot of an assembly failed.
        Failed = "failed",
        /// `cm deploy delete`: its instances are being removed.
        Deleting = "deleting",
    }
}

words! {
    /// The state of one slot (`web-2`: the third instance of assembly `web`).
    pub enum SlotState {
        /// Its instance is being placed and created.
        Creating = "creating",
        /// Running, waiting for its first heartbeat and healthy services.
        Booting = "booting",
        /// Running, heartbeats on time, every service running.
        Healthy = "healthy",
        /// Running, but a service fails its check or exited.
        Degraded = "degraded",
        /// A heartbeat is late (one interval missed).
        Suspect = "suspect",
        /// The VM stopped, crashed or errored on a live host, or its guest
        /// is silent past the timeout.
        Down = "down",
        /// Its host stopped reporting; the VM may still run.
        Unreachable = "unreachable",
        /// The engine acts on it (restart, replace, move); one at a time.
        Acting = "acting",
        /// Every rung was tried and the budgets are spent.
        Failed = "failed",
        /// Being removed (scale down, or its deployable deleted).
        Retiring = "retiring",
    }
}

words! {
    /// A guest's liveness from its heartbeats, as its host judges it.
    pub enum GuestLiveness {
        /// Beats arrive on time.
        Up = "up",
        /// One interval passed without a beat.
        Suspect = "suspect",
        /// No beat for the timeout (or, before the first beat, the boot grace).
        Silent = "silent",
    }
}

words! {
    /// What the engine did (an event's `action`).
    pub enum EngineAction {
        /// Bumped a service's restart generation in the guest's config.
        RestartService = "restart-service",
        /// Restarted the assembly's VM in place (same host and disk).
        RestartAssembly = "restart-assembly",
        /// Placed a new instance for the slot and retired the old one.
        Replace = "replace",
        /// Moved the slot's services to another assembly's instance.
        Move = "move",
        /// Gave up on the slot: budgets spent.
        Fail = "fail",
        /// Held destructive actions (a likely partition).
        Freeze = "freeze",
        /// Let them go again.
        Thaw = "thaw",
        /// Waits (a stateful slot on an unreachable host, a back-off).
        Wait = "waiting",
        /// Created an instance for a new slot.
        Create = "create",
        /// Deleted an instance (scale down, a duplicate, a retired one).
        Delete = "delete",
        /// Set a new config body for the slot (rollout or a changed address).
        Reconfigure = "reconfigure",
        /// Pool: added a member / drained it / removed it.
        PoolAdd = "pool-add",
        PoolDrain = "pool-drain",
        PoolRemove = "pool-remove",
        /// The CPE restarted a dead DPE.
        RestartEngine = "restart-engine",
        /// A rollout step, its stop, or a rollback.
        Rollout = "rollout",
        Rollback = "rollback",
        /// `cm deploy repair`: a failed slot's counters cleared.
        Repair = "repair",
    }
}
