use super::*;
use std::os::unix::fs::PermissionsExt;

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn mode_of(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn content_is_replaced_whole_and_no_temporary_file_stays() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("state.json");
    write_atomic(&p, b"a much longer first content", 0o644).unwrap();
    write_atomic(&p, b"short", 0o644).unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), b"short");
    assert_eq!(names(d.path()), ["state.json"]);
}

#[test]
fn the_mode_is_the_one_given_whatever_the_umask_or_the_old_file() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("token");
    std::fs::write(&p, "old, world-readable").unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o666)).unwrap();
    write_atomic(&p, b"secret", 0o600).unwrap();
    assert_eq!(mode_of(&p), 0o600);
    // 0o775 is more than the usual umask (022) lets through.
    write_atomic(&p, b"script", 0o775).unwrap();
    assert_eq!(mode_of(&p), 0o775);
}

#[test]
fn an_error_leaves_the_target_and_no_temporary_file() {
    let d = tempfile::tempdir().unwrap();
    // A non-empty directory cannot be renamed over.
    let p = d.path().join("busy");
    std::fs::create_dir(&p).unwrap();
    std::fs::write(p.join("inside"), "x").unwrap();
    let err = write_atomic(&p, b"new", 0o644).unwrap_err();
    assert!(p.is_dir(), "{err}");
    assert_eq!(names(d.path()), ["busy"]);
}

#[test]
fn a_file_dropped_without_commit_is_removed_and_the_target_kept() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("image.qcow2");
    std::fs::write(&p, "old").unwrap();
    let mut f = AtomicFile::create(&p, 0o644).unwrap();
    f.file().write_all(b"half a downl").unwrap();
    assert_eq!(names(d.path()).len(), 2);
    drop(f);
    assert_eq!(std::fs::read(&p).unwrap(), b"old");
    assert_eq!(names(d.path()), ["image.qcow2"]);
}

#[test]
fn write_at_follows_no_link_for_the_temporary_file_and_refuses_paths() {
    let d = tempfile::tempdir().unwrap();
    let dir =
        rustix::fs::open(d.path(), OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap();
    write_atomic_at(&dir, "conf", b"x=1\n", 0o640).unwrap();
    assert_eq!(std::fs::read(d.path().join("conf")).unwrap(), b"x=1\n");
    assert_eq!(mode_of(&d.path().join("conf")), 0o640);
    for bad in ["", ".", "..", "a/b"] {
        let e = write_atomic_at(&dir, bad, b"", 0o644).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{bad:?}");
    }
    assert_eq!(names(d.path()), ["conf"]);
}

#[test]
fn persist_publishes_a_file_written_elsewhere() {
    let d = tempfile::tempdir().unwrap();
    let tmp = d.path().join("disk.qcow2.part");
    let target = d.path().join("disk.qcow2");
    std::fs::write(&tmp, "qcow").unwrap();
    persist(&tmp, &target).unwrap();
    assert_eq!(std::fs::read(&target).unwrap(), b"qcow");
    assert_eq!(names(d.path()), ["disk.qcow2"]);
}

/// Set in the child of `a_crash_before_the_rename_leaves_the_old_file`.
const CRASH_DIR: &str = "DURABLE_FS_TEST_CRASH_DIR";

/// A real crash: this test runs itself again as a child process which
/// writes the new content and aborts before the commit (no destructor
/// runs, as on a kill -9 or a power cut after the write).
#[test]
fn a_crash_before_the_rename_leaves_the_old_file() {
    if let Some(dir) = std::env::var_os(CRASH_DIR) {
        let p = Path::new(&dir).join("state");
        let mut f = AtomicFile::create(&p, 0o644).unwrap();
        f.file().write_all(b"new").unwrap();
        f.file().sync_all().unwrap();
        std::process::abort();
    }
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("state");
    write_atomic(&p, b"old", 0o644).unwrap();
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "tests::a_crash_before_the_rename_leaves_the_old_file",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CRASH_DIR, d.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(!status.success(), "the child should have aborted");
    assert_eq!(std::fs::read(&p).unwrap(), b"old");
    // The crash left its temporary file (nothing ran to remove it); the
    // next write does not trip over it.
    assert_eq!(names(d.path()).len(), 2);
    write_atomic(&p, b"after", 0o644).unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), b"after");
}
