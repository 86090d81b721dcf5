//! Deployables' specs, generations and slots (store::DeployableStore).

use super::SqliteStore;
use crate::store::*;
use cm_api::deploy::{DeployableSpec, SpecFormat};
use cm_api::event::{Event, EventDetail};
use cm_api::ids::DeployableId;
use cm_api::words::EventKind;

fn not_yet<T>() -> Result<T> {
    Err(StoreError::Unavailable("deployables: not built yet".into()))
}

impl DeployableStore for SqliteStore {
    fn apply_deployable(
        &self,
        _spec: &DeployableSpec,
        _format: SpecFormat,
        _source: &str,
        _event: &EventDetail,
        _now: Millis,
    ) -> Result<(DeployableRow, Applied, Option<Event>)> {
        not_yet()
    }
    fn list_deployables(&self) -> Result<Vec<DeployableRow>> {
        not_yet()
    }
    fn get_deployable(&self, _name_or_id: &str) -> Result<DeployableRow> {
        not_yet()
    }
    fn deployable_spec(&self, _id: DeployableId, _generation: u64) -> Result<SpecRow> {
        not_yet()
    }
    fn deployable_history(&self, _id: DeployableId) -> Result<Vec<SpecRow>> {
        not_yet()
    }
    fn list_slots(&self, _id: DeployableId) -> Result<Vec<SlotRow>> {
        not_yet()
    }
    fn delete_deployable(&self, _name: &str, _now: Millis) -> Result<DeployableRow> {
        not_yet()
    }
    fn append_event_detail(
        &self,
        kind: EventKind,
        target: &str,
        message: &str,
        detail: &EventDetail,
        now: Millis,
    ) -> Result<Event> {
        self.tx(|t| super::log::append_event_detail(t, kind, target, message, detail, now))
    }
    fn events_filtered(&self, since: i64, filter: &EventFilter, limit: u32) -> Result<Vec<Event>> {
        self.read(|c| super::log::events_filtered(c, since, filter, limit))
    }
}
