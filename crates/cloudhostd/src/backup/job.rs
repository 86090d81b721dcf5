//! The QMP half of a backup, the same for a running VM's QEMU and for a
//! `qemu-storage-daemon` (backup/qsd.rs): what a node holds (size, its
//! `cm-backup` bitmap), and one `blockdev-backup` job into a target file
//! added with `blockdev-add`. A full backup starts in one `transaction`
//! with a fresh persistent bitmap, so the bitmap records exactly the writes
//! after the copy's point in time; an incremental one copies the bitmap's
//! clusters, and QEMU clears the bitmap when (only when) the job succeeds.
//! The job keeps no monitor connection: it is started with
//! `auto-dismiss: false` and polled with `query-jobs` on fresh connections
//! (QEMU serves one monitor client at a time; the agent needs it too).

use super::img::Bitmap;
use super::{BackupError, BITMAP};
use crate::vm::qmp::{Qmp, QmpError};
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};
use uuid::Uuid;

const CALL: Duration = Duration::from_secs(5);
const CONNECT_TRIES: u32 = 5;
/// The longest pause between two looks at a job (the first are shorter).
const POLL: Duration = Duration::from_millis(100);
/// How long a cancelled job has to conclude.
const CANCEL: Duration = Duration::from_secs(30);

/// A monitor connection. QEMU serves one client at a time and may drop a
/// connection that comes while it still tears down the one before (seen
/// as a reset): a connection is tried a few times; nothing was sent yet.
pub fn connect(sock: &Path) -> Result<Qmp, QmpError> {
    let mut tries = 0;
    loop {
        match Qmp::connect(sock, CALL) {
            Ok(q) => return Ok(q),
            Err(e) if tries < CONNECT_TRIES => {
                tries += 1;
                tracing::debug!("QMP {}: {e}; again", sock.display());
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(e),
        }
    }
}

/// One command on a fresh connection.
pub fn call(sock: &Path, command: &str, args: Option<Value>) -> Result<Value, QmpError> {
    connect(sock)?.execute(command, args)
}

/// A node's size and bitmap, from `query-named-block-nodes`.
pub fn node_state(sock: &Path, node: &str) -> Result<(u64, Bitmap), BackupError> {
    let nodes = call(
        sock,
        "query-named-block-nodes",
        Some(json!({ "flat": true })),
    )?;
    let n = nodes
        .as_array()
        .into_iter()
        .flatten()
        .find(|n| n["node-name"] == node)
        .ok_or_else(|| BackupError::NoNode(node.to_string()))?;
    let size = n["image"]["virtual-size"]
        .as_u64()
        .ok_or_else(|| BackupError::Unexpected(format!("node {node}: no virtual-size")))?;
    let bitmap = match n["dirty-bitmaps"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|b| b["name"] == BITMAP)
    {
        None => Bitmap::Missing,
        Some(b) if b["inconsistent"] == true || b["recording"] == false => Bitmap::Inconsistent,
        Some(_) => Bitmap::Consistent,
    };
    Ok((size, bitmap))
}

/// The format node of the disk whose file is `file` (a root drive made
/// with `-drive` has a generated name), from `query-block`.
pub fn node_of_file(sock: &Path, file: &Path) -> Result<String, BackupError> {
    let want = file.display().to_string();
    let block = call(sock, "query-block", None)?;
    block
        .as_array()
        .into_iter()
        .flatten()
        .map(|b| &b["inserted"])
        .find(|i| i["file"] == want.as_str() || i["image"]["filename"] == want.as_str())
        .and_then(|i| i["node-name"].as_str())
        .map(str::to_string)
        .ok_or(BackupError::NoNode(want))
}

/// A guest's file systems frozen around a job's start (the snapshot
/// code's freeze through cm-guest, volumes/snapshots.rs).
pub trait Freeze {
    /// True when some file system was frozen.
    fn freeze(&self) -> bool;
    /// Always called after `freeze`.
    fn thaw(&self);
}

/// What to copy.
#[derive(Debug, Clone, Copy)]
pub enum Mode {
    /// Everything; `drop_old` removes a bitmap the node has first.
    Full { drop_old: bool },
    /// The clusters the bitmap marks.
    Incremental,
}

/// A job that failed; `consumed` when the bitmap may no longer match the
/// chain (a full's fresh bitmap exists, or an increment's job succeeded).
#[derive(Debug)]
pub struct Failure {
    pub error: BackupError,
    pub consumed: bool,
}

fn fail(error: impl Into<BackupError>, consumed: bool) -> Failure {
    Failure {
        error: error.into(),
        consumed,
    }
}

/// The target node's and the job's names for backup `id`: known again
/// after an agent restart, so what a cut-short backup left can be found.
pub fn names(id: Uuid) -> (String, String) {
    let tag = id.simple().to_string();
    (
        format!("cmbk{}", &tag[..20]),
        format!("cmbkjob{}", &tag[..20]),
    )
}

/// Remove what backup `id`, cut short (the agent died), left in QEMU: its
/// job (cancelled if it still runs, then dismissed) and its target node.
/// Nothing there is fine.
pub fn sweep(sock: &Path, id: Uuid) -> Result<(), BackupError> {
    let (tnode, job) = names(id);
    let jobs = call(sock, "query-jobs", None)?;
    if let Some(j) = jobs
        .as_array()
        .into_iter()
        .flatten()
        .find(|j| j["id"] == job.as_str())
    {
        if j["status"] != "concluded" {
            call(sock, "job-cancel", Some(json!({ "id": job })))?;
        }
        let deadline = Instant::now() + CANCEL;
        while job_state(sock, &job)?["status"] != "concluded" {
            if Instant::now() > deadline {
                return Err(BackupError::Job(format!(
                    "job {job} did not end when cancelled"
                )));
            }
            std::thread::sleep(POLL);
        }
        call(sock, "job-dismiss", Some(json!({ "id": job })))?;
    }
    let nodes = call(
        sock,
        "query-named-block-nodes",
        Some(json!({ "flat": true })),
    )?;
    if nodes
        .as_array()
        .into_iter()
        .flatten()
        .any(|n| n["node-name"] == tnode.as_str())
    {
        call(sock, "blockdev-del", Some(json!({ "node-name": tnode })))?;
    }
    Ok(())
}

/// Back up node `node` at `sock` into `target` (an existing qcow2 of the
/// node's size, over the chain's last file for an increment) as backup
/// `id`. Returns the bytes the job copied.
pub fn run(
    sock: &Path,
    node: &str,
    id: Uuid,
    target: &Path,
    mode: Mode,
    timeout: Duration,
    freeze: Option<&dyn Freeze>,
) -> Result<(u64, bool), Failure> {
    let (tnode, job) = names(id);
    let mut q = connect(sock).map_err(|e| fail(e, false))?;
    q.execute(
        "blockdev-add",
        Some(json!({
            "driver": "qcow2",
            "node-name": tnode,
            "file": { "driver": "file", "filename": target.display().to_string() },
        })),
    )
    .map_err(|e| fail(e, false))?;
    // The guest's file systems are frozen around the job's start only: the
    // point in time is the transaction's; the copy runs after the thaw.
    let frozen = freeze.is_some_and(|f| f.freeze());
    let started = start(&mut q, node, &tnode, &job, mode);
    if let Some(f) = freeze {
        f.thaw();
    }
    drop(q);
    let result = match started {
        Ok(()) => wait(sock, &job, timeout).map_err(|e| fail(e, matches!(mode, Mode::Full { .. }))),
        Err(f) => Err(f),
    };
    let del = call(sock, "blockdev-del", Some(json!({ "node-name": tnode })));
    match (result, del) {
        (Ok(bytes), Ok(_)) => Ok((bytes, frozen)),
        (Ok(_), Err(e)) => Err(fail(e, true)),
        (Err(f), del) => {
            if let Err(e) = del {
                tracing::warn!("removing backup target {tnode}: {e}");
            }
            Err(f)
        }
    }
}

fn start(q: &mut Qmp, node: &str, tnode: &str, job: &str, mode: Mode) -> Result<(), Failure> {
    let backup = |sync: &str| {
        let mut a = json!({
            "device": node, "target": tnode, "sync": sync,
            "job-id": job, "auto-dismiss": false,
        });
        if sync == "incremental" {
            a["bitmap"] = json!(BITMAP);
        }
        json!({ "type": "blockdev-backup", "data": a })
    };
    let actions = match mode {
        Mode::Full { drop_old } => {
            if drop_old {
                q.execute(
                    "block-dirty-bitmap-remove",
                    Some(json!({ "node": node, "name": BITMAP })),
                )
                .map_err(|e| fail(e, true))?;
            }
            vec![
                json!({ "type": "block-dirty-bitmap-add",
                        "data": { "node": node, "name": BITMAP, "persistent": true } }),
                backup("full"),
            ]
        }
        Mode::Incremental => vec![backup("incremental")],
    };
    q.execute("transaction", Some(json!({ "actions": actions })))
        .map(|_| ())
        .map_err(|e| fail(e, matches!(mode, Mode::Full { drop_old: true })))
}

/// The job's entry in `query-jobs`.
fn job_state(sock: &Path, job: &str) -> Result<Value, BackupError> {
    let jobs = call(sock, "query-jobs", None)?;
    jobs.as_array()
        .into_iter()
        .flatten()
        .find(|j| j["id"] == job)
        .cloned()
        .ok_or_else(|| BackupError::Job(format!("job {job} vanished")))
}

/// Poll until the job concludes (cancelled at `timeout`), dismiss it.
fn wait(sock: &Path, job: &str, timeout: Duration) -> Result<u64, BackupError> {
    let deadline = Instant::now() + timeout;
    let mut cancelled = false;
    let mut poll = Duration::from_millis(5);
    loop {
        // The deadline is looked at first: a job past it is cancelled
        // before it is looked at (a zero timeout cancels at once).
        if !cancelled && Instant::now() > deadline {
            match call(sock, "job-cancel", Some(json!({ "id": job }))) {
                Ok(_) => cancelled = true,
                // It ended before the cancel: take its end.
                Err(_) if job_state(sock, job)?["status"] == "concluded" => {}
                Err(e) => return Err(e.into()),
            }
        }
        let j = job_state(sock, job)?;
        if j["status"] == "concluded" {
            call(sock, "job-dismiss", Some(json!({ "id": job })))?;
            if cancelled {
                return Err(BackupError::Job(format!(
                    "not done in {timeout:?}: cancelled"
                )));
            }
            if let Some(e) = j["error"].as_str() {
                return Err(BackupError::Job(e.to_string()));
            }
            return j["current-progress"]
                .as_u64()
                .ok_or_else(|| BackupError::Unexpected(format!("job without progress: {j}")));
        }
        if cancelled && Instant::now() > deadline + CANCEL {
            return Err(BackupError::Job(format!(
                "job {job} did not end when cancelled"
            )));
        }
        std::thread::sleep(poll);
        poll = (poll * 2).min(POLL);
    }
}
