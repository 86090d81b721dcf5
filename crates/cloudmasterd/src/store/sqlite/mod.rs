//! The SQLite store: one file under the data dir, WAL, `synchronous=FULL`,
//! so that a crash of the master (or the machine) loses no committed change.

mod backup_changes;
mod backup_restore;
mod backup_schedules;
mod backup_targets;
mod backups;
mod catalog;
mod codec;
mod configs;
mod deployables;
mod engine;
mod engine_moves;
mod engine_rows;
mod evacuation;
mod group_commit;
mod holders;
mod hosts;
mod idempotency;
mod image_builds;
mod instances;
mod log;
pub mod migrate;
mod orphans;
mod pool;
mod roots;
mod snapshot_changes;
mod snapshot_facts;
mod snapshots;
pub mod transfers;
mod uploads;
mod volume_changes;
mod volume_facts;
pub mod volume_moves;
mod volumes;

use super::*;
use group_commit::{GroupCommit, Writer};
use rusqlite::{Connection, OpenFlags, TransactionBehavior};
use std::path::Path;
use std::sync::Mutex;

pub struct SqliteStore {
    /// The one writer (SQLite allows one at a time anyway).
    conn: Mutex<Writer>,
    /// Writers that arrive together share one commit (group_commit.rs).
    commits: GroupCommit,
    /// Read-only connections: in WAL mode readers never wait for the writer.
    readers: Vec<Mutex<Connection>>,
    next_reader: std::sync::atomic::AtomicUsize,
    /// Batches committed (`Store::generation`): the writer's counter.
    generation: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// Prepared statements kept per connection (`prepare_cached`): more than
/// the store has distinct queries, so none is prepared twice.
const STATEMENT_CACHE: usize = 128;

/// Read connections of a store on disk.
const READERS: usize = 4;

impl SqliteStore {
    pub fn open(path: &Path) -> Result<SqliteStore> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        let mut store = Self::init(conn)?;
        for _ in 0..READERS {
            let r = Connection::open_with_flags(
                path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?;
            r.busy_timeout(std::time::Duration::from_secs(10))?;
            r.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
            store.readers.push(Mutex::new(r));
        }
        Ok(store)
    }

    /// An in-memory store for unit tests.
    #[cfg(test)]
    pub fn in_memory() -> Result<SqliteStore> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(mut conn: Connection) -> Result<SqliteStore> {
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        migrate::apply(&tx, migrate::latest())?;
        for f in cm_api::image::builtin_flavors() {
            catalog::insert_flavor_if_missing(&tx, &f)?;
        }
        tx.commit()?;
        let writer = Writer::new(conn);
        Ok(SqliteStore {
            generation: writer.commit_counter(),
            conn: Mutex::new(writer),
            commits: GroupCommit::default(),
            readers: Vec::new(),
            next_reader: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    /// Run `f` in an IMMEDIATE transaction (writers never deadlock on
    /// upgrade) shared with the writers that arrive beside it, inside its
    /// own savepoint: an error undoes `f`'s work only, and Ok means `f`'s
    /// work is committed (group_commit.rs).
    fn tx<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        self.commits.run(&self.conn, f)
    }

    /// Run a read-only `f`.
    /// Run a read-only `f` on a free reader (the writer for an in-memory store).
    fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let poisoned = |_| StoreError::Unavailable("store lock poisoned".into());
        if self.readers.is_empty() {
            let w = self
                .conn
                .lock()
                .map_err(|_| StoreError::Unavailable("store lock poisoned".into()))?;
            return f(&w);
        }
        for r in &self.readers {
            if let Ok(conn) = r.try_lock() {
                return f(&conn);
            }
        }
        let n = self
            .next_reader
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let conn = self.readers[n % self.readers.len()]
            .lock()
            .map_err(poisoned)?;
        f(&conn)
    }
}

impl Store for SqliteStore {
    fn get_setting(&self, key: &str) -> Result<Option<String>> {
        self.read(|c| log::get_setting(c, key))
    }
    fn set_setting(&self, key: &str, value: &str) -> Result<()> {
        self.tx(|t| log::set_setting(t, key, value))
    }
    fn delete_setting(&self, key: &str) -> Result<()> {
        self.tx(|t| {
            t.execute("DELETE FROM settings WHERE key = ?1", [key])?;
            Ok(())
        })
    }
    fn all_tokens(&self) -> Result<Vec<(String, TokenRow)>> {
        self.read(log::all_tokens)
    }
    fn replace_admin_token(&self, hash: &str) -> Result<()> {
        self.tx(|t| {
            t.execute("DELETE FROM tokens WHERE kind = 'admin'", [])?;
            log::insert_token(t, hash, TokenKind::Admin, None)
        })
    }
    fn token_epoch(&self) -> Result<i64> {
        self.read(|c| Ok(c.query_row("SELECT n FROM token_epoch WHERE id = 1", [], |r| r.get(0))?))
    }

