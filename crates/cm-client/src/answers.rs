//! The answers of routes whose body `cm-api` has no type for yet (the master
//! writes them as small JSON objects). Fields in alphabetical order: the order
//! `cm --json` has always printed them in.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use uuid::Uuid;

/// `GET /v1/info`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Info {
    pub cloud_id: Uuid,
    pub host_down_after_secs: u64,
    pub report_interval_secs: u64,
    pub version: String,
}

/// `GET`/`POST /v1/hosts/join-token` and `POST /v1/tokens/admin/rotate`:
/// the token and the master's file that holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenFile {
    pub file: PathBuf,
    pub token: String,
}

/// `DELETE` of an image, a flavor or a config domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deleted {
    pub deleted: bool,
    pub name: String,
}

/// `DELETE /v1/uploads/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadDeleted {
    pub deleted: bool,
    pub id: Uuid,
}

/// `DELETE /v1/configs/{uuid}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigRemoved {
    pub removed: bool,
    pub uuid: Uuid,
}

/// `POST /v1/agent/replies/{id}`: whether a caller still waited for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivered {
    pub delivered: bool,
}

/// An empty object (`{}`): the call was taken.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Taken {}
