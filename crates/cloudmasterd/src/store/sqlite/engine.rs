//! The policy engine's snapshot and compare-and-swap transactions
//! (store::EngineStore).

use super::SqliteStore;
use crate::store::EngineStore;

impl EngineStore for SqliteStore {}
