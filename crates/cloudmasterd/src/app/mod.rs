//! The app layer: the master's rules (validation, store transactions,
//! events, operations), one module per area. The HTTP layer (`api`) only
//! translates requests into calls here and the answers back; the reconciler,
//! the scheduler and the other background tasks call here too, never `api`
//! (docs/architecture.md).

pub mod agent;
pub mod backup_events;
pub mod backup_restore;
pub mod backups;
pub mod boot;
pub mod catalog;
pub mod configs;
pub mod deployables;
pub mod error;
pub mod events;
pub mod guest_trust;
pub mod hosts;
pub mod image_builds;
pub mod instance_list;
pub mod instances;
pub mod limits;
pub mod owned;
pub mod repair;
pub mod roots;
pub mod snapshot_events;
pub mod snapshots;
pub mod transfers;
pub mod uploads;
pub mod volume_events;
pub mod volume_moves;
pub mod volumes;

pub use error::{Error, Result};

#[cfg(test)]
mod layering;
