//! What the policy engine (crate::engine) reads and writes: a deployable's
//! snapshot in one read, and each destructive action as one transaction
//! guarded by the slot's incarnation (compare and swap), so a DPE that
//! restarts, or a master that restarts, repeats no action.

use super::{
    DeployableRow, HostRow, InstanceId, InstanceRow, Millis, NewConfig, NewInstance, Placer,
    Result, SlotRow, SpecRow,
};
use cm_api::event::{Event, EventDetail};
use cm_api::ids::DeployableId;
use cm_api::operation::Operation;
use cm_api::words::{DeployableState, EventKind};
use std::collections::BTreeMap;

/// A deployable as its DPE sees it, read in one read transaction.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub deployable: DeployableRow,
    /// The spec of `deployable.generation`.
    pub spec: SpecRow,
    /// Ordered by assembly, then index.
    pub slots: Vec<SlotRow>,
    /// The specs of older generations some slot still runs (rollouts).
    pub old_specs: BTreeMap<u64, cm_api::deploy::DeployableSpec>,
    /// Every instance the deployable owns (deleted ones its host has not
    /// removed yet included).
    pub instances: Vec<InstanceRow>,
    /// Every host (liveness for the unreachable and freeze rules, and
    /// `forward_addr` for rendering references).
    pub hosts: Vec<HostRow>,
    /// The parameter maps of the owned instances' config records.
    pub params: BTreeMap<InstanceId, BTreeMap<String, String>>,
    /// The sha256 of their config bodies (to render again only on change).
    pub config_sha: BTreeMap<InstanceId, String>,
    /// When the snapshot was read.
    pub now: Millis,
}

impl Snapshot {
    pub fn instance(&self, id: InstanceId) -> Option<&InstanceRow> {
        self.instances.iter().find(|i| i.id == id)
    }
    pub fn host(&self, id: super::HostId) -> Option<&HostRow> {
        self.hosts.iter().find(|h| h.id == id)
    }
}

/// The address of one slot.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SlotKey {
    pub deployable: DeployableId,
    pub assembly: String,
    pub idx: u32,
}

impl SlotKey {
    pub fn of(s: &SlotRow) -> SlotKey {
        SlotKey {
            deployable: s.deployable_id,
            assembly: s.assembly.clone(),
            idx: s.idx,
        }
    }
}

/// What a compare-and-swap transaction did.
#[derive(Debug, Clone)]
pub enum Cas<T> {
    /// Done and committed, with the events it appended.
    Done(T, Vec<Event>),
    /// The slot's incarnation (or the instance's boot) was not the one
    /// expected: someone acted already. Nothing was written.
    Stale,
}

#[cfg(test)]
impl<T> Cas<T> {
    pub fn is_stale(&self) -> bool {
        matches!(self, Cas::Stale)
    }
}

/// An event to append in an action's own transaction.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub kind: EventKind,
    pub target: String,
    pub message: String,
    pub detail: EventDetail,
}

/// A new instance for a slot: the row, its config record, its placement
/// and its create operation.
pub struct SlotCreate<'a> {
    pub new: &'a NewInstance,
    pub config: Option<&'a NewConfig>,
    pub place: &'a Placer<'a>,
    pub op: &'a Operation,
}

/// One slot's side of a move of services (engine/moves.rs): the row as
/// the DPE read it (its incarnation and service list are the CAS), the row
/// to write, and the services its instance's health policy expects now.
#[derive(Debug, Clone)]
pub struct SlotServices {
    pub before: SlotRow,
    pub after: SlotRow,
    pub expected: Vec<String>,
}

/// What happens to the instance a replacement takes the place of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OldFate {
    /// Marked deleted in the same transaction (its host removes it, at
    /// once or when it comes back).
    Delete,
    /// Kept running in `retiring` until drained (rolling updates).
    #[allow(dead_code)] // For rolling updates (engine/rollout.rs).
    Retire,
}

/// A new instance and the row of the one it replaced.
#[derive(Debug, Clone)]
pub struct Replaced {
    pub new: InstanceRow,
    pub old: Option<InstanceRow>,
}

