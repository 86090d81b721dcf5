//! Uploads on the master (issue 9 point 3): where their bytes live
//! (`DATA/uploads/ID`, whose length is the upload's offset), who may write
//! one at a time, how a body is appended and hashed as it streams in, and
//! how unfinished ones are cleaned up (on start and when they expire).
//! `fetch` fills an upload from an https URL. The HTTP side is
//! `api/uploads.rs`.

pub mod fetch;
mod receive;

pub use receive::{receive, Received};

use crate::import_dir::ImportDir;
use crate::state::{ImageSettings, Settings};
use crate::store::{now_ms, to_ts, Millis, Store, UploadRow};
use cm_api::upload::{Upload, UploadState};
use cm_api::words::EventKind;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use uuid::Uuid;

/// Uploads that may exist at once (receiving, fetching or complete):
/// each holds disk space until used or expired.
pub const MAX_UPLOADS: usize = 32;

/// A failed import is kept this long (at most), for its client to read why.
const FAILED_KEPT: Duration = Duration::from_secs(600);

/// A `PATCH` whose body sends nothing for this long is ended (its bytes so
/// far are kept).
pub const IDLE: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    ImportDir(#[from] crate::import_dir::DirError),
    #[error("--image-import-ca {0}: {1}")]
    Ca(String, String),
    #[error("the https client: {0}")]
    Http(String),
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
}

/// The hash of an upload's bytes so far, kept between `PATCH`es so that a
/// resumed upload is not read again from disk.
#[derive(Default)]
pub struct Slot {
    pub hashed: Option<(u64, Sha256)>,
}

pub struct Uploads {
    dir: PathBuf,
    slots: Mutex<HashMap<Uuid, Arc<tokio::sync::Mutex<Slot>>>>,
    pub settings: ImageSettings,
    pub import_dir: Option<ImportDir>,
    /// The client of https:// imports.
    pub http: reqwest::Client,
}

impl Uploads {
    pub fn new(settings: &Settings) -> Result<Uploads, SetupError> {
        let dir = settings.uploads_dir();
        std::fs::create_dir_all(&dir).map_err(|e| SetupError::Io(dir.display().to_string(), e))?;
        let s = &settings.images;
        let import_dir = s
            .import_dir
            .as_deref()
            .map(|d| ImportDir::new(d, &settings.data_dir))
            .transpose()?;
        let http = fetch::client(s)?;
        Ok(Uploads {
            dir,
            slots: Mutex::new(HashMap::new()),
            settings: s.clone(),
            import_dir,
            http,
        })
    }

    /// The file that holds an upload's bytes.
    pub fn file(&self, id: Uuid) -> PathBuf {
        self.dir.join(id.to_string())
    }

    /// Bytes the master holds for an upload.
    pub fn offset(&self, id: Uuid) -> u64 {
        std::fs::metadata(self.file(id))
            .map(|m| m.len())
            .unwrap_or(0)
    }