    fn register_host(
        &self,
        name: &str,
        token_hash: &str,
        facts: &HostFacts,
        reserved_mib: u64,
    ) -> Result<HostId> {
        self.tx(|t| hosts::register(t, name, token_hash, facts, reserved_mib))
    }
    fn list_hosts(&self) -> Result<Vec<HostRow>> {
        self.read(hosts::list)
    }
    fn get_host(&self, name_or_id: &str) -> Result<HostRow> {
        self.read(|c| hosts::get(c, name_or_id))
    }
    fn host_liveness(&self, id: HostId) -> Result<HostLiveness> {
        self.read(|c| hosts::liveness(c, id))
    }
    fn all_host_liveness(&self) -> Result<Vec<(HostId, HostLiveness)>> {
        self.read(hosts::all_liveness)
    }
    fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }
    fn update_host(
        &self,
        name: &str,
        enabled: Option<bool>,
        reserved_mib: Option<u64>,
    ) -> Result<HostRow> {
        self.tx(|t| hosts::update(t, name, enabled, reserved_mib))
    }
    fn delete_host(
        &self,
        name: &str,
        force: bool,
        now: Millis,
    ) -> Result<(HostRow, Vec<InstanceRow>)> {
        self.tx(|t| evacuation::delete(t, name, force, now))
    }
    fn evacuate_host(
        &self,
        name: &str,
        force: bool,
        is_down: &dyn Fn(&HostRow) -> bool,
        place: &EvacuationPlacer<'_>,
        now: Millis,
    ) -> Result<(HostRow, Vec<Moved>)> {
        self.tx(|t| evacuation::evacuate(t, name, force, is_down, place, now))
    }
    fn record_orphans(
        &self,
        host_id: HostId,
        orphans: &[cm_api::agent::OrphanVm],
        now: Millis,
    ) -> Result<Vec<OrphanRow>> {
        self.tx(|t| orphans::record(t, host_id, orphans, now))
    }
    fn list_orphans(&self, host_id: HostId) -> Result<Vec<OrphanRow>> {
        self.read(|c| orphans::list(c, host_id))
    }
    fn purge_orphans(&self, host_id: HostId, ids: &[Uuid]) -> Result<Vec<OrphanRow>> {
        self.tx(|t| orphans::purge(t, host_id, ids))
    }
    fn host_deletions(&self, host_id: HostId) -> Result<Vec<Uuid>> {
        self.read(|c| orphans::deletions(c, host_id))
    }
    fn record_report(
        &self,
        host_id: HostId,
        facts: &HostFacts,
        applied_generation: u64,
        observed: &[ObservedInstance],
        now: Millis,
    ) -> Result<ReportOutcome> {
        self.tx(|t| hosts::record_report(t, host_id, facts, applied_generation, observed, now))
    }
    fn host_desired(&self, host_id: HostId) -> Result<(u64, Vec<InstanceRow>)> {
        self.read(|c| hosts::desired(c, host_id))
    }

    fn insert_image(&self, image: &Image) -> Result<()> {
        self.tx(|t| catalog::insert_image(t, image))
    }
    fn list_images(&self) -> Result<Vec<Image>> {
        self.read(catalog::list_images)
    }
    fn get_image(&self, name_or_id: &str) -> Result<Image> {
        self.read(|c| catalog::get_image(c, name_or_id))
    }
    fn delete_image(&self, name: &str) -> Result<Image> {
        self.tx(|t| catalog::delete_image(t, name))
    }
    fn insert_flavor(&self, flavor: &Flavor) -> Result<()> {
        self.tx(|t| catalog::insert_flavor(t, flavor))
    }
    fn list_flavors(&self) -> Result<Vec<Flavor>> {
        self.read(catalog::list_flavors)
    }
    fn get_flavor(&self, name: &str) -> Result<Flavor> {
        self.read(|c| catalog::get_flavor(c, name))
    }
    fn delete_flavor(&self, name: &str) -> Result<Flavor> {
        self.tx(|t| catalog::delete_flavor(t, name))
    }

