//! `https://` imports: the master fetches the URL into an upload, streaming,
//! https only (redirects included), certificates checked against the public
//! roots and the operator's `--image-import-ca`, at most `--image-max-mib`
//! bytes, within `--image-import-timeout`; the sha256, when given, is
//! checked at the end.

use super::SetupError;
use crate::state::{App, ImageSettings};
use crate::store::{now_ms, UploadRow};
use cm_api::upload::UploadState;
use futures::StreamExt;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use uuid::Uuid;

/// The longest URL accepted.
pub const MAX_URL: usize = 2048;

/// Why a URL was not imported. Recorded on the upload and answered as
/// `400 invalid_input`, `413 body_too_large` or `500 internal` (`app::error`).
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The URL, what its server answered, or the data's sha256 is wrong;
    /// `field` is the request's field at fault (`url`, `sha256`).
    #[error("{message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    #[error("the URL's data is larger than this master's limit of {0} bytes")]
    TooLarge(u64),
    /// The master could not write the upload's file.
    #[error("writing the upload: {0}")]
    Write(#[from] std::io::Error),
}

impl FetchError {
    fn url(message: String) -> FetchError {
        FetchError::Invalid {
            field: "url",
            message,
        }
    }
}

pub fn client(s: &ImageSettings) -> Result<reqwest::Client, SetupError> {
    let mut b = reqwest::Client::builder()
        .https_only(true)
        .redirect(reqwest::redirect::Policy::limited(5))
        .connect_timeout(Duration::from_secs(30))
        .read_timeout(Duration::from_secs(60))
        .user_agent(concat!("cloudmasterd/", env!("CARGO_PKG_VERSION")));
    if let Some(ca) = &s.import_ca {
        let shown = ca.display().to_string();
        let pem = std::fs::read(ca).map_err(|e| SetupError::Ca(shown.clone(), e.to_string()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| SetupError::Ca(shown.clone(), e.to_string()))?;
        if certs.is_empty() {
            return Err(SetupError::Ca(shown, "no PEM certificate in it".into()));
        }
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    b.build().map_err(|e| SetupError::Http(e.to_string()))
}

/// Check a URL before anything is fetched: https, a host, no credentials.
pub fn check_url(url: &str) -> Result<reqwest::Url, FetchError> {
    let bad = FetchError::url;
    if url.len() > MAX_URL {
        return Err(bad(format!("url is longer than {MAX_URL} characters")));
    }
    let u = reqwest::Url::parse(url).map_err(|e| bad(format!("url is not a URL: {e}")))?;
    if u.scheme() != "https" {
        return Err(bad(format!(
            "only https:// URLs are imported, not {}://",
            cm_api::validate::printable(u.scheme())
        )));
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err(bad("url has no host".into()));
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err(bad(
            "url must not carry credentials (they would be stored and shown)".into(),
        ));
    }
    Ok(u)
}

/// Fetch `url` into upload `id` (already recorded as fetching, its file
/// made), then record it complete or failed. Runs as its own task.
pub async fn run(app: Arc<App>, id: Uuid, url: reqwest::Url, want: Option<String>) {
    let slot = app.uploads.slot(id);
    let _guard = slot.lock().await;
    let timeout = app.uploads.settings.import_timeout;
    let result = match tokio::time::timeout(timeout, fetch(&app, id, url.clone())).await {
        Ok(r) => r,
        Err(_) => Err(FetchError::url(format!(
            "the fetch took longer than {} s",
            timeout.as_secs()
        ))),
    };
    let result = result.and_then(|(size, sha)| match &want {
        Some(w) if !w.eq_ignore_ascii_case(&sha) => Err(FetchError::Invalid {
            field: "sha256",
            message: format!("the data fetched from the URL has sha256 {sha}, not {w}"),
        }),
        _ => Ok((size, sha)),
    });
    let row = match app.db(move |s| s.get_upload(id)).await {
        Ok(r) => r,
        Err(_) => {
            // Deleted meanwhile.
            app.uploads.discard(id);
            return;
        }
    };
    let mut done = UploadRow {
        updated_at: now_ms(),
        ..row
    };
    match &result {
        Ok((size, sha)) => {
            done.state = UploadState::Complete;
            done.size = Some(*size);
            done.sha256 = Some(sha.clone());
        }
        Err(e) => {
            tracing::warn!("import of {url} failed: {e}");
            done.state = UploadState::Failed;
            done.error = Some(crate::app::Error::from_fetch(e).body());
            app.uploads.discard(id);
        }
    }
    let rec = done.clone();
    if let Err(e) = app.db(move |s| s.update_upload(&rec)).await {
        tracing::error!("recording upload {id}: {e}");
    }
    let msg = match &result {
        Ok((size, _)) => format!("{url}: {size} bytes"),
        Err(e) => format!("{url}: {e}"),
    };
    let kind = if result.is_ok() {
        cm_api::words::EventKind::UploadFetched
    } else {
        cm_api::words::EventKind::UploadFailed
    };
    app.event(kind, &id.to_string(), &msg).await;
}

async fn fetch(app: &App, id: Uuid, url: reqwest::Url) -> Result<(u64, String), FetchError> {
    let max = app.uploads.settings.max_bytes;
    let net = |e: reqwest::Error| {
        // reqwest's Display hides the cause (a certificate refused, a reset).
        let mut msg = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            msg.push_str(&format!(": {s}"));
            src = s.source();
        }
        FetchError::url(format!("fetching the URL: {msg}"))
    };
    let resp = app.uploads.http.get(url).send().await.map_err(net)?;
    let status = resp.status();
    if !status.is_success() {
        return Err(FetchError::url(format!(
            "the server answered HTTP {status}"
        )));
    }
    if let Some(len) = resp.content_length() {
        if len > max {
            return Err(FetchError::TooLarge(max));
        }
        let rec = id;
        let _ = app
            .db(move |s| {
                let mut row = s.get_upload(rec)?;
                row.size = Some(len);
                s.update_upload(&row)
            })
            .await;
    }
    let path = app.uploads.file(id);
    let file = tokio::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .await?;
    let mut file = tokio::io::BufWriter::with_capacity(1 << 20, file);
    let mut hash = Sha256::new();
    let mut size = 0u64;
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(net)?;
        size += chunk.len() as u64;
        if size > max {
            return Err(FetchError::TooLarge(max));
        }
        hash.update(&chunk);
        file.write_all(&chunk).await?;
    }
    file.flush().await?;
    file.into_inner().sync_all().await?;
    Ok((size, hex::encode(hash.finalize())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_https_urls_are_fetched() {
        check_url("https://cloud.debian.org/images/x.qcow2").unwrap();
        for bad in [
            "http://cloud.debian.org/x.qcow2",
            "file:///etc/shadow",
            "ftp://x/y",
            "https://user:pw@example.org/x",
            "not a url",
        ] {
            let e = check_url(bad).unwrap_err();
            assert!(
                matches!(e, FetchError::Invalid { field: "url", .. }),
                "{bad}: {e:?}"
            );
        }
        check_url(&format!("https://x/{}", "a".repeat(MAX_URL))).unwrap_err();
    }
}
