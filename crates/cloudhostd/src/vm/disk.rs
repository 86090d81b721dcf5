//! Instance disks: a qcow2 overlay on the cached base image, made with
//! qemu-img (DESIGN.md §4).

use std::path::Path;
use std::process::Command;

/// Create `overlay` backed by `base` (of format `base_format`), at least
/// `min_size` bytes (0 = the base's size). Made under a temporary name and
/// renamed, so a crash never leaves a half-made disk in place.
pub fn create_overlay(
    base: &Path,
    base_format: &str,
    overlay: &Path,
    min_size: u64,
) -> Result<(), String> {
    let tmp = overlay.with_extension("qcow2.part");
    let _ = std::fs::remove_file(&tmp);
    let mut cmd = Command::new("qemu-img");
    cmd.args(["create", "-q", "-f", "qcow2", "-F", base_format, "-b"])
        .arg(base)
        .arg(&tmp);
    if min_size > 0 {
        cmd.arg(min_size.to_string());
    }
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run qemu-img: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "qemu-img create failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    durable_fs::persist(&tmp, overlay).map_err(|e| format!("{}: {e}", overlay.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlays_are_qcow2_on_their_base() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base.qcow2");
        let ok = Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(&base)
            .arg("64M")
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "qemu-img is needed for this test (make deps)");
        let overlay = dir.path().join("disk.qcow2");
        create_overlay(&base, "qcow2", &overlay, 128 << 20).unwrap();
        let info = Command::new("qemu-img")
            .args(["info", "--output=json", "-U"])
            .arg(&overlay)
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
        assert_eq!(v["format"], "qcow2");
        assert_eq!(v["virtual-size"], 128u64 << 20);
        assert!(v["backing-filename"]
            .as_str()
            .unwrap()
            .ends_with("base.qcow2"));
        let err = create_overlay(
            &dir.path().join("missing"),
            "qcow2",
            &dir.path().join("x.qcow2"),
            0,
        )
        .unwrap_err();
        assert!(err.contains("qemu-img"), "{err}");
    }
}
