//! The engine on small qcow2 files with the real qemu-img, qemu-io and
//! qemu-storage-daemon: data written with `qemu-io`, read back after a
//! restore (`read -P`, `qemu-img compare`).

use super::img::{self, Bitmap};
use super::*;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const MIB: u64 = 1 << 20;
const T: Duration = Duration::from_secs(60);

pub(crate) fn qemu_io(file: &Path, cmd: &str) -> String {
    let out = Command::new("qemu-io")
        .args(["-f", "qcow2", "-c", cmd])
        .arg(file)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && !text.contains("verification failed"),
        "qemu-io {cmd} on {}: {text}",
        file.display()
    );
    text
}

fn disk(dir: &Path, mib: u64) -> std::path::PathBuf {
    let d = dir.join("disk.qcow2");
    img::create(&d, mib * MIB, None).unwrap();
    d
}

pub(crate) fn same(a: &Path, b: &Path) -> bool {
    Command::new("qemu-img")
        .args(["compare", "-q", "-f", "qcow2", "-F", "qcow2"])
        .arg(a)
        .arg(b)
        .status()
        .unwrap()
        .success()
}

fn full_reason(b: &Backup) -> FullReason {
    match &b.kind {
        BackupKind::Full { reason } => reason.clone(),
        k => panic!("not full: {k:?}"),
    }
}

fn no_parts(chain: &Chain) {
    for e in std::fs::read_dir(chain.dir()).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().to_string();
        assert!(!name.ends_with(".part"), "{name} left");
    }
}

#[test]
fn full_then_offline_incremental_restores_each_point() {
    let tmp = tempfile::tempdir().unwrap();
    let src = disk(tmp.path(), 64);
    qemu_io(&src, "write -P 0x11 0 20M");
    let chain = Chain::open(&tmp.path().join("backups"), "vol").unwrap();

    let b1 = backup(&chain, Source::Offline(&src), T).unwrap();
    assert_eq!(full_reason(&b1), FullReason::FirstInChain);
    assert_eq!(img::info(&src, false).unwrap().bitmap, Bitmap::Consistent);
    assert_eq!(b1.file.seq, 1);

    qemu_io(&src, "write -P 0x22 30M 10M");
    let b2 = backup(&chain, Source::Offline(&src), T).unwrap();
    println!(
        "offline: full {} bytes in {:?}, incremental {} bytes ({:?}) in {:?}",
        b1.file_bytes, b1.took, b2.file_bytes, b2.kind, b2.took
    );
    assert_eq!(
        b2.kind,
        BackupKind::Incremental {
            changed_bytes: 10 * MIB
        }
    );
    assert!(
        b2.file_bytes >= 10 * MIB && b2.file_bytes < 12 * MIB,
        "{}",
        b2.file_bytes
    );
    let i2 = img::info(&b2.file.path, true).unwrap();
    assert_eq!(i2.backing.as_deref(), Some(b1.file.name().as_str()));
    // The daemon closed the disk cleanly: the bitmap is usable again.
    assert_eq!(img::info(&src, false).unwrap().bitmap, Bitmap::Consistent);
    assert_eq!(
        chain.list().unwrap(),
        vec![b1.file.clone(), b2.file.clone()]
    );

    let r1 = tmp.path().join("r1.qcow2");
    chain.flatten(b1.file.id, &r1).unwrap();
    qemu_io(&r1, "read -P 0x11 0 20M");
    qemu_io(&r1, "read -P 0 20M 44M");
    let r2 = tmp.path().join("r2.qcow2");
    chain.flatten(b2.file.id, &r2).unwrap();
    assert!(img::info(&r2, false).unwrap().backing.is_none());
    assert!(same(&r2, &src));
    qemu_io(&r2, "read -P 0x22 30M 10M");

    let d = chain.details().unwrap();
    assert_eq!(
        d.iter()
            .map(|d| (d.full, d.virtual_size))
            .collect::<Vec<_>>(),
        vec![(true, 64 * MIB), (false, 64 * MIB)]
    );
    assert_eq!(d[1].file_bytes, b2.file_bytes);
    assert_eq!(d[0].file, b1.file);

    // Nothing written since: an empty increment.
    let b3 = backup(&chain, Source::Offline(&src), T).unwrap();
    assert_eq!(b3.kind, BackupKind::Incremental { changed_bytes: 0 });
    no_parts(&chain);
}

