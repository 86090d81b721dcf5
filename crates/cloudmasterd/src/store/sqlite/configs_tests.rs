//! The rendezvous cache's store rules of issue 9 (points 12 and 17):
//! dynamic records held by an instance, released with it, never stale while
//! it lives; the NoCloud credential's window per boot.

use super::*;
use cm_api::words::OperationKind;

fn hash(secret: &str, epoch: u64) -> SecretHash {
    SecretHash {
        salt: b"salt".to_vec(),
        hash: format!("{secret}/{epoch}").into_bytes(),
        epoch,
    }
}

fn fresh(u: Uuid, epoch: u64) -> SecretHash {
    hash(&u.to_string(), epoch)
}

fn setup() -> (SqliteStore, Image) {
    let s = SqliteStore::in_memory().unwrap();
    let facts = HostFacts {
        memory_total_mib: 8192,
        memory_available_mib: 4096,
        vcpus: 4,
        accel: cm_api::words::ResolvedAccel::Tcg,
        ..Default::default()
    };
    s.register_host("h1", "t", &facts, 0).unwrap();
    let img = super::tests::image(&s);
    (s, img)
}

fn record(uuid: Uuid, dynamic: bool, instance: Option<Uuid>) -> NewConfig {
    NewConfig {
        uuid,
        domain: "pool".into(),
        dynamic,
        instance_id: instance.map(InstanceId),
        body: b"#cm-guest\n".to_vec(),
        secret: hash("s", 1),
        parameter_map: Default::default(),
        config_hosts: vec![],
    }
}

fn instance(s: &SqliteStore, img: &Image, name: &str, config: Option<&NewConfig>) -> InstanceId {
    let id = InstanceId(config.map(|c| c.uuid).unwrap_or_else(Uuid::new_v4));
    let n = NewInstance {
        owner: None,
        health: None,
        volumes: Vec::new(),
        root: None,
        id,
        name: name.into(),
        image_id: img.id.into(),
        flavor: None,
        memory_mib: 64,
        vcpus: 1,
        disk_gib: 0,
        ports: vec![],
        restart_policy: Default::default(),
        accel: Default::default(),
        stop_timeout_secs: 30,
        dynamic_domain: config.is_none().then(|| "pool".to_string()),
    };
    let op = new_operation(OperationKind::InstanceCreate, name, id, "placed");
    let first = |caps: &[HostCapacity]| Ok(caps[0].id);
    s.create_instance(&n, config, &first, &op, None, now_ms())
        .unwrap();
    id
}

#[test]
fn a_dynamic_instance_keeps_its_record_until_it_is_deleted() {
    let (s, img) = setup();
    s.insert_domain("pool", &hash("d", 1), now_ms()).unwrap();
    let recs: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
    for r in &recs {
        s.insert_config(&record(*r, true, None), now_ms()).unwrap();
    }
    let (a, b, c) = (
        instance(&s, &img, "a", None),
        instance(&s, &img, "b", None),
        instance(&s, &img, "c", None),
    );
    let ra = s
        .assign_dynamic("pool", Some(a), now_ms(), &fresh)
        .unwrap()
        .unwrap();
    assert_eq!((ra.bound_instance, ra.secret_epoch), (Some(a), 2));
    assert_eq!(s.config_secret(ra.uuid).unwrap(), Some(fresh(ra.uuid, 2)));
    // Every later boot of `a`: the same record, the same secret.
    for _ in 0..3 {
        let again = s
            .assign_dynamic("pool", Some(a), now_ms(), &fresh)
            .unwrap()
            .unwrap();
        assert_eq!((again.uuid, again.secret_epoch), (ra.uuid, 2));
    }
    let rb = s
        .assign_dynamic("pool", Some(b), now_ms(), &fresh)
        .unwrap()
        .unwrap();
    // A guest with the domain's secret (federated): first come, no holder.
    let rf = s
        .assign_dynamic("pool", None, now_ms(), &fresh)
        .unwrap()
        .unwrap();
    assert_eq!(rf.bound_instance, None);
    let taken: std::collections::HashSet<Uuid> = [ra.uuid, rb.uuid, rf.uuid].into();
    assert_eq!(taken.len(), 3);
    assert!(s
        .assign_dynamic("pool", Some(c), now_ms(), &fresh)
        .unwrap()
        .is_none());
    assert_eq!(
        s.config_owner(ra.uuid).unwrap().map(|o| o.instance),
        Some(a)
    );
    assert_eq!(s.config_owner(rf.uuid).unwrap(), None);

    // remove_stale: the held records stay however old; the federated one,
    // silent, goes; a record whose guest heartbeated since stays.
    let later = now_ms() + 3_600_000;
    let gone: Vec<Uuid> = s
        .remove_stale(later)
        .unwrap()
        .iter()
        .map(|r| r.uuid)
        .collect();
    assert_eq!(gone, vec![rf.uuid]);
    let loose = Uuid::new_v4();
    s.insert_config(&record(loose, false, None), now_ms())
        .unwrap();
    let hb = cm_api::boot::Heartbeat {
        seq: 1,
        time: 0.0,
        services: vec![],
        config_status: None,
        config_version: 1,
    };
    s.config_heartbeat(loose, &hb, later).unwrap();
    s.tx(|t| {
        t.execute(
            "UPDATE configs SET updated_at = 0 WHERE uuid = ?1",
            [loose.to_string()],
        )?;
        Ok(())
    })
    .unwrap();
    assert!(s.remove_stale(later).unwrap().is_empty());
    assert_eq!(s.remove_stale(later + 1).unwrap().len(), 1);

    // Deleting `a` puts its record back in the pool, blank; `c` takes it
    // with a new secret, so `a`'s guest has nothing left of it.
    s.set_config_trust(ra.uuid, b"ts", b"th").unwrap();
    s.change_instance(a, DesiredChange::Delete, None, now_ms())
        .unwrap();
    let back = s.get_config(ra.uuid).unwrap();
    assert_eq!(
        (
            back.assigned,
            back.bound_instance,
            back.status.as_str(),
            back.trust_set
        ),
        (false, None, "registered", false)
    );
    assert_eq!(s.config_owner(ra.uuid).unwrap(), None);
    let rc = s
        .assign_dynamic("pool", Some(c), now_ms(), &fresh)
        .unwrap()
        .unwrap();
    assert_eq!((rc.uuid, rc.secret_epoch), (ra.uuid, 3));
    assert_eq!(s.config_secret(ra.uuid).unwrap(), Some(fresh(ra.uuid, 3)));
}