/// The engine's transactions on slots and the instances they own. Every
/// slot write names the incarnation it read (`expect`) and is `Stale`
/// when the slot has moved on.
pub trait EngineStore {
    /// Every deployable's id and whether it is deleted (the CPE's list).
    fn engine_deployables(&self) -> Result<Vec<(DeployableId, bool)>>;
    /// A deployable's id by its name (None: no such deployable).
    fn deployable_id(&self, name: &str) -> Result<Option<DeployableId>>;
    /// A deployable's name (None: no such deployable).
    fn deployable_name(&self, id: DeployableId) -> Result<Option<String>>;
    /// The deployable, its spec in force, slots, owned instances, hosts
    /// and parameters, in one read.
    fn deploy_snapshot(&self, id: DeployableId, now: Millis) -> Result<Snapshot>;
    /// Make the slots the spec in force asks for that do not exist yet
    /// (state `creating`), and mark `retiring` those it no longer has.
    /// Returns the slots after the change (none written when none changed).
    fn ensure_slots(&self, id: DeployableId, now: Millis) -> Result<Vec<SlotRow>>;
    /// Create the slot's instance (its first, or one in place of a gone
    /// one): insert it, point the slot at it, incarnation + 1, event.
    fn create_slot_instance(
        &self,
        key: &SlotKey,
        expect: u64,
        create: SlotCreate<'_>,
        slot: &SlotRow,
        event: &NewEvent,
        now: Millis,
    ) -> Result<Cas<InstanceRow>>;
    /// Restart the slot's instance in place (`DesiredChange::Restart`
    /// with `expected_boot_gen`) and write the slot's new fields.
    #[allow(clippy::too_many_arguments)]
    fn restart_slot(
        &self,
        key: &SlotKey,
        expect: u64,
        expected_boot_gen: u64,
        op: &Operation,
        slot: &SlotRow,
        event: &NewEvent,
        now: Millis,
    ) -> Result<Cas<InstanceRow>>;
    /// Change the slot's current instance's desired state (a stateful
    /// rollout stops it before its replacement is made, or starts it
    /// again when that rollout fails) and write the slot's fields.
    fn change_slot_instance(
        &self,
        key: &SlotKey,
        expect: u64,
        change: super::DesiredChange,
        slot: &SlotRow,
        event: &NewEvent,
        now: Millis,
    ) -> Result<Cas<InstanceRow>>;
    /// A new incarnation in place of the current one, whose fate is `old`.
    #[allow(clippy::too_many_arguments)]
    fn replace_slot(
        &self,
        key: &SlotKey,
        expect: u64,
        create: SlotCreate<'_>,
        old: OldFate,
        slot: &SlotRow,
        event: &NewEvent,
        now: Millis,
    ) -> Result<Cas<Replaced>>;
    /// Write a slot's state, reason, action, timers and windows (not its
    /// instance, incarnation or retiring list), with an optional event.
    fn set_slot_state(
        &self,
        key: &SlotKey,
        expect: u64,
        slot: &SlotRow,
        event: Option<&NewEvent>,
        now: Millis,
    ) -> Result<Cas<SlotRow>>;
    /// Delete an owned instance (a retired one, a duplicate, a scaled-down
    /// slot's, or at teardown) and drop it from its slot's `retiring`.
    fn delete_owned(
        &self,
        id: DeployableId,
        instance: InstanceId,
        event: &NewEvent,
        now: Millis,
    ) -> Result<Option<Event>>;
    /// Undo a rollout's replacement whose new instance did not become
    /// healthy: the retired `old` instance is the slot's again (at
    /// `generation`), the new one is deleted; incarnation + 1.
    #[allow(clippy::too_many_arguments)]
    fn revert_slot(
        &self,
        key: &SlotKey,
        expect: u64,
        old: InstanceId,
        generation: u64,
        event: &NewEvent,
        now: Millis,
    ) -> Result<Cas<()>>;
    /// Move services between slots (engine/moves.rs): each side's slot row
    /// and its instance's expected services (`HealthPolicy.services`, its
    /// host told), with the event, in one transaction. Stale when any slot's
    /// incarnation or service list is not the one read: a service is never
    /// placed twice.
    fn move_services(
        &self,
        sides: &[SlotServices],
        event: &NewEvent,
        now: Millis,
    ) -> Result<Cas<()>>;
    /// `cm deploy repair`: the failed slots of the deployable (or the one
    /// named) get their counters, back-off and reason cleared and go back
    /// to `down`, so the ladder runs again; one event per slot. The slots
    /// repaired (none: nothing was failed).
    fn repair_slots(
        &self,
        id: DeployableId,
        slot: Option<(&str, u32)>,
        event: &dyn Fn(&SlotRow) -> NewEvent,
        now: Millis,
    ) -> Result<Vec<(SlotRow, Event)>>;
    /// Remove a retiring slot whose instances are gone.
    fn remove_slot(&self, key: &SlotKey, event: &NewEvent, now: Millis) -> Result<Option<Event>>;
    /// Set the deployable's state (and `frozen_since` with `frozen`), with
    /// an event when the state changes. None: it was already so.
    fn set_deployable_state(
        &self,
        id: DeployableId,
        state: DeployableState,
        reason: Option<&str>,
        event: &NewEvent,
        now: Millis,
    ) -> Result<Option<Event>>;
    /// Remove a deleted deployable's rows once it owns no instance, with
    /// its last event. None (nothing written) while instances remain.
    fn purge_deployable(
        &self,
        id: DeployableId,
        event: &NewEvent,
        now: Millis,
    ) -> Result<Option<Event>>;
}
