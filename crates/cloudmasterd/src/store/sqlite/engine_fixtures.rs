//! Test fixtures of the engine's rows: what the deployables API and a
//! host's watchdog would write.

use super::super::codec::{to_json, u};
use super::super::SqliteStore;
use crate::store::InstanceId;
use cm_api::deploy::DeployableSpec;
use cm_api::ids::DeployableId;
use rusqlite::params;

#[cfg(test)]
impl SqliteStore {
    /// A deployable row and its spec at generation 1, written as the API
    /// would (for the engine's tests, without the deployables API).
    pub fn insert_test_deployable(&self, spec: serde_json::Value) -> DeployableId {
        let spec: DeployableSpec = serde_json::from_value(spec).expect("a spec");
        let id = DeployableId::new_v4();
        self.tx(|t| {
            t.execute(
                "INSERT INTO deployables (id, name, generation, state, created_at, updated_at)
                 VALUES (?1, ?2, 1, 'converging', 0, 0)",
                params![id, spec.name],
            )?;
            t.execute(
                "INSERT INTO deployable_specs (deployable_id, generation, spec, format, source, created_at)
                 VALUES (?1, 1, ?2, 'json', '{}', 0)",
                params![id, to_json(&spec)?],
            )?;
            Ok(())
        })
        .expect("insert a test deployable");
        id
    }

    /// A new generation of a test deployable's spec, in force at once.
    pub fn insert_test_generation(&self, id: DeployableId, spec: serde_json::Value) -> u64 {
        let spec: DeployableSpec = serde_json::from_value(spec).expect("a spec");
        self.tx(|t| {
            let generation: i64 =
                t.query_row("SELECT generation + 1 FROM deployables WHERE id = ?1", [id], |r| r.get(0))?;
            t.execute(
                "INSERT INTO deployable_specs (deployable_id, generation, spec, format, source, created_at)
                 VALUES (?1, ?2, ?3, 'json', '{}', 0)",
                params![id, generation, to_json(&spec)?],
            )?;
            t.execute(
                "UPDATE deployables SET generation = ?2, rollout_from = ?2 - 1 WHERE id = ?1",
                params![id, generation],
            )?;
            Ok(u(generation))
        })
        .expect("insert a test generation")
    }

    /// Set a guest's liveness as its host's watchdog would report it.
    pub fn set_test_liveness(&self, instance: InstanceId, word: &str) {
        self.tx(|t| {
            t.execute(
                "UPDATE instances SET guest_liveness = ?2 WHERE id = ?1",
                params![instance, word],
            )?;
            Ok(())
        })
        .expect("set a test liveness");
    }
}
