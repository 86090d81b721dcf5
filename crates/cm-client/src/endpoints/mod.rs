//! One function per route of the master (docs/api.md): each takes `cm-api`
//! request types and gives an [`Endpoint`] whose type names the answer. Every
//! path of the API is written here and nowhere else; a path parameter a user
//! typed is escaped ([`seg`]), so a wrong name gets the master's error, not a
//! wrong URL.

pub mod agent;
pub mod backups;
pub mod boot;
pub mod catalog;
pub mod configs;
pub mod deployables;
pub mod events;
pub mod hosts;
pub mod instances;
pub mod snapshots;
pub mod uploads;
pub mod volumes;

use crate::request::{get, Endpoint};
use cm_api::answer::Info;

/// `GET /v1/info`: the cloud's id, the master's version and its timings.
pub fn info() -> Endpoint<Info> {
    get("/v1/info".to_string())
}
