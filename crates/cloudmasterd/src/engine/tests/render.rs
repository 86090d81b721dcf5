//! The rendered cm-guest config of a slot, and references resolved from
//! the store's rows: after a replace moves the referenced slot, the
//! dependent renders the new address.

use crate::engine::render::{render, resolve, SlotPart};
use crate::store::engine::Snapshot;
use crate::store::sqlite::tests::{facts, image, new_instance};
use crate::store::sqlite::SqliteStore;
use crate::store::{EngineStore, HostCapacity, HostId, Owner, Store};
use cm_api::deploy::DeployableSpec;
use cm_api::instance::PortForward;

fn spec() -> DeployableSpec {
    serde_json::from_value(serde_json::json!({
        "name": "app",
        "policy": {"heartbeat_interval": "500ms"},
        "assemblies": [
            {"name": "web", "image": "tiny", "count": 2,
             "config": "[[file]]\npath = \"/www/index.html\"\ncontent = \"hi\"",
             "services": [{"name": "httpd", "run": "httpd -f -p 8080",
                           "check": {"http": "http://127.0.0.1:8080/", "interval": "3s"},
                           "env": {"DB": {"ref": "db.address"}, "DB_HOST": {"ref": "db.ipaddress"},
                                   "MODE": "prod", "DB_VERSION": {"ref": "db.version"}}}]},
            {"name": "db", "image": "tiny", "stateful": true,
             "ports": [{"name": "pg", "guest": 5432}],
             "services": [{"name": "pg", "lsb": "postgresql"}]}
        ]
    }))
    .unwrap()
}

#[test]
fn a_slot_renders_to_cm_guest_toml() {
    let s = spec();
    let lookup = |r: &str| (r == "db.address").then(|| "10.0.0.5:30001".to_string());
    let text = render(&s.assemblies[0], 500, SlotPart::default(), &lookup).unwrap();
    assert!(text.starts_with("#cm-guest"), "{text}");
    let v: toml::Table = toml::from_str(&text).unwrap();
    assert_eq!(v["agent"]["heartbeat_ms"].as_integer(), Some(500));
    let svc = &v["service"].as_array().unwrap()[0];
    assert_eq!(svc["name"].as_str(), Some("httpd"));
    assert_eq!(svc["run"].as_str(), Some("httpd -f -p 8080"));
    assert_eq!(
        svc["check"]["http"].as_str(),
        Some("http://127.0.0.1:8080/")
    );
    assert_eq!(svc["check"]["interval_secs"].as_integer(), Some(3));
    assert_eq!(svc["env"]["DB"].as_str(), Some("10.0.0.5:30001"));
    assert_eq!(svc["env"]["MODE"].as_str(), Some("prod"));
    // Not resolvable yet: empty, rendered again when it is.
    assert_eq!(svc["env"]["DB_HOST"].as_str(), Some(""));
    // The assembly's own TOML follows.
    assert_eq!(
        v["file"].as_array().unwrap()[0]["path"].as_str(),
        Some("/www/index.html")
    );
    // An lsb service names its script; a moved-services list filters.
    let db = render(&s.assemblies[1], 500, SlotPart::default(), &|_| None).unwrap();
    assert!(db.contains("lsb = \"postgresql\""), "{db}");
    let none = render(
        &s.assemblies[0],
        500,
        SlotPart {
            services: Some(&[]),
            restart_gens: None,
            moved: &[],
        },
        &|_| None,
    )
    .unwrap();
    assert!(!none.contains("[[service]]"), "{none}");
    // Rung 1: the engine's restart_gen of a service is rendered with it.
    let gens = [("httpd".to_string(), 3u64)].into();
    let bumped = render(
        &s.assemblies[0],
        500,
        SlotPart {
            services: None,
            restart_gens: Some(&gens),
            moved: &[],
        },
        &|_| None,
    )
    .unwrap();
    let v: toml::Table = toml::from_str(&bumped).unwrap();
    assert_eq!(v["service"][0]["restart_gen"].as_integer(), Some(3));
    assert!(!text.contains("restart_gen"), "0 is not written: {text}");
}

