//! Deployables as the REST API shows them, and the requests that change them.

use super::{DeployableSpec, SpecFormat};
use crate::words::{DeployableState, EngineAction, SlotState};
use crate::Timestamp;
use serde::{Deserialize, Serialize};

/// `PUT /v1/deployables/{name}` and `POST /v1/deployables/{name}/diff`:
/// the spec as the user wrote it. The master parses it, so what is stored
/// (and shown by `cm deploy show --source`) is exactly what was sent.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplyRequest {
    pub format: SpecFormat,
    pub source: String,
}

/// `POST /v1/deployables/{name}/rollback`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    /// The generation whose spec to apply again (default: the one the
    /// last rollout started from).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_generation: Option<u64>,
}

/// `POST /v1/deployables/{name}/repair`: let the ladder run again on a
/// failed slot (pacemaker's `crm_resource --cleanup`): its counters and
/// back-off are cleared and it goes back to `down`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepairRequest {
    /// The slot (`web-1`); default: every failed slot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<String>,
}

/// The slots a repair cleared (none: no slot asked for was failed).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RepairAnswer {
    pub repaired: Vec<String>,
}

/// The answer to an apply, a diff or a rollback.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApplyAnswer {
    /// The deployable after the apply or rollback; for a diff, as it is
    /// (None: not deployed yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployable: Option<Deployable>,
    /// False when the spec equals the one in force (nothing to do).
    pub changed: bool,
    /// What the engine does (diff) or will do (apply) to converge.
    pub changes: Vec<Change>,
}

/// One step between the spec in force and a new one.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub assembly: String,
    pub kind: ChangeKind,
    /// The slot indexes it touches.
    pub slots: Vec<u32>,
    /// What differs (`image web-v1 → web-v2`, `count 3 → 5`).
    pub why: String,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    /// New slots (scale up, a new assembly).
    Add,
    /// Slots removed, highest index first (scale down, assembly gone).
    Remove,
    /// A new instance per slot, one at a time (image, size, ports).
    Replace,
    /// A new config body per slot, in place (services, env, checks).
    Reconfigure,
    /// Policy only: nothing restarts.
    Policy,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Add => "add",
            ChangeKind::Remove => "remove",
            ChangeKind::Replace => "replace",
            ChangeKind::Reconfigure => "reconfigure",
            ChangeKind::Policy => "policy",
        }
    }
}

/// A deployable: its spec in force and the state of every slot.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deployable {
    pub id: uuid::Uuid,
    pub name: String,
    /// The spec generation in force (1 at the first apply).
    pub generation: u64,
    pub state: DeployableState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The generation the rollout in progress (or stopped) started from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout_from: Option<u64>,
    pub slots: Vec<Slot>,
    /// The spec in force (`GET /v1/deployables/{name}` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<DeployableSpec>,
    #[serde(with = "crate::ts")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub created_at: Timestamp,
    #[serde(with = "crate::ts")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub updated_at: Timestamp,
}

/// One instance place of an assembly: `web-2`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Slot {
    /// `{assembly}-{index}`.
    pub name: String,
    pub assembly: String,
    pub index: u32,
    pub state: SlotState,
    #[serde(with = "crate::ts")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub since: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The instance now serving the slot, and its host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// How many instances the slot has had (1 for its first).
    pub incarnation: u64,
    /// The spec generation its instance runs.
    pub generation: u64,
    /// The destructive action in progress, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<EngineAction>,
}

/// One generation's spec as it was sent: `GET /v1/deployables/{name}/spec`
/// (`cm deploy show --source`).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpecSource {
    pub generation: u64,
    pub format: SpecFormat,
    pub source: String,
    #[serde(with = "crate::ts")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub created_at: Timestamp,
}

/// `?generation=` of `GET /v1/deployables/{name}/spec`.
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpecQuery {
    /// The generation (default: the one in force).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
}

/// The list: `GET /v1/deployables` (without specs).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeployableList {
    pub deployables: Vec<Deployable>,
}
