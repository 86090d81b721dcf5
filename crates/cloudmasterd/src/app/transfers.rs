//! Transfers (docs/storage.md, "Transfers"): a host sends a flattened disk
//! (`PUT /v1/agent/transfers/{id}`), the master keeps it under
//! `DATA/transfers/ID` (0600) while its use needs it, and a host asked to
//! import it reads it back (`GET`). Its uses: `volume_moves` (a volume
//! copied to another host) and `image_builds` (app::image_builds).

use super::{Error, Result};
use crate::state::App;
use crate::store::transfer::{HostTransfers, MoveEnded, Purpose, TransferRow};
use crate::store::{now_ms, HostId};
use crate::uploads::{receive, Received};
use cm_api::agent::{ObservedExport, ObservedVolume};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::Duration;
use uuid::Uuid;

/// A body that sends nothing for this long is cut.
const IDLE: Duration = Duration::from_secs(60);

pub fn dir(app: &App) -> PathBuf {
    app.settings.data_dir.join("transfers")
}

pub fn file_path(app: &App, id: Uuid) -> PathBuf {
    dir(app).join(id.to_string())
}

/// Why a PUT was refused; the API maps each to its status.
#[derive(Debug, thiserror::Error)]
pub enum PutError {
    #[error("{0}")]
    Other(#[from] Error),
    /// 422: the body's sha256 is not the header's; nothing was kept.
    #[error("the body's sha256 is {got}, not {want} (x-cm-sha256): nothing kept")]
    Mismatch { got: String, want: String },
}

/// The transfer a host may send or read: 404 for any other host.
async fn of_host(app: &App, host: HostId, id: Uuid, reading: bool) -> Result<TransferRow> {
    let tr = app
        .db(move |s| s.get_transfer(id))
        .await
        .map_err(|_| Error::not_found("transfer", &id.to_string()))?;
    let allowed = if reading {
        let moves = app.db(|s| s.list_moves()).await?;
        moves.iter().any(|m| m.transfer.id == id && m.to.0 == host)
    } else {
        tr.host_id == host
    };
    if !allowed {
        return Err(Error::not_found("transfer", &id.to_string()));
    }
    Ok(tr)
}

/// Check the `x-cm-sha256` header: 64 lowercase hex digits.
pub fn check_sha(sha: Option<&str>) -> Result<String> {
    match sha {
        Some(s) if s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) => {
            Ok(s.to_string())
        }
        _ => Err(Error::invalid(
            "x-cm-sha256",
            "x-cm-sha256 must be the body's sha256, 64 lowercase hex digits",
        )),
    }
}

/// Receive a transfer's file: stream it to `ID.part` hashing as it comes,
/// at most its bound; check the sha256; make it durable under its name.
pub async fn put(
    app: &App,
    host: HostId,
    id: Uuid,
    sha: Option<&str>,
    declared: Option<u64>,
    body: axum::body::Body,
) -> std::result::Result<TransferRow, PutError> {
    let tr = of_host(app, host, id, false).await?;
    if tr.received.is_some() {
        return Ok(tr);
    }
    let want = check_sha(sha)?;
    if declared.is_some_and(|n| n > tr.max_bytes) {
        return Err(too_big(&tr).into());
    }
    let part = dir(app).join(format!("{id}.part"));
    let (p, max) = (part.clone(), tr.max_bytes);
    let mut hash = Sha256::new();
    let create = tokio::task::spawn_blocking(move || create_part(&p))
        .await
        .map_err(|e| Error::internal(format!("transfer task: {e}")))?;
    create.map_err(|e| Error::internal(format!("{}: {e}", part.display())))?;
    let got = receive(&part, 0, max, &mut hash, body, IDLE).await;
    let (len, outcome) = match got {
        Ok(r) => r,
        Err(e) => {
            let _ = std::fs::remove_file(&part);
            return Err(Error::internal(format!("writing transfer {id}: {e}")).into());
        }
    };
    match outcome {
        Received::Ended => {}
        Received::TooLong => {
            let _ = std::fs::remove_file(&part);
            return Err(too_big(&tr).into());
        }
        Received::Cut(why) => {
            let _ = std::fs::remove_file(&part);
            return Err(Error::Malformed(format!("the body ended early ({why})").into()).into());
        }
    }
    let got = hex::encode(hash.finalize());
    if got != want {
        let _ = std::fs::remove_file(&part);
        return Err(PutError::Mismatch { got, want });
    }
    let dst = file_path(app, id);
    let persisted = tokio::task::spawn_blocking(move || durable_fs::persist(&part, &dst))
        .await
        .map_err(|e| Error::internal(format!("transfer task: {e}")))?;
    persisted.map_err(|e| Error::internal(format!("keeping transfer {id}: {e}")))?;
    let row = app
        .db(move |s| s.transfer_received(id, len, &got, now_ms()))
        .await?;
    notify_all(app).await;
    if row.purpose == Purpose::ImageCreate {
        super::image_builds::received(app, &row).await;
    }
    Ok(row)
}