    fn create_instance(
        &self,
        new: &NewInstance,
        config: Option<&NewConfig>,
        place: &Placer<'_>,
        op: &Operation,
        keyed: Option<&KeyedAnswer>,
        now: Millis,
    ) -> Result<InstanceRow> {
        self.tx(|t| {
            let row = instances::create(t, new, config, place, op, now)?;
            if let Some(k) = keyed {
                idempotency::record_in_tx(t, k, &row)?;
            }
            Ok(row)
        })
    }
    fn list_instances(&self) -> Result<Vec<InstanceRow>> {
        self.read(instances::list)
    }
    fn get_instance(&self, name_or_id: &str) -> Result<InstanceRow> {
        self.read(|c| instances::get(c, name_or_id))
    }
    fn change_instance_keyed(
        &self,
        id: InstanceId,
        change: DesiredChange,
        op: Option<&Operation>,
        keyed: Option<&KeyedAnswer>,
        now: Millis,
    ) -> Result<Changed> {
        self.tx(|t| {
            let ch = instances::change(t, id, change, op, now)?;
            if let Some(k) = keyed {
                idempotency::record_in_tx(t, k, &ch.row)?;
            }
            Ok(ch)
        })
    }
    fn instances_down(&self) -> Result<Vec<InstanceRow>> {
        self.read(instances::down)
    }

    fn list_operations(&self, limit: u32) -> Result<Vec<Operation>> {
        self.read(|c| log::list_operations(c, limit))
    }
    fn get_operation(&self, id: Uuid) -> Result<OperationRow> {
        self.read(|c| log::get_operation(c, id))
    }
    fn running_operations(&self) -> Result<Vec<OperationRow>> {
        self.read(log::running_operations)
    }
    fn finish_operation(
        &self,
        id: Uuid,
        status: OperationStatus,
        progress: &str,
        error: Option<&ErrorBody>,
        now: Millis,
    ) -> Result<()> {
        self.tx(|t| log::finish_operation(t, id, status, progress, error, now))
    }
    fn set_operation_progress(&self, id: Uuid, progress: &str, now: Millis) -> Result<()> {
        self.tx(|t| log::set_operation_progress(t, id, progress, now))
    }

    fn append_event(
        &self,
        kind: cm_api::words::EventKind,
        target: &str,
        message: &str,
        now: Millis,
    ) -> Result<cm_api::event::Event> {
        self.tx(|t| log::append_event(t, kind, target, message, now))
    }
    #[cfg(test)]
    fn events_since(
        &self,
        since: i64,
        kind: Option<&str>,
        limit: u32,
    ) -> Result<Vec<cm_api::event::Event>> {
        self.read(|c| log::events_since(c, since, kind, limit))
    }
    fn last_event_seq(&self) -> Result<i64> {
        self.read(log::last_event_seq)
    }
    fn prune_events(&self, before: Millis, keep: u64, batch: u64) -> Result<u64> {
        self.tx(|t| log::prune_events(t, before, keep, batch))
    }
    fn events_pruned_through(&self) -> Result<i64> {
        self.read(log::events_pruned_through)
    }
    fn prune_operations(&self, before: Millis, keep: u64, batch: u64) -> Result<u64> {
        self.tx(|t| log::prune_operations(t, before, keep, batch))
    }

