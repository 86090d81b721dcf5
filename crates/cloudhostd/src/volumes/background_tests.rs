//! Exports and imports as the volume passes run them (background tasks),
//! against a stand-in master: a transient failure is tried again and not
//! reported, a refusal is reported, a sent export leaves no file; a bad
//! import is the volume's error with no file, a good one makes the file.

use super::exports::{self, Export};
use super::test_master::master;
use super::*;
use crate::client::Master;
use crate::images::ImageCache;
use crate::vm::VmContext;
use cm_api::agent::{DesiredExport, DiskImport, DiskRef};
use cm_api::words::ResolvedAccel;
use std::time::Duration;

fn context(data: &Path, base: &str) -> Arc<VmContext> {
    let vols = Volumes::open(&data.join("volumes"), &data.join("instances")).unwrap();
    let master = Arc::new(Master::new(base, "tok".into()).unwrap());
    Arc::new(
        VmContext::new(
            PathBuf::from("qemu-system-x86_64"),
            data.join("instances"),
            ImageCache::new(data.join("images")),
            master,
            ResolvedAccel::Tcg,
            "127.0.0.1".into(),
            "10.0.2.2:8107".into(),
        )
        .with_volumes(Arc::new(vols)),
    )
}

fn volume(id: Uuid, import: Option<DiskImport>) -> DesiredVolume {
    DesiredVolume {
        id,
        name: "v".into(),
        size_bytes: 32 << 20,
        snapshots: Vec::new(),
        deleted_snapshots: Vec::new(),
        revert: None,
        clone_from: None,
        image: None,
        import,
    }
}

async fn until<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    for _ in 0..300 {
        if let Some(t) = check() {
            return t;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

fn export_state(ctx: &VmContext, id: Uuid) -> Option<Export> {
    ctx.volumes.state().exports.get(&id).cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_are_sent_retried_when_transient_and_reported_when_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let busy = br#"{"error":{"code":"internal","message":"disk full for a moment"}}"#.to_vec();
    let no = br#"{"error":{"code":"body_too_large","message":"too big"}}"#.to_vec();
    let (base, seen) = master(vec![(500, busy), (200, b"{}".to_vec()), (413, no)]).await;
    let ctx = context(tmp.path(), &base);
    let (v, missing) = (Uuid::new_v4(), Uuid::new_v4());
    files::create(ctx.volumes.dir(), v, 32 << 20).unwrap();
    let of = |disk| DiskRef {
        of: cm_api::snapshot::SnapshotOf::Volume,
        disk,
        backup: None,
    };
    let (e1, e2) = (Uuid::new_v4(), Uuid::new_v4());
    let e = vec![
        DesiredExport {
            id: e1,
            disk: of(v),
        },
        DesiredExport {
            id: e2,
            disk: of(missing),
        },
    ];
    ctx.volumes.want_roles(&e, HashMap::new());
    ctx.volumes.want(&[volume(v, None)], &[]);
    exports::start(&ctx);
    // The missing disk: refused, reported. The other: a 500, forgotten
    // (not reported) to be tried again.
    until("both exports tried", || {
        (export_state(&ctx, e1).is_none()
            && matches!(export_state(&ctx, e2), Some(Export::Failed(_))))
        .then_some(())
    })
    .await;
    let errs = ctx.volumes.export_errors();
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].error.contains("no file"), "{errs:?}");
    let flat = ctx.volumes.exports_dir().join(format!("{e1}.qcow2"));
    assert!(flat.exists(), "kept for the next try");
    // The next pass: sent, its file removed; the refused one not tried again.
    exports::start(&ctx);
    until("the export sent", || {
        (export_state(&ctx, e1) == Some(Export::Sent)).then_some(())
    })
    .await;
    assert!(!flat.exists());
    assert_eq!(ctx.volumes.export_errors().len(), 1);
    // The master's refusal of a new one is reported as such.
    let e3 = Uuid::new_v4();
    ctx.volumes.want_roles(
        &[DesiredExport {
            id: e3,
            disk: of(v),
        }],
        HashMap::new(),
    );
    exports::start(&ctx);
    let err = until("the refusal", || match export_state(&ctx, e3) {
        Some(Export::Failed(e)) => Some(e),
        _ => None,
    })
    .await;
    assert!(err.contains("the master refused it"), "{err}");
    // Exports no longer listed are forgotten.
    assert!(export_state(&ctx, e1).is_none() && export_state(&ctx, e2).is_none());
    let seen = seen.await.unwrap();
    assert_eq!(seen.len(), 3);
    let (sha, _) = transfers::sha256_file(&{
        let f = tmp.path().join("sent.qcow2");
        std::fs::write(&f, &seen[1].body).unwrap();
        f
    })
    .unwrap();
    assert!(seen[1].head.contains(&format!("x-cm-sha256: {sha}")));
    assert_eq!(
        files::virtual_size(&tmp.path().join("sent.qcow2")).unwrap(),
        32 << 20
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_that_fails_is_the_volumes_error_and_is_tried_again() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src.qcow2");
    files::create(tmp.path(), Uuid::nil(), 48 << 20).unwrap();
    std::fs::rename(files::path(tmp.path(), Uuid::nil()), &src).unwrap();
    let good = std::fs::read(&src).unwrap();
    let (sha, size) = transfers::sha256_file(&src).unwrap();
    let mut bad = good.clone();
    bad[0] ^= 0xff;
    let (base, _seen) = master(vec![(200, bad), (200, good.clone())]).await;
    let ctx = context(tmp.path(), &base);
    let (v, gone) = (Uuid::new_v4(), Uuid::new_v4());
    let imp = DiskImport {
        transfer: Uuid::new_v4(),
        size,
        sha256: sha,
    };
    // A volume also in deleted_volumes (moved away) is never imported.
    ctx.volumes.want(
        &[volume(v, Some(imp.clone())), volume(gone, Some(imp))],
        &[gone],
    );
    making::start(&ctx);
    let making = || ctx.volumes.state().making.clone();
    until("the import tried", || making().is_empty().then_some(())).await;
    ctx.volumes.converge(&[]);
    let r = ctx.volumes.report();
    let o = r.iter().find(|o| o.id == v).unwrap();
    assert_eq!(o.size_bytes, 0);
    assert!(o.error.as_deref().unwrap().contains("sha256"), "{o:?}");
    let file = ctx.volumes.path(v);
    assert!(!file.exists() && !transfers::part_of(&file).exists());
    assert!(r.iter().all(|o| o.id != gone), "{r:?}");
    // The next pass tries again: the file, the error gone.
    making::start(&ctx);
    until("the import done", || {
        (making().is_empty() && file.exists()).then_some(())
    })
    .await;
    ctx.volumes.converge(&[]);
    let r = ctx.volumes.report();
    let o = r.iter().find(|o| o.id == v).unwrap();
    assert_eq!((o.size_bytes, o.error.clone()), (48 << 20, None), "{o:?}");
    assert_eq!(std::fs::read(&file).unwrap(), good);
    assert!(!ctx.volumes.path(gone).exists());
}