#[test]
fn the_nocloud_window_opens_once_per_boot_and_is_spent() {
    let (s, img) = setup();
    let id = Uuid::new_v4();
    let rec = record(id, false, Some(id));
    instance(&s, &img, "ci", Some(&rec));
    let owner = s.config_owner(id).unwrap().unwrap();
    assert_eq!((owner.instance, owner.boot_gen), (InstanceId(id), 1));
    let (t0, w) = (1_000_000, 300_000);
    // First use opens it; it stays open for the rest of cloud-init's fetch.
    assert!(s.nocloud_use(id, "1.0", t0, w, false).unwrap());
    assert!(s.nocloud_use(id, "1.0", t0 + 1_000, w, false).unwrap());
    // vendor-data, the last file: this use still reads, then it is spent.
    assert!(s.nocloud_use(id, "1.0", t0 + 2_000, w, true).unwrap());
    assert!(!s.nocloud_use(id, "1.0", t0 + 3_000, w, false).unwrap());
    // The next boot (a reboot the master ordered) opens a window of its own,
    // which also closes by itself after `w`.
    assert!(s.nocloud_use(id, "1.1", t0 + 4_000, w, false).unwrap());
    assert!(!s.nocloud_use(id, "1.1", t0 + 4_000 + w, w, false).unwrap());
}

/// A guest's fetch is one store call: the secret goes to the check, and the
/// body comes back only when the check says yes; an unknown uuid is checked
/// too (against nothing), so both refusals cost the same work.
#[test]
fn a_fetch_checks_the_secret_and_reads_the_body_in_one_call() {
    let (s, _) = setup();
    let u = Uuid::new_v4();
    s.insert_config(&record(u, false, None), now_ms()).unwrap();
    let mut seen = Vec::new();
    let got = s
        .config_fetch(u, &mut |stored| {
            seen.push(stored.map(|h| h.hash.clone()));
            true
        })
        .unwrap();
    let (version, body, status) = got.unwrap();
    assert_eq!((version, body.as_slice()), (1, &b"#cm-guest\n"[..]));
    assert_eq!(status, s.config_body(u).unwrap().2);
    assert_eq!(seen, vec![Some(b"s/1".to_vec())]);
    assert_eq!(
        s.config_fetch(u, &mut |_| false).unwrap(),
        None,
        "refused: no body"
    );
    let mut unknown = Vec::new();
    let none = s
        .config_fetch(Uuid::new_v4(), &mut |stored| {
            unknown.push(stored.is_some());
            true
        })
        .unwrap();
    assert_eq!(none, None);
    assert_eq!(
        unknown,
        vec![false],
        "an unknown uuid is checked once, against nothing"
    );
}
