//! Syncs with the real rsync and inotify, in temporary directories.

use super::*;

/// A source and a target beside it, and a sync between them.
struct Pair {
    _dir: tempfile::TempDir,
    src: PathBuf,
    dst: PathBuf,
    syncer: Syncer,
}

fn pair(delay_ms: u64, exclude: &[&str], delete: bool) -> (Pair, SyncSpec) {
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
    std::fs::create_dir(&src).unwrap();
    let spec = SyncSpec {
        source: src.to_string_lossy().into_owned(),
        target: dst.to_string_lossy().into_owned(),
        delay_ms,
        exclude: exclude.iter().map(|s| s.to_string()).collect(),
        delete,
    };
    let syncer = Syncer::new(Path::new("/"), Path::new("rsync"));
    (
        Pair {
            _dir: dir,
            src,
            dst,
            syncer,
        },
        spec,
    )
}

/// Wait until `ok` (10 s at most); how long it took.
fn within(what: &str, ok: impl Fn() -> bool) -> Duration {
    let t = Instant::now();
    while !ok() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "{what}: not within 10s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    t.elapsed()
}

fn status(p: &Pair) -> Status {
    p.syncer.statuses().into_values().next().unwrap()
}

fn read(p: &Path) -> Option<String> {
    std::fs::read_to_string(p).ok()
}

#[test]
fn creates_changes_and_deletes_reach_the_target_within_seconds() {
    let (p, spec) = pair(100, &[], true);
    std::fs::write(p.src.join("before"), "1").unwrap();
    p.syncer.reconcile(std::slice::from_ref(&spec));
    within("the first full sync", || p.dst.join("before").exists());
    within("running", || status(&p).state == S::Running);
    let st = p.syncer.states();
    assert_eq!(st[0].name, format!("sync:{}", spec.source));
    assert!(
        st[0]
            .detail
            .as_deref()
            .unwrap_or("")
            .starts_with("last run: 1 file"),
        "{st:?}"
    );

    std::fs::write(p.src.join("new"), "hello").unwrap();
    let t = within("a new file", || {
        read(&p.dst.join("new")).as_deref() == Some("hello")
    });
    println!("a new file reached the target in {t:?}");
    std::fs::write(p.src.join("new"), "changed").unwrap();
    within("a change", || {
        read(&p.dst.join("new")).as_deref() == Some("changed")
    });
    // A new subdirectory, then (once synced) a file in it: seen through
    // the new directory's own watch.
    std::fs::create_dir_all(p.src.join("a/b")).unwrap();
    within("new directories", || p.dst.join("a/b").is_dir());
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(p.src.join("a/b/deep"), "deep").unwrap();
    let t = within("a file in a new subdirectory", || {
        p.dst.join("a/b/deep").exists()
    });
    println!("a file in a new subdirectory reached the target in {t:?}");
    std::fs::rename(p.src.join("a"), p.src.join("moved")).unwrap();
    within("a moved directory", || {
        p.dst.join("moved/b/deep").exists() && !p.dst.join("a").exists()
    });
    std::fs::write(p.src.join("moved/b/later"), "x").unwrap();
    within("a file in a moved directory", || {
        p.dst.join("moved/b/later").exists()
    });
    std::fs::remove_file(p.src.join("new")).unwrap();
    std::fs::remove_dir_all(p.src.join("moved")).unwrap();
    within("deletions", || {
        !p.dst.join("new").exists() && !p.dst.join("moved").exists()
    });
    assert!(p.dst.join("before").exists());
}

#[test]
fn excludes_are_not_copied_and_delete_false_keeps_what_is_gone() {
    let (p, spec) = pair(50, &["*.tmp", "cache/"], false);
    std::fs::create_dir(p.src.join("cache")).unwrap();
    std::fs::write(p.src.join("cache/big"), "x").unwrap();
    p.syncer.reconcile(std::slice::from_ref(&spec));
    within("running", || status(&p).state == S::Running);
    std::fs::write(p.src.join("keep"), "k").unwrap();
    std::fs::write(p.src.join("scratch.tmp"), "t").unwrap();
    within("the kept file", || p.dst.join("keep").exists());
    std::fs::remove_file(p.src.join("keep")).unwrap();
    std::fs::write(p.src.join("marker"), "m").unwrap();
    within("a later file", || p.dst.join("marker").exists());
    assert!(p.dst.join("keep").exists(), "delete = false removed a file");
    assert!(!p.dst.join("scratch.tmp").exists() && !p.dst.join("cache").exists());
}

