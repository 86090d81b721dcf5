//! Transfers with real qemu-img and a local HTTP server standing in for the
//! master's `/v1/agent/transfers/{id}` (the agreed HTTP: docs/storage.md).

use super::*;
use crate::volumes::exports;
use crate::volumes::test_master::master;
use crate::volumes::Volumes;
use cm_api::agent::DiskRef;
use cm_api::snapshot::SnapshotOf;
use std::process::Command;
use uuid::Uuid;

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn info(file: &Path) -> serde_json::Value {
    let out = run(
        "qemu-img",
        &["info", "--output=json", "-U", file.to_str().unwrap()],
    );
    serde_json::from_str(&out).unwrap()
}

/// A base image with data, an overlay on it with more data and an internal
/// snapshot: what a root volume or an instance's root disk looks like.
fn layered_disk(dir: &Path) -> PathBuf {
    let base = dir.join("base.qcow2");
    let top = dir.join("top.qcow2");
    let (b, t) = (base.to_str().unwrap(), top.to_str().unwrap());
    run("qemu-img", &["create", "-q", "-f", "qcow2", b, "32M"]);
    run("qemu-io", &["-c", "write -P 0xab 0 1M", b]);
    run(
        "qemu-img",
        &[
            "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", b, t, "64M",
        ],
    );
    run("qemu-io", &["-c", "write -P 0xcd 4M 1M", t]);
    run("qemu-img", &["snapshot", "-c", "cm-s1", t]);
    run("qemu-io", &["-c", "write -P 0xef 8M 1M", t]);
    top
}

#[test]
fn a_disk_is_flattened_into_one_qcow2_without_backing_or_snapshots() {
    let tmp = tempfile::tempdir().unwrap();
    let top = layered_disk(tmp.path());
    assert!(info(&top)["backing-filename"].is_string());
    let flat = tmp.path().join("exports").join("x.qcow2");
    std::fs::create_dir_all(flat.parent().unwrap()).unwrap();
    flatten(&top, &flat).unwrap();
    assert!(!part_of(&flat).exists());
    let i = info(&flat);
    assert_eq!(i["format"], "qcow2");
    assert_eq!(i["virtual-size"], 64u64 << 20);
    assert!(i.get("backing-filename").is_none(), "{i}");
    assert!(i.get("snapshots").is_none(), "{i}");
    // The same guest-visible bytes: the base's, the overlay's, the latest.
    run(
        "qemu-img",
        &[
            "compare",
            "-U",
            top.to_str().unwrap(),
            flat.to_str().unwrap(),
        ],
    );
    // Sparse: 3 MiB of data in a 64 MiB disk.
    let (_, allocated) = super::super::files::stat(&flat).unwrap();
    assert!(allocated < 8 << 20, "{allocated}");
    let (sha, len) = sha256_file(&flat).unwrap();
    assert_eq!(len, std::fs::metadata(&flat).unwrap().len());
    assert_eq!(sha.len(), 64);
    // A missing source: qemu-img's error, nothing left.
    let err = flatten(&tmp.path().join("nope"), &flat.with_file_name("y.qcow2"));
    assert!(err.unwrap_err().to_string().contains("convert"));
    assert!(!flat.with_file_name("y.qcow2").exists());
    assert!(!part_of(&flat.with_file_name("y.qcow2")).exists());
}

#[test]
fn a_disk_a_vm_runs_on_or_that_is_missing_is_not_exported() {
    let tmp = tempfile::tempdir().unwrap();
    let instances = tmp.path().join("instances");
    std::fs::create_dir_all(&instances).unwrap();
    let vols = Volumes::open(&tmp.path().join("volumes"), &instances).unwrap();
    assert_eq!(vols.exports_dir(), tmp.path().join("exports"));
    let (v, vm) = (Uuid::new_v4(), Uuid::new_v4());
    super::super::files::create(vols.dir(), v, 16 << 20).unwrap();
    let of_volume = DiskRef {
        of: SnapshotOf::Volume,
        disk: v,
        backup: None,
    };
    assert_eq!(
        exports::source(&vols, of_volume, None, &[]).unwrap(),
        vols.path(v)
    );
    // This process stands for a QEMU holding the file open (/proc/PID/fd).
    let held = std::fs::File::open(vols.path(v)).unwrap();
    let qemus = [(vm, std::process::id())];
    let err = exports::source(&vols, of_volume, None, &qemus).unwrap_err();
    assert!(err.contains(&format!("instance {vm} runs on it")), "{err}");
    // An instance booting from it as its root volume: the same.
    let of_root = DiskRef {
        of: SnapshotOf::InstanceRoot,
        disk: vm,
        backup: None,
    };
    let err = exports::source(&vols, of_root, Some(v), &qemus).unwrap_err();
    assert!(err.contains("runs on it"), "{err}");
    drop(held);
    assert_eq!(
        exports::source(&vols, of_root, Some(v), &[]).unwrap(),
        vols.path(v)
    );
    // An ephemeral root: its overlay, unless its VM runs or it has none.
    let err = exports::source(&vols, of_root, None, &[]).unwrap_err();
    assert!(err.contains("no root disk"), "{err}");
    let disk = instances.join(vm.to_string()).join("disk.qcow2");
    std::fs::create_dir_all(disk.parent().unwrap()).unwrap();
    super::super::files::create(disk.parent().unwrap(), vm, 16 << 20).unwrap();
    std::fs::rename(super::super::files::path(disk.parent().unwrap(), vm), &disk).unwrap();
    assert_eq!(exports::source(&vols, of_root, None, &[]).unwrap(), disk);
    let err = exports::source(&vols, of_root, None, &[(vm, 1)]).unwrap_err();
    assert!(err.contains("is running"), "{err}");
    // A volume with no file.
    let gone = DiskRef {
        of: SnapshotOf::Volume,
        disk: Uuid::new_v4(),
        backup: None,
    };
    let err = exports::source(&vols, gone, None, &[]).unwrap_err();
    assert!(err.contains("no file"), "{err}");
}

