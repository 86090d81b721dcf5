//! The first report after an agent restart waits for the VMs it found
//! (two CI flakes came from a report without them: the master took an
//! adopted VM for gone, purged a deleted one before its files went and
//! counted a stop done while its guest still shut down).

use super::VmContext;
use crate::client::Master;
use crate::images::ImageCache;
use cm_api::words::ResolvedAccel;
use std::path::PathBuf;
use std::sync::Arc;
use uuid::Uuid;

#[test]
fn a_report_waits_for_the_vms_found_at_start() {
    let tmp = tempfile::tempdir().unwrap();
    let master = Arc::new(Master::new("http://127.0.0.1:9", "tok".into()).unwrap());
    let ctx = VmContext::new(
        PathBuf::from("qemu-system-x86_64"),
        tmp.path().join("instances"),
        ImageCache::new(tmp.path().join("images")),
        master,
        ResolvedAccel::Tcg,
        "127.0.0.1".into(),
        "10.0.2.2:8107".into(),
    );
    // Nothing found: a report is complete at once.
    assert!(ctx.settled());
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    ctx.adopting(a);
    ctx.adopting(b);
    assert!(!ctx.settled());
    // Each actor says its state (or is gone): then it is.
    ctx.unpublish(a);
    assert!(!ctx.settled());
    ctx.unpublish(b);
    assert!(ctx.settled());
    // One that never says it does not hold reports back for ever.
    ctx.adopting(Uuid::new_v4());
    ctx.adopting_set().1 = Some(std::time::Instant::now() - super::ADOPT_WAIT);
    assert!(ctx.settled());
}
