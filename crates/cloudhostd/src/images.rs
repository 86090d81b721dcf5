//! The host's image cache: each image file is fetched from the master once,
//! checked against its sha256, and kept for every VM that uses it.

use crate::client::Master;
use cm_api::agent::ImageRef;
use cm_api::image::FileRole;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::io::AsyncWriteExt;
use uuid::Uuid;

pub struct ImageCache {
    dir: PathBuf,
    /// One fetch at a time per image; others wait and then find it cached.
    locks: Mutex<HashMap<Uuid, Arc<tokio::sync::Mutex<()>>>>,
}

impl ImageCache {
    pub fn new(dir: PathBuf) -> ImageCache {
        ImageCache {
            dir,
            locks: Mutex::new(HashMap::new()),
        }
    }

    pub fn path(&self, id: Uuid, role: FileRole) -> PathBuf {
        self.dir.join(id.to_string()).join(role.as_str())
    }

    fn lock(&self, id: Uuid) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = match self.locks.lock() {
            Ok(l) => l,
            Err(p) => p.into_inner(),
        };
        locks.entry(id).or_default().clone()
    }

    /// Make sure every file of `image` is here and intact; fetch what is not.
    pub async fn ensure(&self, master: &Master, image: &ImageRef) -> Result<(), String> {
        let lock = self.lock(image.id);
        let _guard = lock.lock().await;
        for f in &image.files {
            let path = self.path(image.id, f.role);
            if tokio::fs::metadata(&path)
                .await
                .map(|m| m.len() == f.size)
                .unwrap_or(false)
            {
                continue;
            }
            if let Some(dir) = path.parent() {
                tokio::fs::create_dir_all(dir)
                    .await
                    .map_err(|e| format!("{}: {e}", dir.display()))?;
            }
            self.fetch(master, image, f.role, &f.sha256, &path).await?;
        }
        Ok(())
    }

    async fn fetch(
        &self,
        master: &Master,
        image: &ImageRef,
        role: FileRole,
        sha256: &str,
        path: &Path,
    ) -> Result<(), String> {
        let mut resp = master
            .image_file(image.id, role)
            .await
            .map_err(|e| format!("fetching image {} {}: {e}", image.name, role.as_str()))?;
        let at = |e: std::io::Error| format!("{}: {e}", path.display());
        // Removed if anything below fails (durable-fs).
        let mut part = durable_fs::AtomicFile::create(path, 0o644).map_err(at)?;
        let mut out = tokio::fs::File::from_std(part.file().try_clone().map_err(at)?);
        let mut hasher = Sha256::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| format!("fetching image {}: {e}", image.name))?
        {
            hasher.update(&chunk);
            out.write_all(&chunk).await.map_err(at)?;
        }
        out.flush().await.map_err(at)?;
        drop(out);
        let got = hex::encode(hasher.finalize());
        if got != sha256 {
            return Err(format!(
                "image {} {}: sha256 {got} does not match {sha256}",
                image.name,
                role.as_str()
            ));
        }
        tokio::task::spawn_blocking(move || part.commit())
            .await
            .map_err(|e| format!("{}: {e}", path.display()))?
            .map_err(at)?;
        tracing::info!(
            "cached image {} {} ({})",
            image.name,
            role.as_str(),
            path.display()
        );
        Ok(())
    }
}