#[test]
fn a_burst_of_a_thousand_writes_is_a_few_runs() {
    let (p, spec) = pair(500, &[], true);
    p.syncer.reconcile(std::slice::from_ref(&spec));
    within("the first sync", || status(&p).runs == 1);
    let t = Instant::now();
    for i in 0..1000 {
        std::fs::write(p.src.join(format!("f{i}")), i.to_string()).unwrap();
    }
    let wrote = t.elapsed();
    within("all 1000 files", || {
        std::fs::read_dir(&p.dst).map(|d| d.count()).unwrap_or(0) == 1000
    });
    // Let a run that may still be due happen, then count.
    std::thread::sleep(Duration::from_millis(1500));
    let runs = status(&p).runs - 1;
    println!("1000 writes in {wrote:?}: {runs} rsync runs");
    // At most one run per longest wait (2 s here) while the burst lasts
    // (a slow machine writes slower), and the runs after it.
    let most = 4 + wrote.as_secs() / 2;
    assert!(
        (1..=most).contains(&runs),
        "{runs} runs for one burst of {wrote:?}"
    );
    assert_eq!(read(&p.dst.join("f999")).as_deref(), Some("999"));
}

#[test]
fn a_stopped_sync_copies_nothing_more() {
    let (p, spec) = pair(50, &[], true);
    p.syncer.reconcile(std::slice::from_ref(&spec));
    within("running", || status(&p).state == S::Running);
    // Changed: the old one stops, the new one runs.
    let mut slower = spec.clone();
    slower.delay_ms = 100;
    p.syncer.reconcile(std::slice::from_ref(&slower));
    within("running again", || status(&p).state == S::Running);
    p.syncer.reconcile(&[]);
    assert!(p.syncer.states().is_empty());
    std::fs::write(p.src.join("after-stop"), "x").unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        !p.dst.join("after-stop").exists(),
        "a stopped sync still copies"
    );
}

#[test]
fn a_failing_rsync_is_reported_and_retried_until_it_works() {
    let (mut p, mut spec) = pair(50, &[], true);
    // The target's parent does not exist yet: rsync fails.
    p.dst = p.dst.join("sub");
    spec.target = p.dst.to_string_lossy().into_owned();
    std::fs::write(p.src.join("f"), "x").unwrap();
    p.syncer.reconcile(std::slice::from_ref(&spec));
    within("failed", || status(&p).state == S::Failed);
    let s = status(&p);
    let detail = s.detail.unwrap_or_default();
    assert!(
        detail.contains("rsync failed") && detail.contains("retrying in"),
        "{detail}"
    );
    std::fs::create_dir(p.dst.parent().unwrap()).unwrap();
    within("running after a retry", || status(&p).state == S::Running);
    assert!(p.dst.join("f").exists());
    // Without rsync at all: failed, with why.
    let none = Syncer::new(Path::new("/"), Path::new("/nonexistent/rsync"));
    none.reconcile(std::slice::from_ref(&spec));
    within("failed", || {
        none.states()[0]
            .detail
            .as_deref()
            .is_some_and(|d| d.contains("cannot run rsync"))
    });
}

#[test]
fn a_source_that_goes_away_fails_and_comes_back() {
    let (p, spec) = pair(50, &[], true);
    std::fs::write(p.src.join("f"), "x").unwrap();
    p.syncer.reconcile(std::slice::from_ref(&spec));
    within("running", || status(&p).state == S::Running);
    std::fs::remove_dir_all(&p.src).unwrap();
    within("failed", || status(&p).state == S::Failed);
    // rsync failed on the missing source: the copy is untouched.
    assert!(p.dst.join("f").exists());
    std::fs::create_dir(&p.src).unwrap();
    std::fs::write(p.src.join("g"), "y").unwrap();
    within("running again", || {
        status(&p).state == S::Running && p.dst.join("g").exists()
    });
}

#[test]
fn long_details_are_cut_on_a_character_boundary() {
    assert_eq!(short("fine"), "fine");
    let cut = short(&"é".repeat(600));
    assert!(
        cut.len() <= MAX_DETAIL && cut.ends_with("..."),
        "{}",
        cut.len()
    );
}