fn too_big(tr: &TransferRow) -> Error {
    Error::TooLarge(
        format!(
            "transfer {} may take at most {} bytes (the disk's size + 1 GiB)",
            tr.id, tr.max_bytes
        )
        .into(),
    )
}

fn create_part(p: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if let Some(dir) = p.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(p)
        .map(|_| ())
}

/// The file of a received transfer the host is to import, and its size.
pub async fn get(app: &App, host: HostId, id: Uuid) -> Result<(PathBuf, u64)> {
    let tr = of_host(app, host, id, true).await?;
    let Some((size, _)) = tr.received else {
        return Err(Error::conflict(format!(
            "transfer {id} is not received yet: try again when it is in the desired state"
        )));
    };
    Ok((file_path(app, id), size))
}

/// Every host's desired state may have changed (a move's both ends).
async fn notify_all(app: &App) {
    if let Ok(hosts) = app.db(|s| s.list_hosts()).await {
        for h in hosts {
            app.hub.notify(h.id);
        }
    }
    app.ops_changed();
    app.kick.notify_one();
}

/// What a host's desired state holds of transfers.
pub async fn desired(app: &App, host: HostId) -> Result<HostTransfers> {
    app.db(move |s| s.host_transfers(host)).await
}

/// A report's part in transfers: failed exports, moved volumes' new
/// files, leftovers gone.
pub async fn report(
    app: &App,
    host: HostId,
    (exports, files): (Vec<ObservedExport>, Vec<ObservedVolume>),
) -> Result<()> {
    let out = app
        .db(move |s| s.record_transfer_report(host, &exports, &files, now_ms()))
        .await?;
    for m in &out.moves {
        moved(app, m).await;
    }
    for (b, why) in &out.failed_builds {
        super::image_builds::failed(app, b, why).await;
    }
    if !out.moves.is_empty() || !out.failed_builds.is_empty() {
        notify_all(app).await;
    }
    Ok(())
}

/// The reconciler's look at moves and image builds: one whose host has
/// been down for `deadline` fails (the volume stays where it was).
pub async fn give_up(
    app: &App,
    down_since: &std::collections::HashMap<HostId, crate::store::Millis>,
    now: crate::store::Millis,
    deadline: Duration,
) -> Result<()> {
    let late = |h: &HostId, from: crate::store::Millis| {
        down_since
            .get(h)
            .is_some_and(|s| now - (*s).max(from) >= cm_api::time::duration_millis(deadline))
    };
    let moves = app.db(|s| s.list_moves()).await?;
    for m in moves {
        let received = m.transfer.received.is_some();
        let down = [(&m.from, !received), (&m.to, true)]
            .into_iter()
            .find(|((h, _), asked)| *asked && late(h, m.started_at));
        let Some(((_, name), _)) = down else { continue };
        let why = format!(
            "host {name} is down: gave up after waiting {}s for it",
            deadline.as_secs()
        );
        let id = m.volume_id;
        if let Some(ended) = app.db(move |s| s.fail_move(id, &why, now)).await? {
            moved(app, &ended).await;
            notify_all(app).await;
        }
    }
    let builds = app.db(|s| s.list_builds()).await?;
    for b in builds {
        let waiting = b.transfer.received.is_none();
        if waiting && late(&b.transfer.host_id, b.created_at) {
            let why = format!(
                "the instance's host is down: gave up after waiting {}s for it",
                deadline.as_secs()
            );
            super::image_builds::failed(app, &b, &why).await;
        }
    }
    Ok(())
}

async fn moved(app: &App, m: &MoveEnded) {
    let _ = std::fs::remove_file(file_path(app, m.row.transfer.id));
    super::owned::publish(app, m.event.clone());
}

/// The master's start: remove every file under `transfers/` that is not
/// the file of a received transfer (parts, files of ended transfers).
pub fn sweep_on_start(data_dir: &Path, store: &dyn crate::store::Store) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = data_dir.join("transfers");
    std::fs::create_dir_all(&dir)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
    let keep: Vec<String> = store
        .list_transfers()
        .map_err(|e| std::io::Error::other(e.to_string()))?
        .into_iter()
        .filter(|t| t.received.is_some())
        .map(|t| t.id.to_string())
        .collect();
    for e in std::fs::read_dir(&dir)? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if !keep.contains(&name) {
            tracing::info!("removing stray transfer file {name}");
            std::fs::remove_file(e.path())?;
        }
    }
    Ok(())
}
