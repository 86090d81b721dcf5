//! A simulated host's chains through its desired state and report: made at
//! once (full, then incremental), offline or crash by whether a running VM
//! holds the disk, deleted ones dropped, a disk it lacks failed.

use super::host::{Capacity, SimHost};
use super::stats::Stats;
use super::tests::{ms, spec, T};
use crate::runtime::Runtime;
use cm_api::agent::{DesiredAttachment, DesiredChain, DesiredState, DesiredVolume, DiskRef, Power};
use cm_api::backup::BackupKind;
use cm_api::snapshot::{Consistency, SnapshotOf};
use cm_api::words::ResolvedAccel;
use std::sync::Arc;
use std::time::Instant;
use uuid::Uuid;

fn chain(disk: Uuid, backups: Vec<Uuid>, deleted: Vec<Uuid>) -> DesiredChain {
    DesiredChain {
        disk: DiskRef {
            of: SnapshotOf::Volume,
            disk,
            backup: None,
        },
        backups,
        deleted,
        made: Vec::new(),
        mirror: None,
    }
}

#[test]
fn a_simulated_host_keeps_chains_as_its_desired_state_says() {
    let caps = Capacity {
        memory_mib: 4096,
        vcpus: 4,
        disk_mib: 1000,
        accel: ResolvedAccel::Kvm,
        forward_addr: "127.0.0.1".into(),
    };
    let host = SimHost::new(T, caps, Arc::new(Stats::new(1)));
    let (vol, gone) = (Uuid::from_u128(7), Uuid::from_u128(8));
    let (b1, b2, b3) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let mut d = DesiredState {
        cloud_id: Uuid::nil(),
        generation: 1,
        instances: vec![],
        requests: vec![],
        report_interval_secs: 3,
        deleted: vec![],
        volumes: vec![DesiredVolume {
            id: vol,
            name: "data".into(),
            size_bytes: 8 << 20,
            snapshots: Vec::new(),
            deleted_snapshots: Vec::new(),
            revert: None,
            clone_from: None,
            image: None,
            import: None,
        }],
        deleted_volumes: vec![],
        exports: Vec::new(),
        chains: vec![chain(vol, vec![b1], vec![])],
    };
    host.apply(&d);
    let r = host.backups();
    assert_eq!(r.len(), 1);
    assert_eq!(
        (r[0].id, r[0].kind, r[0].consistency, r[0].size_bytes),
        (
            b1,
            Some(BackupKind::Full),
            Some(Consistency::Offline),
            8 << 20
        )
    );
    assert_eq!(
        r[0].full_reason.as_deref(),
        Some("the first backup of this chain")
    );
    // Attached to a running VM: the next is crash-consistent, incremental.
    let mut vm = spec(Power::Running, 1);
    vm.volumes = vec![DesiredAttachment {
        volume: vol,
        name: "data".into(),
    }];
    d.instances = vec![vm];
    host.apply(&d);
    let t0 = Instant::now();
    for t in [0, 200, 1200] {
        host.step_all(t0 + ms(t));
    }
    d.chains = vec![
        chain(vol, vec![b1, b2], vec![]),
        chain(gone, vec![b3], vec![]),
    ];
    host.apply(&d);
    let r = host.backups();
    let second = r.iter().find(|b| b.id == b2).unwrap();
    assert_eq!(
        (second.kind, second.consistency),
        (Some(BackupKind::Incremental), Some(Consistency::Crash))
    );
    let failed = r.iter().find(|b| b.id == b3).unwrap();
    assert!(failed.kind.is_none() && failed.error.is_some());
    // Deleted: dropped; the other still exports (a restore).
    d.chains = vec![chain(vol, vec![b2], vec![b1])];
    host.apply(&d);
    assert!(!host.backups().iter().any(|b| b.id == b1));
    assert_eq!(host.backup_size(vol, b2), Some(8 << 20));
    assert_eq!(host.backup_size(vol, b1), None);
}
