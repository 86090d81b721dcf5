//! Group commit: writers that arrive together share one IMMEDIATE
//! transaction, and so one commit and one fsync (`synchronous=FULL`).
//!
//! Each caller takes the writer lock, opens the shared transaction if none
//! is open, and runs its closure inside a SAVEPOINT on its own thread. A
//! closure that fails rolls back its savepoint only, and its error is
//! returned at once. A closure that succeeds either commits the batch (when
//! no other writer is waiting for the lock, or the batch is full or old) or
//! leaves the commit to the next writer and waits until the batch is
//! committed, returning that commit's result: no caller hears "done" before
//! its work is durable, and a failed commit is reported to every caller in
//! the batch. PostgreSQL's `commit_delay` and InnoDB's binlog group commit
//! make the same trade; here nobody sleeps to gather a batch, the batch is
//! whoever queued up during the previous commit.

use crate::store::{Result, StoreError};
use rusqlite::Connection;
use std::collections::HashMap;
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// A batch commits once it holds this many writes, even while more wait...
const MAX_BATCH: usize = 256;
/// ... or once it has been open this long: under endless load every caller
/// still hears back within about this plus one commit.
const MAX_BATCH_AGE: Duration = Duration::from_millis(50);

/// The writer connection and the batch it may have open.
pub struct Writer {
    conn: Connection,
    open: Option<Batch>,
    next_id: u64,
    /// Results of finished batches that callers still wait to read.
    outcomes: HashMap<u64, Outcome>,
    /// Batches committed since the store opened: the store's generation
    /// (`Store::generation`), read without the lock.
    commits: Arc<AtomicU64>,
}

struct Batch {
    id: u64,
    opened: Instant,
    /// Closures whose work is in the batch.
    writes: usize,
    /// Callers waiting for the batch's commit.
    waiters: usize,
}

struct Outcome {
    result: std::result::Result<(), String>,
    waiters: usize,
}

impl Deref for Writer {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        &self.conn
    }
}

impl Writer {
    pub fn new(conn: Connection) -> Writer {
        Writer {
            conn,
            open: None,
            next_id: 0,
            outcomes: HashMap::new(),
            commits: Arc::default(),
        }
    }

    /// Batches committed since the store opened (each one fsync).
    #[cfg(test)]
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Acquire)
    }

    /// The counter of committed batches, to read without the lock. It
    /// grows after a batch's COMMIT returned: whoever reads the new number
    /// sees the batch's work.
    pub fn commit_counter(&self) -> Arc<AtomicU64> {
        self.commits.clone()
    }

    /// The open batch's id, opening one if none is.
    fn begin(&mut self) -> Result<u64> {
        if let Some(b) = &self.open {
            return Ok(b.id);
        }
        if !self.conn.is_autocommit() {
            // A transaction left by a rollback that failed: nothing in it
            // was reported as committed.
            self.conn.execute_batch("ROLLBACK")?;
        }
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        self.next_id += 1;
        self.open = Some(Batch {
            id: self.next_id,
            opened: Instant::now(),
            writes: 0,
            waiters: 0,
        });
        Ok(self.next_id)
    }

    /// End the open batch: commit it if it holds any work, else roll it
    /// back. Its result is kept for the callers waiting on it.
    fn finish(&mut self) -> std::result::Result<(), String> {
        let Some(b) = self.open.take() else {
            return Ok(());
        };
        let result = if b.writes == 0 {
            self.conn
                .execute_batch("ROLLBACK")
                .map_err(|e| e.to_string())
        } else {
            self.conn.execute_batch("COMMIT").map_err(|e| {
                if !self.conn.is_autocommit() {
                    // A failed COMMIT may leave the transaction open; if this
                    // fails too, `begin` tries again.
                    let _ = self.conn.execute_batch("ROLLBACK");
                }
                format!("the commit failed and nothing of its batch was stored: {e}")
            })
        };
        if b.writes > 0 && result.is_ok() {
            self.commits.fetch_add(1, Ordering::Release);
        }
        self.remember(b, result.clone());
        result
    }

    /// SQLite itself rolled the whole batch back (an I/O error, a full
    /// disk): every caller waiting on it is told so.
    fn lost(&mut self, why: &StoreError) {
        if let Some(b) = self.open.take() {
            if !self.conn.is_autocommit() {
                let _ = self.conn.execute_batch("ROLLBACK");
            }
            let msg = format!("the batch was rolled back by a failed write beside it: {why}");
            self.remember(b, Err(msg));
        }
    }

    fn remember(&mut self, b: Batch, result: std::result::Result<(), String>) {
        if b.waiters > 0 {
            self.outcomes.insert(
                b.id,
                Outcome {
                    result,
                    waiters: b.waiters,
                },
            );
        }
    }

    /// The result of batch `id` if it has finished (each waiter takes it once).
    fn outcome(&mut self, id: u64) -> Option<std::result::Result<(), String>> {
        let o = self.outcomes.get_mut(&id)?;
        let result = o.result.clone();
        o.waiters = o.waiters.saturating_sub(1);
        if o.waiters == 0 {
            self.outcomes.remove(&id);
        }
        Some(result)
    }

    /// Undo the caller's savepoint; false if that failed and the batch is
    /// no longer trustworthy.
    fn undo_savepoint(&mut self) -> bool {
        self.conn.execute_batch("ROLLBACK TO w; RELEASE w").is_ok()
    }
}

