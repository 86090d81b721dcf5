//! Upgrades: a store left at every earlier schema version, with rows of
//! every table that version had, opened by this master: the rows survive
//! and the schema is exactly a fresh store's.

use super::migrate::{self, MIGRATIONS};
use super::*;
use rusqlite::params;

const HOST: &str = "6f1c2a4e-0000-4000-8000-000000000001";
const IMAGE: &str = "6f1c2a4e-0000-4000-8000-000000000002";
const INSTANCE: &str = "6f1c2a4e-0000-4000-8000-000000000003";
const OPERATION: &str = "6f1c2a4e-0000-4000-8000-000000000004";
const CONFIG: &str = "6f1c2a4e-0000-4000-8000-000000000005";
const UPLOAD: &str = "6f1c2a4e-0000-4000-8000-000000000006";
const ORPHAN: &str = "6f1c2a4e-0000-4000-8000-000000000007";
const DYNAMIC: &str = "6f1c2a4e-0000-4000-8000-000000000008";
const DEPLOYABLE: &str = "6f1c2a4e-0000-4000-8000-000000000010";
const VOLUME: &str = "6f1c2a4e-0000-4000-8000-000000000011";
const T: i64 = 1_700_000_000_000;

/// Rows a store at `version` could hold, written with that version's columns.
fn seed(c: &Connection, version: i64) {
    let facts = serde_json::to_string(&super::tests::facts(8192)).unwrap();
    if version >= 1 {
        c.execute_batch(&format!(
            "INSERT INTO settings (key, value) VALUES ('join_token_sha256', 'abc');
             INSERT INTO tokens (hash, kind, host_id, created_at) VALUES ('h1', 'host', '{HOST}', {T});
             INSERT INTO images (id, name, kind, files, cmdline, created_at)
                 VALUES ('{IMAGE}', 'tiny', 'kernel',
                 '[{{\"role\":\"kernel\",\"size\":1,\"sha256\":\"00\"}}]', 'console=ttyS0', {T});
             INSERT INTO flavors (name, memory_mib, vcpus, disk_gib, builtin) VALUES ('custom', 384, 1, 2, 0);
             INSERT INTO operations (id, kind, target, target_id, status, progress, want, created_at, updated_at)
                 VALUES ('{OPERATION}', 'instance.create', 'web-1', '{INSTANCE}', 'succeeded', 'running', 1, {T}, {T});
             INSERT INTO events (time, kind, target, message) VALUES ({T}, 'instance.state', 'web-1', 'up');"
        ))
        .unwrap();
        c.execute(
            "INSERT INTO hosts (id, name, reserved_mib, facts, last_seen, registered_at, generation, applied_generation)
             VALUES (?1, 'h1', 512, ?2, ?3, ?3, 3, 3)",
            params![HOST, facts, T],
        )
        .unwrap();
        c.execute_batch(&format!(
            "INSERT INTO instances (id, name, image_id, flavor, memory_mib, vcpus, disk_gib, host_id, ports,
                 restart_policy, accel, stop_timeout_secs, desired_power, boot_gen, reboot_gen,
                 obs_state, obs_reason, obs_boot_gen, obs_reboot_gen, obs_pid, obs_accel, obs_since,
                 running_since, restart_count, backoff_step, created_at, updated_at)
             VALUES ('{INSTANCE}', 'web-1', '{IMAGE}', 'm1.tiny', 256, 1, 1, '{HOST}',
                 '[{{\"guest\":80,\"host\":8080}}]',
                 'on-failure', 'auto', 30, 'running', 2, 1,
                 'running', NULL, 2, 1, 4242, 'tcg', {T}, {T}, 1, 0, {T}, {T});"
        ))
        .unwrap();
    }
    if version >= 2 {
        c.execute_batch(&format!(
            "INSERT INTO config_domains (name, secret_salt, secret_hash, created_at)
                 VALUES ('lab', x'01', x'02', {T});
             INSERT INTO configs (uuid, domain, instance_id, body, body_sha256, secret_salt, secret_hash,
                 status, created_at, updated_at)
                 VALUES ('{CONFIG}', 'default', '{INSTANCE}', x'6869', 'sha', x'03', x'04', 'fetched', {T}, {T});
             INSERT INTO configs (uuid, domain, dynamic, body, body_sha256, secret_salt, secret_hash,
                 status, created_at, updated_at)
                 VALUES ('{DYNAMIC}', 'lab', 1, x'', 'sha', x'05', x'06', 'registered', {T}, {T});
             UPDATE instances SET guest_seq = 7, guest_seen_at = {T},
                 guest_services = '[]' WHERE id = '{INSTANCE}';"
        ))
        .unwrap();
    }
    if version >= 3 {
        c.execute(
            "INSERT INTO idempotency_keys (principal, key, method, path, body_sha256, status, response,
                 created_at, expires_at) VALUES ('admin', 'k1', 'POST', '/v1/instances', 'sha', 202, x'7b7d', ?1, ?2)",
            params![T, i64::MAX],
        )
        .unwrap();
    }
    if version >= 4 {
        c.execute(
            "INSERT INTO uploads (id, state, size, sha256, created_at, updated_at)
             VALUES (?1, 'receiving', 10, 'abc', ?2, ?2)",
            params![UPLOAD, T],
        )
        .unwrap();
    }
    if version >= 6 {
        c.execute(
            "INSERT INTO host_orphans (host_id, vm_id, name, state, disk_bytes, first_seen, last_seen)
             VALUES (?1, ?2, 'old', 'stopped', 4096, ?3, ?3)",
            params![HOST, ORPHAN, T],
        )
        .unwrap();
    }
    if version >= 7 {
        c.execute(
            "UPDATE configs SET bound_instance = ?1, assigned = 1 WHERE uuid = ?2",
            params![INSTANCE, DYNAMIC],
        )
        .unwrap();
    }
    if version >= 10 {
        c.execute_batch(&format!(
            "INSERT INTO deployables (id, name, generation, state, created_at, updated_at)
                 VALUES ('{DEPLOYABLE}', 'shop', 1, 'healthy', {T}, {T});
             INSERT INTO deployable_specs (deployable_id, generation, spec, format, source, created_at)
                 VALUES ('{DEPLOYABLE}', 1,
                 '{{\"name\":\"shop\",\"assemblies\":[{{\"name\":\"web\",\"image\":\"tiny\"}}]}}',
                 'yaml', 'name: shop', {T});
             INSERT INTO deployable_slots (deployable_id, assembly, idx, instance_id, incarnation,
                 spec_generation, state, state_since, updated_at)
                 VALUES ('{DEPLOYABLE}', 'web', 0, '{INSTANCE}', 1, 1, 'healthy', {T}, {T});
             INSERT INTO pool_members (deployable_id, balancer, backend, server, instance_id, addr,
                 state, updated_at)
                 VALUES ('{DEPLOYABLE}', 'edge', 'web', 'cm-shop-web-0-1', '{INSTANCE}',
                 '127.0.0.1:30000', 'ready', {T});"
        ))
        .unwrap();
    }
    if version >= 12 {
        c.execute(
            "INSERT INTO volumes (id, name, host_id, size_bytes, instance_id, attach_pos,
                 attach_gen, intent_gen, obs_size_bytes, obs_allocated, obs_instance_id,
                 obs_attach_state, created_at, updated_at)
             VALUES (?1, 'data', ?2, 1048576, ?3, 1, 1, 3, 1048576, 4096, ?3, 'attached', ?4, ?4)",
            params![VOLUME, HOST, INSTANCE, T],
        )
        .unwrap();
    }
    if version >= 13 {
        c.execute(
            "INSERT INTO snapshots (id, name, of_kind, disk_id, source_name, host_id, intent_gen,
                 obs_consistency, obs_size_bytes, created_at, updated_at)
             VALUES ('5e5e5e5e-0000-4000-8000-000000000013', 'before', 'volume', ?1, 'data', ?2,
                 4, 'offline', 1048576, ?3, ?3)",
            params![VOLUME, HOST, T],
        )
        .unwrap();
    }
    if version >= 14 {
        c.execute(
            "UPDATE volumes SET image_id = ?2 WHERE id = ?1",
            params![VOLUME, IMAGE],
        )
        .unwrap();
    }
    if version >= 15 {
        c.execute(
            "INSERT INTO transfers (id, purpose, host_id, disk_of, disk_id, max_bytes,
                 size_bytes, sha256, received_at, created_at)
             VALUES ('7a7a7a7a-0000-4000-8000-000000000015', 'image_create', ?1,
                 'instance_root', ?2, 2147483648, 196608, ?3, ?4, ?4)",
            params![HOST, INSTANCE, "ab".repeat(32), T],
        )
        .unwrap();
        c.execute(
            "INSERT INTO image_builds (image_id, name, instance_id, transfer_id, operation_id,
                 created_at)
             VALUES ('7b7b7b7b-0000-4000-8000-000000000015', 'golden', ?1,
                 '7a7a7a7a-0000-4000-8000-000000000015', '7c7c7c7c-0000-4000-8000-000000000015', ?2)",
            params![INSTANCE, T],
        )
        .unwrap();
    }
    if version >= 16 {
        c.execute(
            "INSERT INTO backup_schedules (id, name, of_kind, disk_id, source_name, target,
                 every_secs, keep, next_at, created_at)
             VALUES ('8a8a8a8a-0000-4000-8000-000000000016', 'data-every-1h', 'volume', ?1,
                 'data', 'host', 3600, 24, ?2, ?2)",
            params![VOLUME, T],
        )
        .unwrap();
        c.execute(
            "INSERT INTO backups (id, name, of_kind, disk_id, source_name, host_id, target,
                 schedule_id, schedule_name, origin_image_id, intent_gen, obs_kind,
                 obs_full_reason, obs_consistency, obs_size_bytes, obs_file_bytes, obs_took_ms,
                 created_at, updated_at)
             VALUES ('8b8b8b8b-0000-4000-8000-000000000016', 'data-20231114-221320', 'volume',
                 ?1, 'data', ?2, 'host', '8a8a8a8a-0000-4000-8000-000000000016',
                 'data-every-1h', ?3, 1, 'full', 'the first backup of this chain', 'offline',
                 104857600, 4096, 1200, ?4, ?4)",
            params![VOLUME, HOST, IMAGE, T],
        )
        .unwrap();
    }
}

