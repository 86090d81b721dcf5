//! The store: the master's truth (DESIGN.md §2, principle 1).
//!
//! [`Store`] is what the rest of the master sees; [`sqlite::SqliteStore`] is
//! the implementation used today. A PostgreSQL store for large clouds will be
//! a second implementation of the same trait. Methods are synchronous and
//! each is one transaction; async callers go through [`crate::state::App::db`].

pub mod backup;
pub mod deployable;
pub mod engine;
pub mod instance;
pub mod keyed;
pub mod pool;
pub mod root;
pub mod snapshot;
pub mod sqlite;
pub mod transfer;
pub mod volume;

pub use cm_api::ids::{HostId, ImageId, InstanceId};
pub use deployable::{Applied, DeployableRow, DeployableStore, EventFilter, SlotRow, SpecRow};
pub use engine::EngineStore;
pub use instance::{
    ConfigState, Desired, GuestState, InstanceRow, InstanceSpec, Observed, Owner, RestartState,
};
pub use keyed::{IdempotencyRecord, KeyedAnswer, RenderAnswer};
pub use pool::PoolStore;
pub use volume::{VolumeRow, VolumeStore};

use crate::scheduler::Unplaced;
use cm_api::agent::{ObservedInstance, ObservedState, Power};
use cm_api::host::HostFacts;
use cm_api::image::{Flavor, Image};
use cm_api::instance::{Accel, PortForward, RestartPolicy};
use cm_api::operation::{Operation, OperationStatus};
use cm_api::words::{EventKind, OperationKind};
use cm_api::ErrorBody;
use uuid::Uuid;

pub use cm_api::time::{now_ms, to_timestamp as to_ts, Millis};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{what} '{name}' not found")]
    NotFound { what: &'static str, name: String },
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    AlreadyExists(String),
    /// The thing's state refuses the change unless the request's `field`
    /// says otherwise (an evacuation of a live host without `force`).
    #[error("{message}")]
    Refused {
        message: String,
        field: &'static str,
    },
    /// The scheduler found no host, inside the store's transaction.
    #[error("{0}")]
    Unplaced(#[from] crate::scheduler::Unplaced),
    #[error("database: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("corrupt record: {0}")]
    Corrupt(String),
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

pub type Result<T> = std::result::Result<T, StoreError>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    Admin,
    Host,
}

impl TokenKind {
    pub const ALL: [TokenKind; 2] = [TokenKind::Admin, TokenKind::Host];

    /// The word in the store's `tokens.kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenKind::Admin => "admin",
            TokenKind::Host => "host",
        }
    }

    /// `None` for a kind this version does not know (a newer master's).
    pub fn parse(s: &str) -> Option<TokenKind> {
        TokenKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRow {
    pub kind: TokenKind,
    pub host_id: Option<HostId>,
}

/// What a host's state is derived from (see `view::liveness_state`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HostLiveness {
    pub last_seen: Option<Millis>,
    pub enabled: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HostRow {
    pub id: HostId,
    pub name: String,
    pub enabled: bool,
    pub reserved_mib: u64,
    pub facts: HostFacts,
    pub last_seen: Option<Millis>,
    pub registered_at: Millis,
    pub generation: u64,
    pub applied_generation: u64,
    /// Memory of every instance placed here that its host has not removed.
    pub promised_mib: u64,
    pub instance_count: u32,
    /// Volumes on it (deleting ones excluded).
    pub volume_count: u32,
    /// What they may still grow into (size − allocated, summed).
    pub volume_unallocated_mib: u64,
}

/// What the scheduler needs to know about a host.
#[derive(Debug, Clone, PartialEq)]
pub struct HostCapacity {
    pub id: HostId,
    pub name: String,
    pub enabled: bool,
    pub last_seen: Option<Millis>,
    pub memory_total_mib: u64,
    pub reserved_mib: u64,
    pub promised_mib: u64,
    pub instance_count: u32,
    pub kvm_usable: bool,
    pub ports_in_use: Vec<u16>,
}

/// A new instance, validated, before placement.
#[derive(Debug, Clone)]
pub struct NewInstance {
    pub id: InstanceId,
    pub name: String,
    pub image_id: ImageId,
    pub flavor: Option<String>,
    pub memory_mib: u64,
    pub vcpus: u32,
    pub disk_gib: u64,
    pub ports: Vec<PortForward>,
    pub restart_policy: RestartPolicy,
    pub accel: Accel,
    pub stop_timeout_secs: u32,
    pub dynamic_domain: Option<String>,
    /// The deployable slot that owns it (the policy engine's instances).
    pub owner: Option<Owner>,
    pub health: Option<cm_api::agent::HealthPolicy>,
    /// Volumes to attach at boot, in order (all on the host it is placed on).
    pub volumes: Vec<cm_api::ids::VolumeId>,
    /// Its root disk as a volume (a persistent root); None: ephemeral.
    pub root: Option<NewRoot>,
}

/// A persistent root (docs/storage.md, "Persistent roots").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NewRoot {
    /// Make the volume `name` (`NAME-root`) from the instance's image on
    /// the host the instance is placed on.
    Make {
        id: cm_api::ids::VolumeId,
        name: String,
        size_bytes: u64,
    },
    /// Boot from this existing volume (available, with an origin image).
    Existing(cm_api::ids::VolumeId),
}