    fn insert_config(&self, new: &NewConfig, now: Millis) -> Result<ConfigRow> {
        self.tx(|t| configs::insert(t, new, now))
    }
    fn list_configs(&self, domain: Option<&str>) -> Result<Vec<ConfigRow>> {
        self.read(|c| configs::list(c, domain))
    }
    fn get_config(&self, uuid: Uuid) -> Result<ConfigRow> {
        self.read(|c| configs::get(c, uuid))
    }
    fn config_body(&self, uuid: Uuid) -> Result<(u64, Vec<u8>, String)> {
        self.read(|c| configs::body(c, uuid))
    }
    fn config_secret(&self, uuid: Uuid) -> Result<Option<SecretHash>> {
        self.read(|c| configs::secret(c, uuid))
    }
    fn config_fetch(
        &self,
        uuid: Uuid,
        allow: &mut dyn FnMut(Option<&SecretHash>) -> bool,
    ) -> Result<Option<(u64, Vec<u8>, String)>> {
        self.read(|c| configs::fetch(c, uuid, allow))
    }
    fn config_trust(&self, uuid: Uuid) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        self.read(|c| configs::trust(c, uuid))
    }
    fn set_config_trust(&self, uuid: Uuid, salt: &[u8], hash: &[u8]) -> Result<bool> {
        self.tx(|t| configs::set_trust(t, uuid, salt, hash))
    }
    fn set_config_body(&self, uuid: Uuid, body: &[u8], now: Millis) -> Result<ConfigRow> {
        self.tx(|t| configs::set_body(t, uuid, body, now))
    }
    fn update_cache(&self, uuid: Uuid, upd: &CacheUpdate, now: Millis) -> Result<ConfigRow> {
        self.tx(|t| configs::update_cache(t, uuid, upd, now))
    }
    fn mark_fetched(&self, uuid: Uuid, now: Millis) -> Result<()> {
        self.tx(|t| configs::mark_fetched(t, uuid, now))
    }
    fn remove_config(&self, uuid: Uuid) -> Result<ConfigRow> {
        self.tx(|t| configs::remove(t, uuid))
    }
    fn remove_stale(&self, before: Millis) -> Result<Vec<ConfigRow>> {
        self.tx(|t| configs::remove_stale(t, before))
    }
    fn assign_dynamic(
        &self,
        domain: &str,
        holder: Option<InstanceId>,
        now: Millis,
        fresh: &SecretMaker<'_>,
    ) -> Result<Option<ConfigRow>> {
        self.tx(|t| holders::assign_dynamic(t, domain, holder, now, fresh))
    }
    fn config_owner(&self, uuid: Uuid) -> Result<Option<RecordOwner>> {
        self.read(|c| holders::owner(c, uuid))
    }
    fn replace_config_trust(&self, uuid: Uuid, salt: &[u8], hash: &[u8]) -> Result<()> {
        self.tx(|t| holders::replace_trust(t, uuid, salt, hash))
    }
    fn nocloud_use(
        &self,
        uuid: Uuid,
        boot: &str,
        now: Millis,
        window: Millis,
        spend: bool,
    ) -> Result<bool> {
        self.tx(|t| holders::nocloud_use(t, uuid, boot, now, window, spend))
    }
    fn config_heartbeat(
        &self,
        uuid: Uuid,
        hb: &cm_api::boot::Heartbeat,
        now: Millis,
    ) -> Result<()> {
        self.tx(|t| configs::heartbeat(t, uuid, hb, now))
    }
    fn insert_domain(&self, name: &str, secret: &SecretHash, now: Millis) -> Result<()> {
        self.tx(|t| configs::insert_domain(t, name, secret, now))
    }
    fn list_domains(&self) -> Result<Vec<cm_api::boot::Domain>> {
        self.read(configs::list_domains)
    }
    fn domain_secret(&self, name: &str) -> Result<Option<SecretHash>> {
        self.read(|c| configs::domain_secret(c, name))
    }
    fn delete_domain(&self, name: &str) -> Result<()> {
        self.tx(|t| configs::delete_domain(t, name))
    }
    fn record_guest_beats(
        &self,
        host_id: HostId,
        beats: &[(InstanceId, u64, Millis, Vec<cm_api::boot::ServiceState>)],
    ) -> Result<Vec<cm_api::ids::DeployableId>> {
        self.tx(|t| configs::guest_beats(t, host_id, beats))
    }

    fn idempotency_get(
        &self,
        principal: &str,
        key: &str,
        now: Millis,
    ) -> Result<Option<IdempotencyRecord>> {
        self.read(|c| idempotency::get(c, principal, key, now))
    }
    fn idempotency_put(&self, rec: &IdempotencyRecord) -> Result<bool> {
        self.tx(|t| idempotency::insert(t, rec))
    }
    fn idempotency_purge(&self, now: Millis, keep: u64) -> Result<u64> {
        self.tx(|t| idempotency::purge(t, now, keep))
    }
    fn insert_upload(&self, upload: &UploadRow) -> Result<()> {
        self.tx(|t| uploads::insert(t, upload))
    }
    fn get_upload(&self, id: Uuid) -> Result<UploadRow> {
        self.read(|c| uploads::get(c, id))
    }
    fn list_uploads(&self) -> Result<Vec<UploadRow>> {
        self.read(uploads::list)
    }
    fn update_upload(&self, upload: &UploadRow) -> Result<()> {
        self.tx(|t| uploads::update(t, upload))
    }
    fn delete_upload(&self, id: Uuid) -> Result<()> {
        self.tx(|t| uploads::delete(t, id))
    }
    fn insert_image_from_uploads(&self, image: &Image, ids: &[Uuid]) -> Result<()> {
        self.tx(|t| uploads::insert_image_from(t, image, ids))
    }
}

#[cfg(test)]
mod configs_tests;
#[cfg(test)]
mod deployables_tests;
#[cfg(test)]
mod group_commit_tests;
#[cfg(test)]
mod liveness_tests;
#[cfg(test)]
pub(crate) mod tests;
#[cfg(test)]
mod tests_hosts;
#[cfg(test)]
mod upgrade_tests;
