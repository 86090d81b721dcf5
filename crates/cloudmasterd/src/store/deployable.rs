//! Deployables as stored (issue 11): the spec of every generation, the
//! slots the engine keeps, and the rows' own words. Written by the API
//! (`DeployableStore`: specs, generations, deletion) and by the policy
//! engine (`EngineStore`: slots and the instances they own).

use super::{InstanceId, Millis, Result};
use cm_api::deploy::{DeployableSpec, SpecFormat};
use cm_api::event::{Event, EventDetail};
use cm_api::ids::DeployableId;
use cm_api::words::{DeployableState, EngineAction, EventKind, SlotState};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq)]
pub struct DeployableRow {
    pub id: DeployableId,
    pub name: String,
    pub uuid: Option<uuid::Uuid>,
    /// The spec generation in force.
    pub generation: u64,
    pub state: DeployableState,
    pub state_reason: Option<String>,
    pub rollout_from: Option<u64>,
    pub frozen_since: Option<Millis>,
    /// `cm deploy delete` asked; the engine removes its instances.
    pub deleted: bool,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// One generation's spec: normalised, and as the user sent it.
#[derive(Debug, Clone, PartialEq)]
pub struct SpecRow {
    pub generation: u64,
    pub spec: DeployableSpec,
    pub format: SpecFormat,
    pub source: String,
    pub created_at: Millis,
}

/// What an apply did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// A new deployable at generation 1.
    Created,
    /// A new generation.
    Changed,
    /// The spec equals the one in force: nothing written.
    Unchanged,
}

/// One instance place of an assembly, as the engine keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct SlotRow {
    pub deployable_id: DeployableId,
    pub assembly: String,
    pub idx: u32,
    /// The one current instance (None before the first create).
    pub instance_id: Option<InstanceId>,
    /// +1 at each new instance: the compare-and-swap anchor.
    pub incarnation: u64,
    /// The spec generation its instance was made (or reconfigured) for.
    pub spec_generation: u64,
    pub config_version: u64,
    pub state: SlotState,
    pub state_since: Millis,
    pub reason: Option<String>,
    /// The destructive action in progress (at most one).
    pub action: Option<EngineAction>,
    pub action_started_at: Option<Millis>,
    pub action_deadline: Option<Millis>,
    /// Nothing destructive before this (back-off).
    pub next_action_at: Option<Millis>,
    pub backoff_step: u32,
    /// Failure times per budget key (`svc:httpd`, `assembly`, `replace`).
    pub windows: BTreeMap<String, Vec<Millis>>,
    /// Services moved here from a failed slot (None: the spec's own).
    pub services: Option<Vec<String>>,
    /// The `restart_gen` of each service in the rendered config: raised by
    /// the engine to restart that service in the guest (rung 1).
    pub restart_gens: BTreeMap<String, u64>,
    /// Old instances of this slot on their way out.
    pub retiring: Vec<InstanceId>,
    pub updated_at: Millis,
}

impl SlotRow {
    /// `web-2`.
    pub fn name(&self) -> String {
        format!("{}-{}", self.assembly, self.idx)
    }
}

/// Which events to read (`GET /v1/events?type=&deployable=`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    pub kind: Option<String>,
    pub deployable: Option<String>,
}

/// Specs and generations: what `cm deploy apply|delete|rollback` write.
pub trait DeployableStore {
    /// Insert the deployable (generation 1) or, when the spec differs from
    /// the one in force, a new generation, with its `deployable.applied`
    /// event, in one transaction. Unchanged specs write nothing.
    fn apply_deployable(
        &self,
        spec: &DeployableSpec,
        format: SpecFormat,
        source: &str,
        event: &EventDetail,
        now: Millis,
    ) -> Result<(DeployableRow, Applied, Option<Event>)>;
    /// Live deployables (not deleted), by name.
    fn list_deployables(&self) -> Result<Vec<DeployableRow>>;
    /// By name or id, deleted ones included (their engine is tearing down).
    fn get_deployable(&self, name_or_id: &str) -> Result<DeployableRow>;
    fn deployable_spec(&self, id: DeployableId, generation: u64) -> Result<SpecRow>;
    /// Every generation, oldest first.
    #[cfg(test)]
    fn deployable_history(&self, id: DeployableId) -> Result<Vec<SpecRow>>;
    fn list_slots(&self, id: DeployableId) -> Result<Vec<SlotRow>>;
    /// Mark it deleted (state `deleting`), with its `deployable.deleted`
    /// event (None when it was already deleted); its engine removes its
    /// instances and then its rows (`EngineStore`).
    fn delete_deployable(&self, name: &str, now: Millis) -> Result<(DeployableRow, Option<Event>)>;
    /// An event with its structured part.
    fn append_event_detail(
        &self,
        kind: EventKind,
        target: &str,
        message: &str,
        detail: &EventDetail,
        now: Millis,
    ) -> Result<Event>;
    /// `events_since` with the deployable filter.
    fn events_filtered(&self, since: i64, filter: &EventFilter, limit: u32) -> Result<Vec<Event>>;
}