#[test]
fn without_a_usable_bitmap_a_backup_is_full_and_says_why() {
    let tmp = tempfile::tempdir().unwrap();
    let src = disk(tmp.path(), 16);
    let chain = Chain::open(&tmp.path().join("backups"), "vol").unwrap();
    qemu_io(&src, "write -P 0x33 0 1M");
    backup(&chain, Source::Offline(&src), T).unwrap();

    // Missing.
    img::bitmap(&src, "--remove").unwrap();
    let b = backup(&chain, Source::Offline(&src), T).unwrap();
    assert_eq!(full_reason(&b), FullReason::NoBitmap);
    assert!(img::info(&b.file.path, true).unwrap().backing.is_none());
    assert_eq!(img::info(&src, false).unwrap().bitmap, Bitmap::Consistent);

    // A QEMU killed while it held the disk leaves the bitmap in use.
    let d = super::qsd::Daemon::start(&src, "crashed").unwrap();
    drop(d);
    assert_eq!(img::info(&src, false).unwrap().bitmap, Bitmap::Inconsistent);
    qemu_io(&src, "write -P 0x44 2M 1M");
    let b = backup(&chain, Source::Offline(&src), T).unwrap();
    assert_eq!(full_reason(&b), FullReason::InconsistentBitmap);
    assert_eq!(img::info(&src, false).unwrap().bitmap, Bitmap::Consistent);
    let r = tmp.path().join("r.qcow2");
    chain.flatten(b.file.id, &r).unwrap();
    assert!(same(&r, &src));

    // Resized.
    img::run(
        "resize",
        &["resize".as_ref(), src.as_os_str(), "32M".as_ref()],
    )
    .unwrap();
    let b = backup(&chain, Source::Offline(&src), T).unwrap();
    assert_eq!(
        full_reason(&b),
        FullReason::Resized {
            from: 16 * MIB,
            to: 32 * MIB
        }
    );
    assert!(full_reason(&b).to_string().contains("resized"));
    let next = backup(&chain, Source::Offline(&src), T).unwrap();
    assert_eq!(next.kind, BackupKind::Incremental { changed_bytes: 0 });
    assert_eq!(chain.list().unwrap().len(), 5);
}

#[test]
fn retention_keeps_the_newest_and_each_still_restores() {
    let tmp = tempfile::tempdir().unwrap();
    let src = disk(tmp.path(), 16);
    let chain = Chain::open(&tmp.path().join("backups"), "vol").unwrap();
    let mut made = Vec::new();
    for (i, pattern) in [0x51u8, 0x52, 0x53, 0x54, 0x55].iter().enumerate() {
        qemu_io(&src, &format!("write -P {pattern:#x} {}M 1M", i * 2));
        let b = backup(&chain, Source::Offline(&src), T).unwrap();
        let copy = tmp.path().join(format!("at{i}.qcow2"));
        img::convert(&src, &copy).unwrap();
        made.push((b.file.id, copy));
    }
    assert!(matches!(chain.retain(0), Err(BackupError::BadKeep)));
    assert_eq!(chain.retain(5).unwrap(), Vec::<uuid::Uuid>::new());
    let removed = chain.retain(3).unwrap();
    assert_eq!(removed, vec![made[0].0, made[1].0]);
    let kept = chain.list().unwrap();
    assert_eq!(
        kept.iter().map(|f| f.id).collect::<Vec<_>>(),
        vec![made[2].0, made[3].0, made[4].0]
    );
    assert!(img::info(&kept[0].path, true).unwrap().backing.is_none());
    for (id, copy) in &made[2..] {
        let r = tmp.path().join(format!("r-{id}.qcow2"));
        chain.flatten(*id, &r).unwrap();
        assert!(same(&r, copy), "backup {id}");
    }
    assert!(matches!(
        chain.flatten(made[0].0, &tmp.path().join("gone.qcow2")),
        Err(BackupError::NoSuchBackup(_))
    ));
    // The chain goes on after retention.
    qemu_io(&src, "write -P 0x66 12M 1M");
    let b = backup(&chain, Source::Offline(&src), T).unwrap();
    assert!(matches!(b.kind, BackupKind::Incremental { .. }), "{b:?}");
    let r = tmp.path().join("last.qcow2");
    chain.flatten(b.file.id, &r).unwrap();
    assert!(same(&r, &src));
}

