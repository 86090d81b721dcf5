//! A job run through the node's control master ([`crate::mux`]): no ssh
//! process, the master's session writes straight into our pipes. At the
//! timeout the session is dropped: the master closes the channel and the
//! node's output ends there.

use super::{looks_unreachable, pump, NodeResult, OnLine, Stream};
use crate::mux::{MuxError, Output, Session};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Run `command` on `node` through the master at `socket`. None when no
/// master took the session: nothing ran, and the caller starts ssh
/// instead (which opens a master, or connects directly as ssh does when
/// a master refuses a session).
pub(super) async fn run(
    node: &str,
    socket: &Path,
    command: &str,
    timeout: Option<Duration>,
    on: Option<OnLine>,
) -> Option<NodeResult> {
    let start = Instant::now();
    let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
    let mut res = NodeResult {
        node: node.to_string(),
        ..Default::default()
    };
    let opened = match deadline {
        Some(d) => tokio::time::timeout_at(d, Session::open(socket, command)).await,
        None => Ok(Session::open(socket, command).await),
    };
    let (mut session, Output { stdout, stderr }) = match opened {
        Ok(Ok(s)) => s,
        Ok(Err(MuxError::NoMaster(_) | MuxError::Refused(_))) => return None,
        Ok(Err(e)) => {
            res.unreachable = true;
            res.stderr = format!("{e}\n");
            res.duration = start.elapsed().as_secs_f64();
            return Some(res);
        }
        Err(_) => {
            res.timed_out = true;
            res.duration = start.elapsed().as_secs_f64();
            return Some(res);
        }
    };
    let (out_acc, err_acc): (Arc<Mutex<String>>, Arc<Mutex<String>>) = Default::default();
    let out = tokio::spawn(pump(
        stdout,
        node.to_string(),
        Stream::Stdout,
        on.clone(),
        out_acc.clone(),
    ));
    let err = tokio::spawn(pump(
        stderr,
        node.to_string(),
        Stream::Stderr,
        on,
        err_acc.clone(),
    ));
    let aborts = [out.abort_handle(), err.abort_handle()];
    // The exit status and both streams to their end.
    let work = async {
        let rc = session.wait().await;
        let _ = out.await;
        let _ = err.await;
        rc
    };
    let done = match deadline {
        Some(d) => tokio::time::timeout_at(d, work).await.ok(),
        None => Some(work.await),
    };
    let mut extra = String::new();
    match done {
        // An exit status is 0..=255 on the wire; anything else as ssh's 255.
        Some(Ok(Some(rc))) => res.rc = Some(i32::try_from(rc).unwrap_or(255)),
        // As ssh does when its master closes without an exit status.
        Some(Ok(None)) => {
            res.rc = Some(255);
            extra = "the session ended without an exit status\n".into();
        }
        Some(Err(e)) => {
            res.unreachable = true;
            extra = format!("{e}\n");
        }
        None => {
            res.timed_out = true;
            for a in aborts {
                a.abort();
            }
        }
    }
    // Dropping the control connection makes the master close the session.
    drop(session);
    let take =
        |a: &Mutex<String>| std::mem::take(&mut *a.lock().unwrap_or_else(|p| p.into_inner()));
    res.stdout = take(&out_acc);
    res.stderr = take(&err_acc) + &extra;
    if !res.timed_out && !res.unreachable {
        res.unreachable = looks_unreachable(res.rc, &res.stderr);
    }
    res.duration = start.elapsed().as_secs_f64();
    Some(res)
}
