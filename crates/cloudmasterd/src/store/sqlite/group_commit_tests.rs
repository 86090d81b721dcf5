//! Group commit (group_commit.rs): writers queued together share one
//! commit, each sees only its own failure, a failed commit fails them all.

use super::*;
use std::time::{Duration, Instant};

fn disk_store() -> (tempfile::TempDir, std::path::PathBuf, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cloud.db");
    let s = SqliteStore::open(&path).unwrap();
    (dir, path, s)
}

/// Keys `prefix*` a fresh connection (another process's view) can read.
fn committed(path: &Path, prefix: &str) -> Vec<String> {
    let c = Connection::open(path).unwrap();
    let mut st = c
        .prepare("SELECT key FROM settings WHERE key LIKE ?1 || '%' ORDER BY key")
        .unwrap();
    st.query_map([prefix], |r| r.get(0))
        .unwrap()
        .collect::<std::result::Result<_, _>>()
        .unwrap()
}

fn commits(s: &SqliteStore) -> u64 {
    s.conn.lock().unwrap().commits()
}

/// Run `n` writers that all queue for the writer lock while it is held,
/// so that they form one batch; each thread's answer, by index.
fn one_batch<T: Send>(
    s: &SqliteStore,
    n: usize,
    write: impl Fn(usize) -> Result<T> + Sync,
) -> Vec<Result<T>> {
    let held = s.conn.lock().unwrap();
    std::thread::scope(|scope| {
        let threads: Vec<_> = (0..n)
            .map(|i| {
                scope.spawn({
                    let write = &write;
                    move || write(i)
                })
            })
            .collect();
        let began = Instant::now();
        while s.commits.waiting() < n && began.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(s.commits.waiting(), n, "writers did not queue");
        drop(held);
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    })
}

#[test]
fn many_writers_at_once_all_commit_and_a_fresh_connection_reads_them() {
    let (_dir, path, s) = disk_store();
    let (threads, each) = (16, 25);
    let before = commits(&s);
    std::thread::scope(|scope| {
        for t in 0..threads {
            let s = &s;
            scope.spawn(move || {
                for i in 0..each {
                    s.set_setting(&format!("many-{t:02}-{i:03}"), "v").unwrap();
                }
            });
        }
    });
    assert_eq!(committed(&path, "many-").len(), threads * each);
    let used = commits(&s) - before;
    assert!(used <= (threads * each) as u64, "{used} commits");

    // Writers queued together: one commit for all of them.
    let before = commits(&s);
    let answers = one_batch(&s, 12, |i| s.set_setting(&format!("queued-{i:02}"), "v"));
    assert!(answers.iter().all(|a| a.is_ok()));
    assert_eq!(
        commits(&s) - before,
        1,
        "12 queued writers share one commit"
    );
    assert_eq!(committed(&path, "queued-").len(), 12);
}

#[test]
fn a_failing_closure_changes_nothing_while_its_neighbours_commit() {
    let (_dir, path, s) = disk_store();
    let before = commits(&s);
    let answers = one_batch(&s, 10, |i| {
        s.tx(|t| {
            log::set_setting(t, &format!("mixed-{i:02}"), "v")?;
            if i % 3 == 0 {
                return Err(StoreError::Conflict(format!("writer {i} refuses")));
            }
            Ok(i)
        })
    });
    for (i, a) in answers.iter().enumerate() {
        match a {
            Err(StoreError::Conflict(m)) if i % 3 == 0 => assert!(m.contains("refuses")),
            Ok(v) if i % 3 != 0 => assert_eq!(*v, i),
            other => panic!("writer {i}: {other:?}"),
        }
    }
    let want: Vec<String> = (0..10)
        .filter(|i| i % 3 != 0)
        .map(|i| format!("mixed-{i:02}"))
        .collect();
    assert_eq!(committed(&path, "mixed-"), want);
    assert_eq!(commits(&s) - before, 1);
}

#[test]
fn a_commit_that_fails_is_reported_to_every_caller_in_its_batch() {
    let (_dir, path, s) = disk_store();
    // A deferred foreign key is checked at COMMIT: one dangling row makes
    // the whole batch's commit fail.
    s.conn
        .lock()
        .unwrap()
        .execute_batch(
            "CREATE TABLE parent (id INTEGER PRIMARY KEY);
             CREATE TABLE child (p INTEGER REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED);",
        )
        .unwrap();
    let answers = one_batch(&s, 8, |i| {
        s.tx(|t| {
            log::set_setting(t, &format!("doomed-{i}"), "v")?;
            if i == 5 {
                t.execute("INSERT INTO child (p) VALUES (42)", [])?;
            }
            Ok(())
        })
    });
    for (i, a) in answers.iter().enumerate() {
        match a {
            Err(StoreError::Unavailable(m)) => assert!(m.contains("commit failed"), "{m}"),
            other => panic!("writer {i}: {other:?}"),
        }
    }
    assert!(committed(&path, "doomed-").is_empty());
    let c = Connection::open(&path).unwrap();
    let children: i64 = c
        .query_row("SELECT COUNT(*) FROM child", [], |r| r.get(0))
        .unwrap();
    assert_eq!(children, 0);

    // The store goes on: the next write commits.
    s.set_setting("after", "v").unwrap();
    assert_eq!(committed(&path, "after"), vec!["after".to_string()]);
}

/// Writes a second with `writers` threads for `secs`: through `tx` (group
/// commit) or one IMMEDIATE transaction per write (the store before).
fn rate(s: &SqliteStore, writers: usize, secs: f64, grouped: bool) -> f64 {
    let until = Instant::now() + Duration::from_secs_f64(secs);
    let began = Instant::now();
    let done: usize = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..writers)
            .map(|w| {
                scope.spawn(move || {
                    let mut n = 0;
                    while Instant::now() < until && n < 1_000_000 {
                        let key = format!("bench-{grouped}-{writers}-{w}-{n}");
                        if grouped {
                            s.set_setting(&key, "v").unwrap();
                        } else {
                            let c = s.conn.lock().unwrap();
                            let t = rusqlite::Transaction::new_unchecked(
                                &c,
                                TransactionBehavior::Immediate,
                            )
                            .unwrap();
                            log::set_setting(&t, &key, "v").unwrap();
                            t.commit().unwrap();
                        }
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).sum()
    });
    done as f64 / began.elapsed().as_secs_f64()
}

/// Prints commits/s with 1, 8 and 64 writers, before and after group
/// commit, on a store in a temporary directory (the disk `TMPDIR` is on).
/// Figures only: `cargo nextest run -p cloudmasterd --run-ignored only
/// --no-capture group_commit_bench`.
#[test]
#[ignore = "a benchmark: prints figures, asserts nothing"]
fn group_commit_bench() {
    let secs = std::env::var("CM_BENCH_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5.0_f64)
        .clamp(0.5, 60.0);
    println!("writes/s with synchronous=FULL ({secs} s each)");
    println!("writers  one commit per write  group commit  ratio");
    for writers in [1, 8, 64] {
        let (_d1, _p1, before) = disk_store();
        let old = rate(&before, writers, secs, false);
        let (_d2, _p2, after) = disk_store();
        let c0 = commits(&after);
        let new = rate(&after, writers, secs, true);
        let batches = (commits(&after) - c0).max(1);
        println!(
            "{writers:>7}  {old:>20.0}  {new:>12.0}  {:>5.1}x  ({:.1} writes a commit)",
            new / old.max(0.001),
            new * secs / batches as f64
        );
    }
}
