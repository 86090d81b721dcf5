//! Issue 10, point 2: the one typed client. Every endpoint it builds reaches
//! a route of the real master (no "no such endpoint", no wrong method), its
//! answers decode into the cm-api types, and the master's refusals come back
//! as typed errors (code, message, field).

use cm_api::boot::{AssignDynamic, CreateDomain, Heartbeat, PreRegister, SetConfig, UpdateCache};
use cm_api::host::{EvacuateHost, PurgeOrphans, UpdateHost};
use cm_api::image::{CreateFlavor, CreateImage, FileSource};
use cm_api::instance::{CreateInstance, StopInstance};
use cm_api::upload::{CreateUpload, UploadState};
use cm_api::ErrorCode;
use cm_client::api;
use cm_client::api::events::EventQuery;
use cm_client::Error;
use std::fmt::Debug;
use test_infra::rest::sha256_of;
use test_infra::Cloud;
use uuid::Uuid;

/// The call reached a route: an answer, or the master's refusal of this
/// request (not of its path or method).
fn routed<T: Debug>(what: &str, r: Result<T, Error>) -> Result<T, Error> {
    if let Err(e) = &r {
        let doc = e
            .api()
            .unwrap_or_else(|| panic!("{what}: no error document: {e}"));
        assert!(
            !doc.error.message.starts_with("no such endpoint"),
            "{what}: the master has no such route: {e}"
        );
        assert_ne!(doc.code(), ErrorCode::MethodNotAllowed, "{what}: {e}");
    }
    r
}

/// The call reached a route and the master said the named thing is not there.
fn not_found<T: Debug>(what: &str, r: Result<T, Error>) {
    match routed(what, r) {
        Err(e) => assert_eq!(
            e.api().map(|a| a.code()),
            Some(ErrorCode::NotFound),
            "{what}: {e}"
        ),
        Ok(v) => panic!("{what}: found {v:?}"),
    }
}