fn snapshot(store: &SqliteStore, id: cm_api::ids::DeployableId) -> Snapshot {
    store.deploy_snapshot(id, crate::store::now_ms()).unwrap()
}

#[test]
fn references_follow_the_referenced_slot_to_its_new_host() {
    let store = SqliteStore::in_memory().unwrap();
    let with_addr = |a: &str| {
        let mut f = facts(8192);
        f.forward_addr = Some(a.into());
        f
    };
    let a = store
        .register_host("a", "ta", &with_addr("10.0.0.1"), 0)
        .unwrap();
    let b = store
        .register_host("b", "tb", &with_addr("10.0.0.2"), 0)
        .unwrap();
    let img = image(&store);
    let id = store.insert_test_deployable(serde_json::to_value(spec()).unwrap());
    store.ensure_slots(id, 1).unwrap();
    let on = |host: HostId| move |_: &[HostCapacity]| Ok(host);
    let put = |name: &str, host: HostId, port: u16| {
        let mut n = new_instance(name, &img, 64);
        n.owner = Some(Owner {
            deployable: id,
            slot: "db-0".into(),
        });
        n.ports = vec![PortForward {
            guest: 5432,
            host: port,
        }];
        let op = crate::store::new_operation(
            cm_api::words::OperationKind::InstanceCreate,
            name,
            n.id,
            "placed",
        );
        (n, op, host)
    };
    let key = crate::store::engine::SlotKey {
        deployable: id,
        assembly: "db".into(),
        idx: 0,
    };
    let ev = crate::store::engine::NewEvent {
        kind: cm_api::words::EventKind::DeployableAction,
        target: "app".into(),
        message: "x".into(),
        detail: Default::default(),
    };
    let slot = snapshot(&store, id)
        .slots
        .into_iter()
        .find(|s| s.assembly == "db")
        .unwrap();
    let (n, op, host) = put("app-db-0-1", a, 30001);
    let place = on(host);
    let create = crate::store::engine::SlotCreate {
        new: &n,
        config: None,
        place: &place,
        op: &op,
    };
    store
        .create_slot_instance(&key, 0, create, &slot, &ev, 1)
        .unwrap();
    let snap = snapshot(&store, id);
    assert_eq!(resolve(&snap, "db.ipaddress").as_deref(), Some("10.0.0.1"));
    assert_eq!(
        resolve(&snap, "db.address").as_deref(),
        Some("10.0.0.1:30001")
    );
    assert_eq!(resolve(&snap, "db.port.pg").as_deref(), Some("30001"));
    assert_eq!(resolve(&snap, "web.ipaddress"), None, "no instance yet");
    let before = render(
        &snap.spec.spec.assemblies[0],
        500,
        SlotPart::default(),
        &|r| resolve(&snap, r),
    )
    .unwrap();
    // Replaced on host b: the dependents' render changes with it.
    let (n, op, host) = put("app-db-0-2", b, 30002);
    let place = on(host);
    let create = crate::store::engine::SlotCreate {
        new: &n,
        config: None,
        place: &place,
        op: &op,
    };
    store
        .replace_slot(
            &key,
            1,
            create,
            crate::store::engine::OldFate::Delete,
            &slot,
            &ev,
            2,
        )
        .unwrap();
    let snap = snapshot(&store, id);
    assert_eq!(
        resolve(&snap, "db.address").as_deref(),
        Some("10.0.0.2:30002")
    );
    let after = render(
        &snap.spec.spec.assemblies[0],
        500,
        SlotPart::default(),
        &|r| resolve(&snap, r),
    )
    .unwrap();
    assert_ne!(before, after);
    assert!(after.contains("DB = \"10.0.0.2:30002\""), "{after}");
    let _ = store.list_instances().unwrap();
}