#[test]
fn a_failed_or_cut_short_backup_leaves_no_part_and_the_next_is_right() {
    let tmp = tempfile::tempdir().unwrap();
    let src = disk(tmp.path(), 160);
    let root = tmp.path().join("backups");
    let chain = Chain::open(&root, "vol").unwrap();
    qemu_io(&src, "write -P 0x71 0 1M");
    backup(&chain, Source::Offline(&src), T).unwrap();
    qemu_io(&src, "write -P 0x72 4M 1M");

    // Another program holds the disk: the increment fails before QEMU
    // touched the bitmap; nothing is left and the next one is incremental.
    let holder = super::qsd::Daemon::start(&src, "holder").unwrap();
    let e = backup(&chain, Source::Offline(&src), T).unwrap_err();
    println!("held: {e}");
    no_parts(&chain);
    assert_eq!(chain.pending().unwrap(), None);
    holder.quit().unwrap();
    assert_eq!(chain.list().unwrap().len(), 1);
    let b = backup(&chain, Source::Offline(&src), T).unwrap();
    assert_eq!(b.kind, BackupKind::Incremental { changed_bytes: MIB });
    let r = tmp.path().join("r.qcow2");
    chain.flatten(b.file.id, &r).unwrap();
    assert!(same(&r, &src));

    // A job cut short (cancelled at its deadline) after the new file was
    // made: the file is removed, QEMU gave the bitmap back, the next
    // increment holds both changes.
    // (Enough data that the job cannot end before its first look.)
    qemu_io(&src, "write -P 0x73 0 150M");
    let e = backup(&chain, Source::Offline(&src), Duration::ZERO).unwrap_err();
    println!("cut short: {e}");
    assert!(e.to_string().contains("cancelled"), "{e}");
    no_parts(&chain);
    assert_eq!(chain.pending().unwrap(), None);
    assert_eq!(chain.list().unwrap().len(), 2);
    qemu_io(&src, "write -P 0x74 150M 1M");
    let b = backup(&chain, Source::Offline(&src), T).unwrap();
    assert_eq!(
        b.kind,
        BackupKind::Incremental {
            changed_bytes: 151 * MIB
        }
    );
    let r = tmp.path().join("r1.qcow2");
    chain.flatten(b.file.id, &r).unwrap();
    assert!(same(&r, &src));

    // A crash mid-backup: a `.part` and `pending` left. Reopened, the part
    // is gone and the next backup is full, saying so.
    let dead = uuid::Uuid::new_v4();
    let f = chain.next(chain.list().unwrap().last(), dead);
    std::fs::write(Chain::part(&f), b"half").unwrap();
    chain.set_pending(dead).unwrap();
    // And an rsync fetching the chain back, killed: its temporary file.
    let rsync_tmp = chain.dir().join(format!(".{}.Xy12Zq", f.name()));
    std::fs::write(&rsync_tmp, b"half").unwrap();
    drop(chain);
    let chain = Chain::open(&root, "vol").unwrap_or_else(|e| panic!("reopening: {e}"));
    no_parts(&chain);
    assert!(!rsync_tmp.exists(), "an rsync's temporary file left");
    let b = backup(&chain, Source::Offline(&src), T).unwrap();
    assert_eq!(full_reason(&b), FullReason::Interrupted(dead.to_string()));
    assert_eq!(chain.pending().unwrap(), None);
    let r = tmp.path().join("r2.qcow2");
    chain.flatten(b.file.id, &r).unwrap();
    assert!(same(&r, &src));
}
