//! Where things are: the workspace, the built binaries, the test image.

use std::path::PathBuf;

/// The workspace root (two levels above this crate).
pub fn workspace_root() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.parent()
        .and_then(|p| p.parent())
        .map(PathBuf::from)
        .unwrap_or(here)
}

/// A binary built by `make build` (`target/debug/NAME`), or from
/// `$CM_BIN_DIR` when set.
pub fn bin(name: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os("CM_BIN_DIR") {
        return PathBuf::from(dir).join(name);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    target.join("debug").join(name)
}

/// The tiny test image built by `make image` (`var/images/cm-test`), or
/// `$CM_TEST_IMAGE_DIR`.
pub fn image_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CM_TEST_IMAGE_DIR") {
        return PathBuf::from(dir);
    }
    workspace_root().join("var").join("images").join("cm-test")
}

/// The test guest as a bootable disk (`scripts/build-test-disk.sh`, made by
/// `make image` as `var/images/cm-test-disk.qcow2`), built from the test
/// image when it is missing or stale (cached: at once when `make image`
/// built it).
pub fn test_disk() -> PathBuf {
    let root = workspace_root();
    let out = root.join("var/images/cm-test-disk.qcow2");
    let st = std::process::Command::new("bash")
        .arg(root.join("scripts/build-test-disk.sh"))
        .arg(&out)
        .arg(image_dir())
        .status()
        .expect("running build-test-disk.sh");
    assert!(st.success(), "building the test disk failed (make image)");
    out
}