    /// The lock of one upload: one writer (or user) at a time.
    pub fn slot(&self, id: Uuid) -> Arc<tokio::sync::Mutex<Slot>> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.entry(id).or_default().clone()
    }

    /// Remove an upload's bytes and its lock (its row is the caller's).
    pub fn discard(&self, id: Uuid) {
        let path = self.file(id);
        if let Err(e) = std::fs::remove_file(&path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!("removing {}: {e}", path.display());
            }
        }
        self.slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
    }

    /// When an upload goes if nothing happens to it: its last change or
    /// its last byte, whichever is later, plus the expiry time.
    fn last_activity(&self, row: &UploadRow) -> Millis {
        let mtime = std::fs::metadata(self.file(row.id))
            .and_then(|m| m.modified())
            .ok()
            .map(cm_api::time::ms_since_epoch)
            .unwrap_or(0);
        row.updated_at.max(mtime)
    }

    pub fn to_wire(&self, row: &UploadRow) -> Upload {
        let offset = match row.state {
            UploadState::Complete => row.size.unwrap_or(0),
            UploadState::Failed => 0,
            _ => self.offset(row.id),
        };
        let expires_at = (row.state != UploadState::Fetching)
            .then(|| to_ts(self.last_activity(row) + self.keep_for(row.state)));
        Upload {
            id: row.id,
            state: row.state,
            size: row.size,
            offset,
            sha256: row.sha256.clone(),
            url: row.url.clone(),
            error: row.error.clone(),
            created_at: to_ts(row.created_at),
            expires_at,
        }
    }

    /// How long an upload may sit idle: a failed one only long enough for
    /// its client to read why.
    fn keep_for(&self, state: UploadState) -> Millis {
        let d = match state {
            UploadState::Failed => self.settings.upload_expire_after.min(FAILED_KEPT),
            _ => self.settings.upload_expire_after,
        };
        cm_api::time::duration_millis(d)
    }

    /// Whether an upload has had nothing happen to it for its expiry time.
    pub fn expired(&self, row: &UploadRow, now: Millis) -> bool {
        row.state != UploadState::Fetching
            && now - self.last_activity(row) > self.keep_for(row.state)
    }

    /// On start, before serving: an upload's bytes without a row (a crash
    /// between writing and recording, or after an image took them) are
    /// removed; fetches cut by the restart are marked failed; rows whose
    /// bytes are gone are removed.
    pub fn recover(&self, store: &dyn Store) -> Result<(), crate::store::StoreError> {
        let rows = store.list_uploads()?;
        let known: HashMap<Uuid, &UploadRow> = rows.iter().map(|r| (r.id, r)).collect();
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let keep = Uuid::parse_str(&name)
                    .ok()
                    .and_then(|id| known.get(&id))
                    .map(|r| matches!(r.state, UploadState::Receiving | UploadState::Complete))
                    .unwrap_or(false);
                if !keep {
                    tracing::warn!("removing orphaned upload data {}", e.path().display());
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        for r in rows {
            let exists = self.file(r.id).exists();
            match r.state {
                UploadState::Fetching => {
                    let mut failed = r.clone();
                    failed.state = UploadState::Failed;
                    failed.error = Some(
                        crate::app::Error::internal(
                            "the master restarted during the fetch; import the URL again",
                        )
                        .field("url")
                        .body(),
                    );
                    failed.updated_at = now_ms();
                    store.update_upload(&failed)?;
                }
                UploadState::Receiving | UploadState::Complete if !exists => {
                    tracing::warn!("upload {} lost its data; removing it", r.id);
                    store.delete_upload(r.id)?;
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// The sha256 state of the first `len` bytes of `path` (a resumed upload
/// whose hash the master did not keep, e.g. after a restart).
pub fn hash_prefix(path: &Path, len: u64) -> std::io::Result<Sha256> {
    let mut f = std::fs::File::open(path)?.take(len);
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(h);
        }
        h.update(&buf[..n]);
    }
}

/// Free bytes on the file system of `dir`.
pub fn free_bytes(dir: &Path) -> Option<u64> {
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: statvfs is plain old data, for which all zero bytes are a valid value.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid C string and a zeroed statvfs for the kernel to fill.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some(st.f_bavail as u64 * st.f_frsize as u64)
}

/// Remove expired uploads, for ever; `cloudmasterd` spawns it.
pub async fn sweep(app: Arc<crate::state::App>) {
    let every = (app.uploads.settings.upload_expire_after / 4)
        .clamp(Duration::from_secs(1), Duration::from_secs(60));
    loop {
        tokio::time::sleep(every).await;
        let rows = match app.db(|s| s.list_uploads()).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("upload sweep: {e}");
                continue;
            }
        };
        let now = now_ms();
        for row in rows {
            if !app.uploads.expired(&row, now) {
                continue;
            }
            let slot = app.uploads.slot(row.id);
            // Busy (being written or made into an image): not expired.
            let Ok(_guard) = slot.try_lock() else {
                continue;
            };
            let id = row.id;
            if let Err(e) = app.db(move |s| s.delete_upload(id)).await {
                tracing::error!("upload sweep: {e}");
                continue;
            }
            app.uploads.discard(id);
            app.event(
                EventKind::UploadExpired,
                &id.to_string(),
                &format!(
                    "{} upload removed after {} s without activity",
                    row.state.as_str(),
                    app.uploads.settings.upload_expire_after.as_secs()
                ),
            )
            .await;
        }
    }
}