/// A change of desired state asked for by a user (or the restart policy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DesiredChange {
    /// Power on; raises `boot_gen` unless it is running already.
    Start,
    /// Power off with this timeout (0 = at once).
    Stop { timeout_secs: u32 },
    /// Reset; raises `reboot_gen`.
    Reboot,
    /// Remove it and all its files.
    Delete,
    /// Restart policy: start again if `boot_gen` is still this one; the
    /// back-off step to record for the next failure.
    Restart {
        expected_boot_gen: u64,
        backoff_step: u32,
    },
    /// Restart policy: do not start again (policy `no`, or a clean poweroff).
    GiveUp,
    /// Restart policy: a restart is due at this time.
    ScheduleRestart { at: Millis },
}

/// What a change did, so the caller can emit events and notify the host.
#[derive(Debug, Clone)]
pub struct Changed {
    pub row: InstanceRow,
    /// False when the change was a no-op (start of a running instance).
    pub effective: bool,
}

/// One instance whose observed state changed with a report.
#[derive(Debug, Clone)]
pub struct ObservedChange {
    pub before: InstanceRow,
    pub after: InstanceRow,
}

#[derive(Debug, Clone, Default)]
pub struct ReportOutcome {
    pub changed: Vec<ObservedChange>,
    /// Deleted instances the host has removed: their records are gone.
    pub purged: Vec<InstanceRow>,
}

/// Operation as stored, with the condition that completes it.
#[derive(Debug, Clone, PartialEq)]
pub struct OperationRow {
    pub op: Operation,
    pub want: u64,
}

pub fn new_operation(
    kind: OperationKind,
    target: &str,
    target_id: impl Into<Uuid>,
    progress: &str,
) -> Operation {
    let target_id = target_id.into();
    let now = to_ts(now_ms());
    Operation {
        id: Uuid::new_v4(),
        kind,
        target: target.to_string(),
        target_id,
        status: OperationStatus::Running,
        progress: progress.to_string(),
        error: None,
        created_at: now,
        updated_at: now,
    }
}

/// A VM a host keeps that is no instance of that host.
#[derive(Debug, Clone, PartialEq)]
pub struct OrphanRow {
    pub vm_id: Uuid,
    pub name: String,
    pub state: ObservedState,
    pub disk_bytes: u64,
    pub purge: bool,
    /// The host of the live instance with this id, if there is one.
    pub now_on_host: Option<String>,
    pub first_seen: Millis,
    pub last_seen: Millis,
}

/// An instance an evacuation moved, and the operation of its new boot.
#[derive(Debug, Clone)]
pub struct Moved {
    pub row: InstanceRow,
    pub op: Option<Operation>,
}