/// The schema as SQLite keeps it, in a stable order.
fn schema(c: &Connection) -> Vec<(String, String, String, Option<String>)> {
    let mut stmt = c
        .prepare("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name")
        .unwrap();
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap();
    rows.map(|r| r.unwrap()).collect()
}

/// What every version's rows must still say after the upgrade.
fn check(s: &SqliteStore, version: i64) {
    let id = |v: &str| Uuid::parse_str(v).unwrap();
    assert_eq!(
        s.get_setting("join_token_sha256").unwrap().as_deref(),
        Some("abc")
    );
    let tokens = s.all_tokens().unwrap();
    assert!(tokens
        .iter()
        .any(|(h, t)| h == "h1" && t.host_id == Some(HostId(id(HOST)))));
    let host = s.get_host("h1").unwrap();
    assert_eq!(host.id, id(HOST));
    assert_eq!((host.reserved_mib, host.generation), (512, 3));
    assert_eq!(host.facts, super::tests::facts(8192));
    assert_eq!(host.instance_count, 1);
    let image = s.get_image("tiny").unwrap();
    assert_eq!(
        (image.id, image.cmdline.as_deref()),
        (id(IMAGE), Some("console=ttyS0"))
    );
    assert_eq!(s.get_flavor("custom").unwrap().memory_mib, 384);
    let i = s.get_instance("web-1").unwrap();
    assert_eq!(i.id, id(INSTANCE));
    assert_eq!(
        (i.spec.image_name.as_str(), i.host_name.as_str()),
        ("tiny", "h1")
    );
    assert_eq!(i.spec.ports.len(), 1);
    assert_eq!(i.spec.ports[0].host, 8080);
    assert_eq!(
        i.spec.restart_policy,
        cm_api::instance::RestartPolicy::OnFailure
    );
    assert_eq!((i.desired.boot_gen, i.desired.reboot_gen), (2, 1));
    assert_eq!(
        i.observed.state,
        Some(cm_api::agent::ObservedState::Running)
    );
    assert_eq!(
        (i.observed.pid, i.observed.accel),
        (Some(4242), Some(cm_api::words::ResolvedAccel::Tcg))
    );
    assert_eq!(i.restart.count, 1);
    let op = s.get_operation(id(OPERATION)).unwrap();
    assert_eq!((op.op.kind.as_str(), op.want), ("instance.create", 1));
    let events = s.events_since(0, None, 10).unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].message, "up");
    if version >= 2 {
        let cfg = s.get_config(id(CONFIG)).unwrap();
        assert_eq!(
            (cfg.domain.as_str(), cfg.status.as_str()),
            ("default", "fetched")
        );
        assert_eq!(cfg.instance_id, Some(InstanceId(id(INSTANCE))));
        assert_eq!(s.config_body(id(CONFIG)).unwrap().1, b"hi");
        assert_eq!(s.list_domains().unwrap().len(), 1);
        assert_eq!(i.guest.seq, Some(7));
        assert_eq!(
            i.config.as_ref().map(|c| c.status.as_str()),
            Some("fetched")
        );
    } else {
        assert_eq!(i.config, None);
    }
    if version >= 3 {
        let k = s.idempotency_get("admin", "k1", T).unwrap().unwrap();
        assert_eq!((k.status, k.response.as_slice()), (202, &b"{}"[..]));
    }
    if version >= 4 {
        assert_eq!(s.get_upload(id(UPLOAD)).unwrap().size, Some(10));
    }
    if version >= 6 {
        let o = s.list_orphans(HostId(id(HOST))).unwrap();
        assert_eq!((o.len(), o[0].disk_bytes), (1, 4096));
    }
    if version >= 7 {
        let d = s.get_config(id(DYNAMIC)).unwrap();
        assert_eq!(d.bound_instance, Some(InstanceId(id(INSTANCE))));
    }
    if version >= 10 {
        let d = s.get_deployable("shop").unwrap();
        assert_eq!(d.id.to_string(), DEPLOYABLE);
        let spec = s.deployable_spec(d.id, 1).unwrap();
        assert_eq!(spec.spec.assemblies[0].count, 1);
        let slots = s.list_slots(d.id).unwrap();
        assert_eq!(slots[0].instance_id, Some(InstanceId(id(INSTANCE))));
    }
    if version >= 12 {
        let v = s.get_volume("data").unwrap();
        assert_eq!(v.id.to_string(), VOLUME);
        assert_eq!(v.instance.as_ref().map(|i| i.1.as_str()), Some("web-1"));
        assert_eq!(v.facts.allocated_bytes, Some(4096));
        assert_eq!(i.volumes, vec!["data"]);
        assert_eq!(host.volume_count, 1);
    }
    if version >= 13 {
        use crate::store::snapshot::SnapshotStore;
        let snap = s.get_snapshot("before").unwrap();
        assert_eq!(snap.disk_id.to_string(), VOLUME);
        assert_eq!(
            snap.facts.consistency,
            Some(cm_api::snapshot::Consistency::Offline)
        );
    }
    let data = (version >= 12).then(|| s.get_volume("data").unwrap());
    if let Some(v) = data {
        // Before 0014 a volume has no origin image; from it, its own.
        let origin = v.image.as_ref().map(|i| i.1.as_str());
        assert_eq!(origin, (version >= 14).then_some("tiny"));
        assert_eq!(v.root_of, None);
        assert_eq!(i.root_volume, None);
    }
    if version >= 15 {
        use crate::store::transfer::TransferStore;
        let builds = s.list_builds().unwrap();
        assert_eq!(builds.len(), 1);
        assert_eq!(builds[0].name, "golden");
        assert_eq!(builds[0].instance_id.to_string(), INSTANCE);
        assert_eq!(
            builds[0].transfer.received.as_ref().map(|r| r.0),
            Some(196608)
        );
    }
    if version >= 16 {
        use crate::store::backup::BackupStore;
        let b = s.get_backup("data-20231114-221320").unwrap();
        assert_eq!(b.facts.kind, Some(cm_api::backup::BackupKind::Full));
        assert_eq!(b.schedule_name.as_deref(), Some("data-every-1h"));
        assert_eq!(s.list_backup_schedules().unwrap()[0].every_secs, 3600);
    }
}

