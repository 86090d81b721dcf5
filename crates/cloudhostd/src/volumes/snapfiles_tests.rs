//! A disk's snapshots with real qemu-img on a real directory.

use super::*;
use crate::volumes::files;
use std::process::Command;

/// Write `data` at offset 0 of a qcow2 file (qemu-io), as a guest would.
fn write(disk: &Path, data: u8) {
    let out = Command::new("qemu-io")
        .args(["-f", "qcow2", "-c", &format!("write -P {data} 0 64k")])
        .arg(disk)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

/// Whether the first 64 KiB of a qcow2 file are all `data`.
fn reads(disk: &Path, data: u8) -> bool {
    let out = Command::new("qemu-io")
        .args(["-f", "qcow2", "-c", &format!("read -P {data} 0 64k")])
        .arg(disk)
        .output()
        .unwrap();
    out.status.success()
        && !String::from_utf8_lossy(&out.stdout).contains("Pattern verification failed")
}

#[test]
fn snapshots_are_taken_listed_reverted_once_cloned_and_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let vol = Uuid::new_v4();
    files::create(dir.path(), vol, 8 << 20).unwrap();
    let disk = files::path(dir.path(), vol);
    write(&disk, 1);
    let (s1, s2) = (Uuid::new_v4(), Uuid::new_v4());
    take_offline(&disk, s1).unwrap();
    take_offline(&disk, s1).unwrap(); // again: kept, not doubled
    assert_eq!(tags(&disk).unwrap(), vec![snapshot_tag(s1)]);
    write(&disk, 2);
    take_offline(&disk, s2).unwrap();
    assert_eq!(tags(&disk).unwrap().len(), 2);
    write(&disk, 3);

    // Revert to s1 as gen 1: the old content; applied once.
    assert_eq!(reverted_gen(&disk).unwrap(), 0);
    assert!(revert(&disk, s1, 1).unwrap());
    assert!(reads(&disk, 1));
    assert_eq!(reverted_gen(&disk).unwrap(), 1);
    write(&disk, 4);
    // The same gen again (a restarted agent, the same desired state): nothing.
    assert!(!revert(&disk, s1, 1).unwrap());
    assert!(reads(&disk, 4), "a gen is applied once");
    // A later gen to s2.
    assert!(revert(&disk, s2, 2).unwrap());
    assert!(reads(&disk, 2));
    // A snapshot the disk does not hold: an error, the gen not applied.
    let err = revert(&disk, Uuid::new_v4(), 3).unwrap_err().to_string();
    assert!(err.contains("no snapshot"), "{err}");
    assert_eq!(reverted_gen(&disk).unwrap(), 2);

    // Clone s1 into a new volume: a standalone qcow2 with s1's content.
    let copy = files::path(dir.path(), Uuid::new_v4());
    clone(&disk, s1, &copy).unwrap();
    assert!(reads(&copy, 1));
    assert!(tags(&copy).unwrap().is_empty());
    assert_eq!(files::virtual_size(&copy).unwrap(), 8 << 20);
    assert!(!copy.with_extension("qcow2.part").exists());
    let err = clone(
        &disk,
        Uuid::new_v4(),
        &files::path(dir.path(), Uuid::new_v4()),
    );
    assert!(err.unwrap_err().to_string().contains("no snapshot"));

    delete_offline(&disk, s1).unwrap();
    delete_offline(&disk, s1).unwrap(); // gone already: fine
    assert_eq!(tags(&disk).unwrap(), vec![snapshot_tag(s2)]);
}

#[test]
fn the_record_beside_a_disk_survives_and_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join(format!("{}.qcow2", Uuid::new_v4()));
    assert!(record(&disk).unwrap().is_empty());
    let mut r = Record::new();
    let id = Uuid::new_v4();
    r.insert(
        id,
        Taken {
            consistency: Some(Consistency::Offline),
            size_bytes: 5,
        },
    );
    save_record(&disk, &r).unwrap();
    assert_eq!(record(&disk).unwrap(), r);
    save_record(&disk, &Record::new()).unwrap();
    assert!(!disk.with_extension("snaps").exists());
    // Garbage or a huge file: an error, no panic.
    std::fs::write(disk.with_extension("revert"), b"x").unwrap();
    reverted_gen(&disk).unwrap_err();
    std::fs::write(
        disk.with_extension("snaps"),
        vec![b' '; usize::try_from(MAX_RECORD + 2).unwrap()],
    )
    .unwrap();
    assert!(record(&disk).unwrap_err().to_string().contains("too big"));
    remove_beside(&disk).unwrap();
    assert_eq!(reverted_gen(&disk).unwrap(), 0);
}