/// Placement of one instance during an evacuation (the evacuated host is
/// never a candidate).
pub type EvacuationPlacer<'a> =
    dyn Fn(&InstanceRow, &[HostCapacity]) -> std::result::Result<HostId, Unplaced> + 'a;

/// A config record as stored, without its body.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigRow {
    pub uuid: Uuid,
    pub domain: String,
    pub dynamic: bool,
    pub assigned: bool,
    pub instance_id: Option<InstanceId>,
    /// The instance holding this dynamic record (`--dynamic-domain`).
    pub bound_instance: Option<InstanceId>,
    pub body_size: u64,
    pub body_sha256: String,
    pub version: u64,
    pub secret_epoch: u64,
    pub trust_set: bool,
    pub my_conf_addr: Option<String>,
    pub status: String,
    pub reason: Option<String>,
    pub parameter_map: std::collections::BTreeMap<String, String>,
    pub config_hosts: Vec<String>,
    pub hb_seq: Option<u64>,
    pub hb_at: Option<Millis>,
    pub hb_services: Vec<cm_api::boot::ServiceState>,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// A salted secret hash, to verify a presented secret against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretHash {
    pub salt: Vec<u8>,
    pub hash: Vec<u8>,
    pub epoch: u64,
}

/// The live instance a record is tied to, and its current launch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordOwner {
    pub instance: InstanceId,
    pub boot_gen: u64,
    pub reboot_gen: u64,
}

/// Makes the stored hash of a record's secret at an epoch (the store has
/// no keys; the caller's keyring derives the secret).
pub type SecretMaker<'a> = dyn Fn(Uuid, u64) -> SecretHash + 'a;

/// A record to insert (pre_register, or an instance's config).
#[derive(Debug, Clone)]
pub struct NewConfig {
    pub uuid: Uuid,
    pub domain: String,
    pub dynamic: bool,
    pub instance_id: Option<InstanceId>,
    pub body: Vec<u8>,
    pub secret: SecretHash,
    pub parameter_map: std::collections::BTreeMap<String, String>,
    pub config_hosts: Vec<String>,
}

/// What a guest's `update_cache` changes.
#[derive(Debug, Clone)]
pub struct CacheUpdate {
    pub my_conf_addr: Option<String>,
    pub parameter_map: std::collections::BTreeMap<String, String>,
    pub status: String,
    pub reason: Option<String>,
}