#[test]
fn a_store_at_every_earlier_version_opens_with_its_rows_and_todays_schema() {
    let dir = tempfile::tempdir().unwrap();
    let fresh_path = dir.path().join("fresh.db");
    let fresh = schema(&SqliteStore::open(&fresh_path).unwrap().conn.lock().unwrap());
    assert!(fresh.iter().any(|t| t.1 == "instances"));
    for m in MIGRATIONS.iter().take(MIGRATIONS.len() - 1) {
        let path = dir.path().join(format!("v{}.db", m.version));
        {
            let c = Connection::open(&path).unwrap();
            let tx = c.unchecked_transaction().unwrap();
            migrate::apply(&tx, m.version).unwrap();
            tx.commit().unwrap();
            assert_eq!(migrate::version(&c).unwrap(), m.version);
            seed(&c, m.version);
        }
        let s = SqliteStore::open(&path).unwrap();
        let version = migrate::version(&s.conn.lock().unwrap()).unwrap();
        assert_eq!(version, migrate::latest(), "from {}", m.file);
        check(&s, m.version);
        assert_eq!(
            schema(&s.conn.lock().unwrap()),
            fresh,
            "schema after upgrading from {}",
            m.file
        );
        // The upgraded store takes new writes like a fresh one.
        s.set_setting("after", "upgrade").unwrap();
        drop(s);
        // Opening again applies nothing and keeps everything.
        let s = SqliteStore::open(&path).unwrap();
        check(&s, m.version);
    }
}

/// The newest store (no migration pending) opens with the same rows too.
#[test]
fn a_current_store_opens_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("now.db");
    drop(SqliteStore::open(&path).unwrap());
    {
        let c = Connection::open(&path).unwrap();
        seed(&c, migrate::latest());
    }
    check(&SqliteStore::open(&path).unwrap(), migrate::latest());
}
