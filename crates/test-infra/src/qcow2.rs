//! Disk files as the storage tests look at them from outside a guest, with
//! the real qemu-io and qemu-img: a pattern written at an offset, a copy
//! of a disk as it is now, and whether two disks read the same.

use crate::wait::wait_until;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// `qemu-io -c 'write -P BYTE OFFSET LEN'` on a file no VM holds; retried
/// a few seconds, as the agent may be reading the file with a lock.
pub fn write_pattern(file: &Path, byte: u8, offset: u64, len: u64) {
    let out = wait_until("qemu-io writes", Duration::from_secs(10), || {
        let out = Command::new("qemu-io")
            .args([
                "-f",
                "qcow2",
                "-c",
                &format!("write -P {byte} {offset} {len}"),
            ])
            .arg(file)
            .output()
            .unwrap();
        out.status.success().then_some(out)
    });
    assert!(out.is_ok(), "{out:?}");
}

/// A standalone copy of `file` as it reads now, at `dst` (shared lock:
/// the agent may hold the file).
pub fn copy(file: &Path, dst: &Path) {
    let out = Command::new("qemu-img")
        .args(["convert", "-U", "-f", "qcow2", "-O", "qcow2"])
        .arg(file)
        .arg(dst)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

/// `qemu-img compare`: the two disks read the same (panics with how they
/// differ otherwise).
pub fn assert_same(a: &Path, b: &Path) {
    let out = Command::new("qemu-img")
        .args(["compare", "-U", "-f", "qcow2", "-F", "qcow2"])
        .arg(a)
        .arg(b)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{} and {} differ: {}{}",
        a.display(),
        b.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