#[tokio::test]
async fn a_flattened_disk_is_put_with_its_sha256_and_a_refusal_is_the_masters_error() {
    let tmp = tempfile::tempdir().unwrap();
    let top = layered_disk(tmp.path());
    let flat = tmp.path().join("flat.qcow2");
    flatten(&top, &flat).unwrap();
    let (sha, size) = sha256_file(&flat).unwrap();
    let err = br#"{"error":{"code":"invalid_input","message":"sha256 mismatch"}}"#.to_vec();
    let (base, seen) = master(vec![(200, b"{}".to_vec()), (422, err)]).await;
    let m = Master::new(&base, "host-token".into()).unwrap();
    let id = Uuid::new_v4();
    let f = tokio::fs::File::open(&flat).await.unwrap();
    m.put_transfer(id, f, size, &sha).await.unwrap();
    let f = tokio::fs::File::open(&flat).await.unwrap();
    let e = m.put_transfer(id, f, size, &sha).await.unwrap_err();
    assert!(
        matches!(&e, ClientError::Api(a) if a.error.code == cm_api::ErrorCode::InvalidInput),
        "{e:?}"
    );
    let seen = seen.await.unwrap();
    let h = &seen[0].head;
    assert!(
        h.starts_with(&format!("put /v1/agent/transfers/{id} ")),
        "{h}"
    );
    assert!(h.contains("authorization: bearer host-token"), "{h}");
    assert!(h.contains(&format!("x-cm-sha256: {sha}")), "{h}");
    assert!(h.contains(&format!("content-length: {size}")), "{h}");
    assert_eq!(seen[0].body, std::fs::read(&flat).unwrap());
}

#[tokio::test]
async fn an_import_is_checked_and_renamed_or_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let top = layered_disk(tmp.path());
    let flat = tmp.path().join("flat.qcow2");
    flatten(&top, &flat).unwrap();
    let bytes = std::fs::read(&flat).unwrap();
    let (sha, size) = sha256_file(&flat).unwrap();
    let mut other = bytes.clone();
    let mid = other.len() / 2;
    other[mid] ^= 1;
    let (base, seen) = master(vec![
        (200, other),
        (200, bytes.clone()),
        (200, bytes.clone()),
        (
            409,
            br#"{"error":{"code":"conflict","message":"not received yet"}}"#.to_vec(),
        ),
    ])
    .await;
    let m = Master::new(&base, "t".into()).unwrap();
    let imp = DiskImport {
        transfer: Uuid::new_v4(),
        size,
        sha256: sha.clone(),
    };
    let dst = tmp.path().join("vol.qcow2");
    // A flipped bit: the sha256 says so, nothing is left.
    let e = import(&m, &imp, &dst).await.unwrap_err();
    assert!(matches!(e, ImportError::Sha { .. }), "{e}");
    assert!(!dst.exists() && !part_of(&dst).exists());
    // Longer than announced: refused, nothing left.
    let short = DiskImport {
        size: size - 1,
        ..imp.clone()
    };
    let e = import(&m, &short, &dst).await.unwrap_err();
    assert!(matches!(e, ImportError::TooLong(_)), "{e}");
    assert!(!dst.exists() && !part_of(&dst).exists());
    // Intact: in place, the same disk.
    import(&m, &imp, &dst).await.unwrap();
    assert!(!part_of(&dst).exists());
    assert_eq!(std::fs::read(&dst).unwrap(), bytes);
    assert_eq!(info(&dst)["virtual-size"], 64u64 << 20);
    // Not there yet at the master: its error, nothing made.
    let dst2 = tmp.path().join("vol2.qcow2");
    let e = import(&m, &imp, &dst2).await.unwrap_err();
    assert!(e.to_string().contains("not received yet"), "{e}");
    assert!(!dst2.exists() && !part_of(&dst2).exists());
    let seen = seen.await.unwrap();
    assert!(seen[0]
        .head
        .starts_with(&format!("get /v1/agent/transfers/{} ", imp.transfer)));
}