/// An upload as stored (issue 9 point 3). Its bytes are a file named by
/// its id; the offset is that file's length, so it is not stored.
#[derive(Debug, Clone, PartialEq)]
pub struct UploadRow {
    pub id: Uuid,
    pub state: cm_api::upload::UploadState,
    pub size: Option<u64>,
    pub sha256: Option<String>,
    pub url: Option<String>,
    pub error: Option<ErrorBody>,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// The placement rule, called inside the store's transaction so that two
/// creates cannot both take the last free memory of a host.
pub type Placer<'a> = dyn Fn(&[HostCapacity]) -> std::result::Result<HostId, Unplaced> + 'a;

pub trait Store:
    DeployableStore
    + EngineStore
    + PoolStore
    + VolumeStore
    + snapshot::SnapshotStore
    + backup::BackupStore
    + transfer::TransferStore
    + Send
    + Sync
    + 'static
{
    // settings
    fn get_setting(&self, key: &str) -> Result<Option<String>>;
    fn set_setting(&self, key: &str, value: &str) -> Result<()>;
    fn delete_setting(&self, key: &str) -> Result<()>;

    // tokens
    fn all_tokens(&self) -> Result<Vec<(String, TokenRow)>>;
    /// Make `hash` the only admin token.
    fn replace_admin_token(&self, hash: &str) -> Result<()>;
    /// Changes whenever a token is added or removed, by any process.
    fn token_epoch(&self) -> Result<i64>;

    // hosts
    /// Register a new host with its token. A name that is taken is refused
    /// (`Conflict`): a host is its credential, not its name. Returns its id.
    fn register_host(
        &self,
        name: &str,
        token_hash: &str,
        facts: &HostFacts,
        reserved_mib: u64,
    ) -> Result<HostId>;
    fn list_hosts(&self) -> Result<Vec<HostRow>>;
    fn get_host(&self, name_or_id: &str) -> Result<HostRow>;
    /// When a host last reported and whether it is enabled: what its state
    /// is derived from, without the sums over its instances `get_host` makes.
    fn host_liveness(&self, id: HostId) -> Result<HostLiveness>;
    /// `host_liveness` of every host.
    fn all_host_liveness(&self) -> Result<Vec<(HostId, HostLiveness)>>;
    /// A number that grows with every committed write. What was read while
    /// it said `g` is still what the store holds while it says `g` (a cache
    /// of a rendered view is checked with it). In this process only: a
    /// store shared by several masters would keep it in the database.
    fn generation(&self) -> u64;
    fn update_host(
        &self,
        name: &str,
        enabled: Option<bool>,
        reserved_mib: Option<u64>,
    ) -> Result<HostRow>;
    /// Forget a host and revoke its token. Refused while instances are
    /// placed there unless `force`, which forgets them too (returned).
    fn delete_host(
        &self,
        name: &str,
        force: bool,
        now: Millis,
    ) -> Result<(HostRow, Vec<InstanceRow>)>;
    /// Move every live instance of a host to others, to be rebuilt from
    /// its image. `is_down` decides whether the host may be evacuated
    /// without `force`. All or nothing.
    fn evacuate_host(
        &self,
        name: &str,
        force: bool,
        is_down: &dyn Fn(&HostRow) -> bool,
        place: &EvacuationPlacer<'_>,
        now: Millis,
    ) -> Result<(HostRow, Vec<Moved>)>;
    /// Replace a host's orphans with those it reports; returns the new ones.
    fn record_orphans(
        &self,
        host_id: HostId,
        orphans: &[cm_api::agent::OrphanVm],
        now: Millis,
    ) -> Result<Vec<OrphanRow>>;
    fn list_orphans(&self, host_id: HostId) -> Result<Vec<OrphanRow>>;
    /// Record the decision to delete these orphans (all when `ids` is empty).
    fn purge_orphans(&self, host_id: HostId, ids: &[Uuid]) -> Result<Vec<OrphanRow>>;
    /// VMs the host must remove: deleted instances and purged orphans.
    fn host_deletions(&self, host_id: HostId) -> Result<Vec<Uuid>>;
    /// Record a host's report: facts, last seen, observed state of its VMs;
    /// purge deleted instances the host no longer has.
    fn record_report(
        &self,
        host_id: HostId,
        facts: &HostFacts,
        applied_generation: u64,
        observed: &[ObservedInstance],
        now: Millis,
    ) -> Result<ReportOutcome>;
    /// The host's generation and every instance placed on it (deleted ones excluded).
    fn host_desired(&self, host_id: HostId) -> Result<(u64, Vec<InstanceRow>)>;

    // images and flavors
    fn insert_image(&self, image: &Image) -> Result<()>;
    fn list_images(&self) -> Result<Vec<Image>>;
    fn get_image(&self, name_or_id: &str) -> Result<Image>;
    fn delete_image(&self, name: &str) -> Result<Image>;
    fn insert_flavor(&self, flavor: &Flavor) -> Result<()>;
    fn list_flavors(&self) -> Result<Vec<Flavor>>;
    fn get_flavor(&self, name: &str) -> Result<Flavor>;
    fn delete_flavor(&self, name: &str) -> Result<Flavor>;

    // instances
    /// Place and insert an instance and its create operation, atomically;
    /// with `keyed`, record the answer to its request in the same transaction.
    fn create_instance(
        &self,
        new: &NewInstance,
        config: Option<&NewConfig>,
        place: &Placer<'_>,
        op: &Operation,
        keyed: Option<&KeyedAnswer>,
        now: Millis,
    ) -> Result<InstanceRow>;
    fn list_instances(&self) -> Result<Vec<InstanceRow>>;
    fn get_instance(&self, name_or_id: &str) -> Result<InstanceRow>;
    /// Apply a desired-state change; with `op`, insert the operation in the
    /// same transaction (its `want` is set from the change).
    fn change_instance(
        &self,
        id: InstanceId,
        change: DesiredChange,
        op: Option<&Operation>,
        now: Millis,
    ) -> Result<Changed> {
        self.change_instance_keyed(id, change, op, None, now)
    }
    /// `change_instance`, recording `keyed`'s answer in the same transaction.
    fn change_instance_keyed(
        &self,
        id: InstanceId,
        change: DesiredChange,
        op: Option<&Operation>,
        keyed: Option<&KeyedAnswer>,
        now: Millis,
    ) -> Result<Changed>;
    /// Running instances whose current boot ended: the restart policy's work.
    fn instances_down(&self) -> Result<Vec<InstanceRow>>;

    // operations
    fn list_operations(&self, limit: u32) -> Result<Vec<Operation>>;
    fn get_operation(&self, id: Uuid) -> Result<OperationRow>;
    fn running_operations(&self) -> Result<Vec<OperationRow>>;
    fn finish_operation(
        &self,
        id: Uuid,
        status: OperationStatus,
        progress: &str,
        error: Option<&ErrorBody>,
        now: Millis,
    ) -> Result<()>;
    fn set_operation_progress(&self, id: Uuid, progress: &str, now: Millis) -> Result<()>;

    // events
    fn append_event(
        &self,
        kind: EventKind,
        target: &str,
        message: &str,
        now: Millis,
    ) -> Result<cm_api::event::Event>;
    /// Events after `since` of one type (the API reads through
    /// `events_filtered`; tests read this way).
    #[cfg(test)]
    fn events_since(
        &self,
        since: i64,
        kind: Option<&str>,
        limit: u32,
    ) -> Result<Vec<cm_api::event::Event>>;
    fn last_event_seq(&self) -> Result<i64>;
    /// Retention: remove events older than `before` or beyond the newest
    /// `keep`, at most `batch` of them; returns how many were removed.
    fn prune_events(&self, before: Millis, keep: u64, batch: u64) -> Result<u64>;
    /// The highest seq retention removed (0: none): `since` below it fell off.
    fn events_pruned_through(&self) -> Result<i64>;
    /// Retention: remove finished operations updated before `before` or
    /// beyond the newest `keep`, at most `batch`; running ones are kept.
    fn prune_operations(&self, before: Millis, keep: u64, batch: u64) -> Result<u64>;

    // boot-time configuration (seed 003)
    /// `pre_register`: fails with AlreadyExists when the uuid is taken.
    fn insert_config(&self, new: &NewConfig, now: Millis) -> Result<ConfigRow>;
    fn list_configs(&self, domain: Option<&str>) -> Result<Vec<ConfigRow>>;
    fn get_config(&self, uuid: Uuid) -> Result<ConfigRow>;
    /// The body, its version, and the record's status.
    fn config_body(&self, uuid: Uuid) -> Result<(u64, Vec<u8>, String)>;
    /// The secret's salted hash, or None for an unknown uuid.
    fn config_secret(&self, uuid: Uuid) -> Result<Option<SecretHash>>;
    /// A guest's fetch in one statement: `allow` sees the secret's salted
    /// hash (None for an unknown uuid); when it says yes, the body, its
    /// version and the record's status. None: unknown or refused.
    fn config_fetch(
        &self,
        uuid: Uuid,
        allow: &mut dyn FnMut(Option<&SecretHash>) -> bool,
    ) -> Result<Option<(u64, Vec<u8>, String)>>;
    fn config_trust(&self, uuid: Uuid) -> Result<Option<(Vec<u8>, Vec<u8>)>>;
    /// Set the trust key's hash if none is set yet; false when one was.
    fn set_config_trust(&self, uuid: Uuid, salt: &[u8], hash: &[u8]) -> Result<bool>;
    fn set_config_body(&self, uuid: Uuid, body: &[u8], now: Millis) -> Result<ConfigRow>;
    fn update_cache(&self, uuid: Uuid, upd: &CacheUpdate, now: Millis) -> Result<ConfigRow>;
    /// A guest fetched its config: `registered`/`assigned` becomes `fetched`.
    fn mark_fetched(&self, uuid: Uuid, now: Millis) -> Result<()>;
    fn remove_config(&self, uuid: Uuid) -> Result<ConfigRow>;
    /// Remove records not updated since `before`, except those of live instances.
    fn remove_stale(&self, before: Millis) -> Result<Vec<ConfigRow>>;
    /// Hand out a dynamic record of `domain`: the one `holder` holds
    /// already, else the oldest free one (bound to `holder`, with a new
    /// secret from `fresh`), or None.
    fn assign_dynamic(
        &self,
        domain: &str,
        holder: Option<InstanceId>,
        now: Millis,
        fresh: &SecretMaker<'_>,
    ) -> Result<Option<ConfigRow>>;
    /// The live instance a record is tied to (made for it, or holding it).
    fn config_owner(&self, uuid: Uuid) -> Result<Option<RecordOwner>>;
    /// Replace the trust key's hash (a re-key with this boot's credential).
    fn replace_config_trust(&self, uuid: Uuid, salt: &[u8], hash: &[u8]) -> Result<()>;
    /// A use of the NoCloud credential during `boot`: whether its window
    /// is open (sqlite/configs.rs `nocloud_use`).
    fn nocloud_use(
        &self,
        uuid: Uuid,
        boot: &str,
        now: Millis,
        window: Millis,
        spend: bool,
    ) -> Result<bool>;
    fn config_heartbeat(&self, uuid: Uuid, hb: &cm_api::boot::Heartbeat, now: Millis)
        -> Result<()>;
    fn insert_domain(&self, name: &str, secret: &SecretHash, now: Millis) -> Result<()>;
    fn list_domains(&self) -> Result<Vec<cm_api::boot::Domain>>;
    fn domain_secret(&self, name: &str) -> Result<Option<SecretHash>>;
    fn delete_domain(&self, name: &str) -> Result<()>;
    /// The guests' last heartbeats, as their hosts relayed them. Returns
    /// the deployables owning an instance whose services changed state.
    fn record_guest_beats(
        &self,
        host_id: HostId,
        beats: &[(InstanceId, u64, Millis, Vec<cm_api::boot::ServiceState>)],
    ) -> Result<Vec<cm_api::ids::DeployableId>>;

    // idempotency keys (crate::idempotency)
    /// The live record of a principal's key, if any.
    fn idempotency_get(
        &self,
        principal: &str,
        key: &str,
        now: Millis,
    ) -> Result<Option<IdempotencyRecord>>;
    /// Record an answer unless its key has a live record; true when written.
    fn idempotency_put(&self, rec: &IdempotencyRecord) -> Result<bool>;
    /// Drop expired records and the oldest beyond `keep`; how many went.
    fn idempotency_purge(&self, now: Millis, keep: u64) -> Result<u64>;
    // uploads (issue 9 point 3)
    fn insert_upload(&self, upload: &UploadRow) -> Result<()>;
    fn get_upload(&self, id: Uuid) -> Result<UploadRow>;
    fn list_uploads(&self) -> Result<Vec<UploadRow>>;
    /// Change an upload's state (and its size, sha256 and error with it).
    fn update_upload(&self, upload: &UploadRow) -> Result<()>;
    fn delete_upload(&self, id: Uuid) -> Result<()>;
    /// Record an image made of complete uploads and forget those uploads, in
    /// one transaction: Conflict when one of them is gone or not complete.
    fn insert_image_from_uploads(&self, image: &Image, uploads: &[Uuid]) -> Result<()>;
}