#[test]
fn every_endpoint_of_the_typed_client_reaches_a_route_and_decodes() {
    let cloud = Cloud::start().unwrap();
    let c = cloud.api();

    let info = c.call(api::info()).unwrap();
    assert!(!info.version.is_empty());

    // Hosts (none yet) and their tokens.
    assert!(c.call(api::hosts::list()).unwrap().is_empty());
    not_found("host show", c.call(api::hosts::show("nope")));
    not_found(
        "host update",
        c.call(api::hosts::update(
            "nope",
            &UpdateHost {
                enabled: Some(true),
                ..Default::default()
            },
        )),
    );
    not_found("host remove", c.call(api::hosts::remove("nope", true)));
    not_found(
        "host evacuate",
        c.call(api::hosts::evacuate("nope", &EvacuateHost::default())),
    );
    not_found("orphans", c.call(api::hosts::orphans("nope")));
    not_found(
        "orphans purge",
        c.call(api::hosts::purge_orphans("nope", &PurgeOrphans::default())),
    );
    let joined = c.call(api::hosts::join_token()).unwrap();
    let rotated = c.call(api::hosts::rotate_join_token()).unwrap();
    assert_ne!(joined.token, rotated.token);

    // Flavors and images.
    assert!(c.call(api::catalog::flavors()).unwrap().len() >= 5);
    assert_eq!(
        c.call(api::catalog::flavor("m1.tiny")).unwrap().name,
        "m1.tiny"
    );
    let f = c
        .call(api::catalog::create_flavor(&CreateFlavor {
            name: "c1.test".into(),
            memory_mib: 160,
            vcpus: 1,
            disk_gib: 0,
        }))
        .unwrap();
    assert_eq!(f.memory_mib, 160);
    let gone = c.call(api::catalog::delete_flavor("c1.test")).unwrap();
    assert!(gone.deleted && gone.name == "c1.test");
    assert!(c.call(api::catalog::images()).unwrap().is_empty());
    not_found("image show", c.call(api::catalog::image("nope")));
    not_found("image delete", c.call(api::catalog::delete_image("nope")));

    // An upload, written through the client, becomes an image.
    let blob = cloud.dir.path().join("blob");
    std::fs::write(&blob, vec![7u8; 4096]).unwrap();
    let sha = sha256_of(&blob);
    let up = c
        .call(api::uploads::create(&CreateUpload {
            size: Some(4096),
            sha256: Some(sha.clone()),
            url: None,
        }))
        .unwrap();
    let listed = c.call(api::uploads::list(Some(&sha))).unwrap();
    assert_eq!(listed.iter().map(|u| u.id).collect::<Vec<_>>(), vec![up.id]);
    let done = c
        .write_upload(
            up.id,
            0,
            vec![7u8; 4096].into(),
            std::time::Duration::from_secs(30),
        )
        .unwrap();
    assert_eq!(done.state, UploadState::Complete);
    assert_eq!(c.call(api::uploads::show(up.id)).unwrap().offset, 4096);
    let image = c
        .call(api::catalog::create_image(&CreateImage {
            name: "raw".into(),
            kernel: None,
            initrd: None,
            cmdline: None,
            disk: Some(FileSource::upload(up.id, Some(sha))),
        }))
        .unwrap();
    assert_eq!(c.call(api::catalog::image("raw")).unwrap().id, image.id);
    assert!(c.call(api::catalog::delete_image("raw")).unwrap().deleted);
    let spare = c
        .call(api::uploads::create(&CreateUpload {
            size: Some(1),
            sha256: Some("0".repeat(64)),
            url: None,
        }))
        .unwrap();
    let removed = c.call(api::uploads::delete_upload(spare.id)).unwrap();
    assert!(removed.deleted && removed.id == spare.id);

    // Instances (no host: creating one is refused, for want of capacity or image).
    assert!(c.call(api::instances::list()).unwrap().is_empty());
    let refused = routed(
        "instance create",
        c.call(api::instances::create(&CreateInstance {
            name: "web-1".into(),
            image: "nope".into(),
            flavor: Some("m1.tiny".into()),
            ..Default::default()
        })),
    );
    refused.unwrap_err();
    not_found("instance show", c.call(api::instances::show("web-1")));
    not_found("instance start", c.call(api::instances::start("web-1")));
    not_found(
        "instance stop",
        c.call(api::instances::stop("web-1", &StopInstance::default())),
    );
    not_found("instance reboot", c.call(api::instances::reboot("web-1")));
    not_found(
        "instance delete",
        c.call(api::instances::delete_instance("web-1")),
    );
    not_found("console", c.call(api::instances::console("web-1", 100)));
    // A name a user typed with a slash is one segment, not another path.
    not_found("escaped name", c.call(api::instances::show("a/../../info")));

    // Operations and events.
    c.call(api::events::operations()).unwrap();
    let no_op = Uuid::new_v4().to_string();
    not_found("operation", c.call(api::events::operation(&no_op)));
    not_found(
        "operation wait",
        c.call(api::events::wait_operation(&no_op, 1)),
    );
    let events = c
        .call(api::events::events(&EventQuery {
            since: 0,
            kind: Some("flavor.created".into()),
            limit: Some(10),
            deployable: None,
        }))
        .unwrap();
    assert!(events.iter().any(|e| e.target == "c1.test"), "{events:?}");

    // Boot-time configs, and a guest's calls with the record's secret.
    let reg = c
        .call(api::configs::pre_register(&PreRegister {
            config: Some("one".into()),
            ..Default::default()
        }))
        .unwrap();
    let uuid = reg.record.uuid.to_string();
    assert_eq!(
        c.call(api::boot::fetch(&uuid, &reg.secret)).unwrap(),
        b"one"
    );
    let set = c
        .call(api::configs::set_config(
            &uuid,
            &SetConfig {
                config: Some("two".into()),
                config_base64: None,
            },
        ))
        .unwrap();
    assert_eq!(set.config_version, 2);
    assert_eq!(
        c.call(api::configs::detail(&uuid))
            .unwrap()
            .config
            .as_deref(),
        Some("two")
    );
    assert_eq!(c.call(api::configs::list(None)).unwrap().len(), 1);
    c.call(api::boot::update_status(
        &uuid,
        &reg.secret,
        &UpdateCache {
            status: "configured".into(),
            config_version: 2,
            trust_key: "k".repeat(64),
            my_conf_addr: None,
            parameter_map: Default::default(),
            reason: None,
            rekey: None,
        },
    ))
    .unwrap();
    c.call(api::boot::heartbeat(
        &uuid,
        &reg.secret,
        &Heartbeat {
            seq: 1,
            time: 0.0,
            services: Vec::new(),
            config_status: Some("configured".into()),
            config_version: 2,
        },
    ))
    .unwrap();
    let wrong = c
        .call(api::boot::fetch(&uuid, "not-the-secret"))
        .unwrap_err();
    assert_eq!(wrong.status().map(|s| s.as_u16()), Some(403), "{wrong}");
    assert_eq!(wrong.api().map(|a| a.code()), Some(ErrorCode::Forbidden));
    assert!(c.call(api::configs::remove(&uuid)).unwrap().removed);
    c.call(api::configs::remove_stale(&cm_api::boot::RemoveStale {
        timeout_secs: 3600,
    }))
    .unwrap();

    // Domains, and assign_dynamic with the domain's secret: typed refusal.
    let d = c
        .call(api::configs::create_domain(&CreateDomain {
            name: "dyn".into(),
        }))
        .unwrap();
    assert_eq!(c.call(api::configs::list(Some("dyn"))).unwrap().len(), 0);
    assert!(c
        .call(api::configs::domains())
        .unwrap()
        .iter()
        .any(|x| x.name == "dyn"));
    let none = routed(
        "assign",
        c.call(api::boot::assign(
            "dyn",
            &d.secret,
            &AssignDynamic {
                domain: "dyn".into(),
                instance: None,
            },
        )),
    )
    .unwrap_err();
    assert_eq!(
        none.api().map(|a| a.code()),
        Some(ErrorCode::NoneLeft),
        "{none}"
    );
    assert!(c.call(api::configs::delete_domain("dyn")).unwrap().deleted);

    // The agent's routes: the admin token is no host's; the old join token
    // no longer registers.
    let e = routed("desired", c.call(api::agent::desired(0, 0))).unwrap_err();
    assert_eq!(e.api().map(|a| a.code()), Some(ErrorCode::Forbidden), "{e}");
    let e = routed(
        "register",
        c.call(api::agent::register(&cm_api::agent::RegisterHost {
            name: "h1".into(),
            join_token: joined.token.clone(),
            facts: Default::default(),
        })),
    )
    .unwrap_err();
    assert_eq!(e.status().map(|s| s.as_u16()), Some(401), "{e}");
    assert_eq!(
        e.api().and_then(|a| a.error.field.as_deref()),
        Some("join_token")
    );

    // Last: a new admin token; the old one is refused with a typed error.
    let admin = c.call(api::hosts::rotate_admin_token()).unwrap();
    let e = c.call(api::instances::list()).unwrap_err();
    assert_eq!(
        e.api().map(|a| a.code()),
        Some(ErrorCode::Unauthorized),
        "{e}"
    );
    let fresh = cm_client::blocking::Client::new(&cloud.url, &admin.token).unwrap();
    assert!(fresh.call(api::instances::list()).unwrap().is_empty());
}