/// Who waits for the writer lock, and the signal that a batch finished.
#[derive(Default)]
pub struct GroupCommit {
    /// Writers between asking for the lock and holding it.
    waiting: AtomicUsize,
    /// Signalled whenever a batch commits or is rolled back.
    finished: Condvar,
}

fn poisoned<T>(_: T) -> StoreError {
    StoreError::Unavailable("store lock poisoned".into())
}

/// Wakes the waiters if a closure panics while holding the lock: they find
/// the lock poisoned and fail instead of waiting for ever.
struct WakeOnPanic<'a>(&'a Condvar);

impl Drop for WakeOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.notify_all();
        }
    }
}

impl GroupCommit {
    /// Writers currently queued for the lock (for tests).
    #[cfg(test)]
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    /// Run `f` in the shared transaction; Ok once its work is committed.
    pub fn run<T>(
        &self,
        lock: &Mutex<Writer>,
        f: impl FnOnce(&Connection) -> Result<T>,
    ) -> Result<T> {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let got = lock.lock();
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        let mut w = got.map_err(poisoned)?;
        let _wake = WakeOnPanic(&self.finished);
        let id = w.begin()?;
        let ran = match w.conn.execute_batch("SAVEPOINT w") {
            Ok(()) => f(&w.conn),
            Err(e) => Err(e.into()),
        };
        let value = match ran {
            Ok(v) => match w.conn.execute_batch("RELEASE w") {
                Ok(()) => v,
                Err(e) => return Err(self.failed(&mut w, e.into())),
            },
            Err(e) => return Err(self.failed(&mut w, e)),
        };
        if let Some(b) = &mut w.open {
            b.writes += 1;
        }
        if self.should_commit(&w) {
            let result = w.finish();
            self.finished.notify_all();
            return result.map(|()| value).map_err(StoreError::Unavailable);
        }
        if let Some(b) = &mut w.open {
            b.waiters += 1;
        }
        loop {
            if let Some(result) = w.outcome(id) {
                return result.map(|()| value).map_err(StoreError::Unavailable);
            }
            w = self.finished.wait(w).map_err(poisoned)?;
        }
    }

    /// Whether the caller holding the lock commits now.
    fn should_commit(&self, w: &Writer) -> bool {
        w.open.as_ref().is_none_or(|b| {
            self.waiting.load(Ordering::SeqCst) == 0
                || b.writes >= MAX_BATCH
                || b.opened.elapsed() >= MAX_BATCH_AGE
        })
    }

    /// The caller's closure failed: undo its work only, and if nobody will
    /// come after it, end the batch for those waiting on it. Returns `e`.
    fn failed(&self, w: &mut MutexGuard<'_, Writer>, e: StoreError) -> StoreError {
        if w.conn.is_autocommit() || !w.undo_savepoint() {
            w.lost(&e);
            self.finished.notify_all();
        } else if self.should_commit(w) {
            // The batch's own result goes to its waiters; this caller's
            // answer is its error either way.
            let _ = w.finish();
            self.finished.notify_all();
        }
        e
    }
}
