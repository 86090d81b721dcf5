//! Issue 12 point 6 with issue 10 point 2: every backup endpoint of the
//! typed client (cm_client::api::backups) reaches a route of the real
//! master, its answers decode into the cm-api types, and the master's
//! refusals of what `cm` never sends (both or neither source, a `keep`
//! without `every`) come back as typed errors with their field. One real
//! host agent (qemu-img on real files, no VM) makes the backups.

use cm_api::backup::{BackupQuery, BackupState, CreateBackup, RestoreBackup};
use cm_api::volume::CreateVolume;
use cm_api::ErrorCode;
use cm_client::api;
use cm_client::Error;
use std::fmt::Debug;
use test_infra::deploy::DeployUser;
use test_infra::{Cloud, HostOpts};

/// The master refused it with `code` (and `field`, when one is given).
fn refused<T: Debug>(what: &str, r: Result<T, Error>, code: ErrorCode, field: Option<&str>) {
    match r {
        Err(e) => {
            let doc = e
                .api()
                .unwrap_or_else(|| panic!("{what}: no document: {e}"));
            assert_eq!(doc.code(), code, "{what}: {e}");
            if field.is_some() {
                assert_eq!(doc.error.field.as_deref(), field, "{what}: {e}");
            }
        }
        Ok(v) => panic!("{what}: accepted {v:?}"),
    }
}

#[test]
fn every_backup_endpoint_reaches_a_route_and_decodes() {
    let mut cloud = Cloud::start().unwrap();
    cloud.add_host("h1", HostOpts::default()).unwrap();
    let user = DeployUser::new(&cloud, "client");
    let c = cloud.api();
    let wait = |id: String| {
        user.ok(&["operation", "wait", &id]);
    };

    let v = c
        .call(api::volumes::create(&CreateVolume {
            name: "data".into(),
            size_bytes: 16 << 20,
            host: None,
        }))
        .unwrap();
    wait(v.operation.id.to_string());

    // What cm refuses itself, the master refuses too.
    let both = CreateBackup {
        volume: Some("data".into()),
        instance: Some("data".into()),
        ..Default::default()
    };
    refused(
        "both sources",
        c.call(api::backups::create(&both)),
        ErrorCode::InvalidInput,
        None,
    );
    refused(
        "no source",
        c.call(api::backups::create(&CreateBackup::default())),
        ErrorCode::InvalidInput,
        None,
    );
    let keep_alone = CreateBackup {
        volume: Some("data".into()),
        keep: Some(3),
        ..Default::default()
    };
    refused(
        "keep without every",
        c.call(api::backups::create(&keep_alone)),
        ErrorCode::InvalidInput,
        Some("keep"),
    );
    let short = CreateBackup {
        volume: Some("data".into()),
        every: Some("10s".into()),
        ..Default::default()
    };
    refused(
        "every 10s",
        c.call(api::backups::create(&short)),
        ErrorCode::InvalidInput,
        Some("every"),
    );
    assert!(c
        .call(api::backups::list(&BackupQuery::default()))
        .unwrap()
        .is_empty());

    // Create (with a schedule), list, show.
    let acc = c
        .call(api::backups::create(&CreateBackup {
            volume: Some("data".into()),
            name: Some("d1".into()),
            every: Some("1h".into()),
            keep: Some(3),
            ..Default::default()
        }))
        .unwrap();
    assert_eq!(acc.backup.name, "d1");
    let sched = acc.schedule.expect("a schedule with every");
    assert_eq!((sched.every_secs, sched.keep), (3600, 3));
    wait(acc.operation.id.to_string());
    let q = BackupQuery {
        volume: Some("data".into()),
        instance: None,
    };
    let listed = c.call(api::backups::list(&q)).unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    let d1 = c.call(api::backups::show("d1")).unwrap();
    assert_eq!(d1.state, BackupState::Ready, "{d1:?}");
    assert_eq!(c.call(api::backups::show(&d1.id.to_string())).unwrap(), d1);

    // Schedules: listed, ended (the answer is JSON), then not found.
    let schedules = c.call(api::backups::schedules()).unwrap();
    assert_eq!(schedules.len(), 1, "{schedules:?}");
    let ended = c
        .call(api::backups::delete_schedule(&schedules[0].name))
        .unwrap();
    assert!(ended.is_object(), "{ended}");
    refused(
        "unschedule again",
        c.call(api::backups::delete_schedule(&schedules[0].name)),
        ErrorCode::NotFound,
        None,
    );

    // Restore: a VolumeAccepted; a taken name is refused on `as`.
    let r = c
        .call(api::backups::restore(
            "d1",
            &RestoreBackup {
                as_name: "d1-back".into(),
                host: None,
            },
        ))
        .unwrap();
    assert_eq!(
        (r.volume.name.as_str(), r.volume.host.as_str()),
        ("d1-back", "h1")
    );
    wait(r.operation.id.to_string());
    refused(
        "restore as a taken name",
        c.call(api::backups::restore(
            "d1",
            &RestoreBackup {
                as_name: "data".into(),
                host: None,
            },
        )),
        ErrorCode::AlreadyExists,
        Some("as"),
    );

    // Delete: its operation; then the backup is gone.
    let gone = c.call(api::backups::delete_backup("d1")).unwrap();
    wait(gone.operation.id.to_string());
    refused(
        "show a deleted backup",
        c.call(api::backups::show("d1")),
        ErrorCode::NotFound,
        None,
    );
    refused(
        "delete a deleted backup",
        c.call(api::backups::delete_backup("d1")),
        ErrorCode::NotFound,
        None,
    );
}
