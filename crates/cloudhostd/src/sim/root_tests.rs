//! A simulated host and persistent roots (docs/storage.md): an instance
//! whose `root_volume` has no file yet waits, stopped; once the volume's
//! file is made it boots; deleting the instance keeps the file.

use super::host::{Capacity, SimHost};
use super::stats::Stats;
use super::tests::{ms, spec, T};
use crate::runtime::Runtime;
use cm_api::agent::{DesiredState, DesiredVolume, ObservedState, Power};
use cm_api::words::ResolvedAccel;
use std::sync::Arc;
use std::time::Instant;
use uuid::Uuid;

#[test]
fn a_root_volume_boots_once_its_file_exists_and_outlives_the_vm() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        let caps = Capacity {
            memory_mib: 4096,
            vcpus: 4,
            disk_mib: 1000,
            accel: ResolvedAccel::Kvm,
            forward_addr: "127.0.0.1".into(),
        };
        let host = SimHost::new(T, caps, Arc::new(Stats::new(1)));
        let root = Uuid::from_u128(9);
        let mut vm = spec(Power::Running, 1);
        vm.root_volume = Some(root);
        let mut d = DesiredState {
            cloud_id: Uuid::nil(),
            generation: 1,
            instances: vec![vm.clone()],
            requests: vec![],
            report_interval_secs: 3,
            deleted: vec![],
            volumes: vec![],
            deleted_volumes: vec![],
            exports: Vec::new(),
            chains: Vec::new(),
        };
        // The volume is not desired yet (no file): the VM waits, stopped.
        host.apply(&d);
        let t0 = Instant::now();
        for t in [0, 200, 1200] {
            host.step_all(t0 + ms(t));
        }
        assert_eq!(host.report().0[0].state, ObservedState::Stopped);
        // Its file is made (an overlay on the image): the VM boots.
        d.volumes = vec![DesiredVolume {
            id: root,
            name: "db-root".into(),
            size_bytes: 32 << 20,
            snapshots: Vec::new(),
            deleted_snapshots: Vec::new(),
            revert: None,
            clone_from: None,
            image: Some(vm.image.clone()),
            import: None,
        }];
        host.apply(&d);
        for t in [1300, 1500, 2500] {
            host.step_all(t0 + ms(t));
        }
        assert_eq!(host.report().0[0].state, ObservedState::Running);
        assert_eq!(host.volume_files().len(), 1);
        // The instance deleted: the VM goes, the root volume's file stays.
        d.instances.clear();
        d.deleted = vec![vm.id];
        host.apply(&d);
        host.step_all(t0 + ms(3000));
        assert!(host.report().0.is_empty());
        let files = host.volume_files();
        assert_eq!((files.len(), files[0].id), (1, root));
    });
}
