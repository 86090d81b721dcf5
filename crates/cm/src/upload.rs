//! Sending a local file to the master as an upload (`/v1/uploads`), or
//! having the master fetch an https URL into one.
//!
//! A local file is hashed first (its sha256 is declared, and the master
//! checks it when the last byte is in), then sent in `PATCH`es of at most
//! [`CHUNK`] bytes, streamed from the file. After a broken connection cm asks
//! the master how much it holds and goes on from there; an upload left by an
//! earlier, interrupted `cm` (same sha256 and size) is resumed, not started
//! again. A progress bar shows on a terminal, nothing otherwise.

use crate::client::{api, CliError, Client};
use cm_api::upload::{CreateUpload, Upload, UploadState};
use cm_api::{ApiError, ErrorCode};
use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{IsTerminal, Read, Seek, SeekFrom};
use std::path::Path;
use std::time::Duration;

/// Bytes per `PATCH`: each request is bounded in time, and a broken one
/// loses nothing the master had acknowledged.
pub const CHUNK: u64 = 32 << 20;
/// The time one `PATCH` of [`CHUNK`] bytes may take (about 110 KB/s).
const CHUNK_TIMEOUT: Duration = Duration::from_secs(300);
/// Attempts in a row that move nothing before cm gives up.
const MAX_STALLED: u32 = 8;

fn bar(len: Option<u64>, what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let b = match len {
        Some(n) => ProgressBar::new(n),
        None => ProgressBar::no_length(),
    };
    let template = if len.is_some() {
        "{msg} [{wide_bar}] {bytes}/{total_bytes} {bytes_per_sec} {eta}"
    } else {
        "{spinner} {msg} {bytes} {bytes_per_sec}"
    };
    b.set_style(
        ProgressStyle::with_template(template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    b.set_message(what.to_string());
    b
}

/// A reader that moves a progress bar.
struct Counted<R> {
    inner: R,
    bar: ProgressBar,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bar.inc(n as u64);
        Ok(n)
    }
}

fn local(path: &Path, e: impl std::fmt::Display) -> CliError {
    CliError::Local(format!("{}: {e}", path.display()))
}

/// The size and sha256 of a local file, read once.
pub fn hash_file(path: &Path, name: &str) -> Result<(u64, String), CliError> {
    let f = File::open(path).map_err(|e| local(path, e))?;
    let meta = f.metadata().map_err(|e| local(path, e))?;
    if !meta.is_file() {
        return Err(local(path, "not a regular file"));
    }
    let b = bar(Some(meta.len()), &format!("hashing {name}"));
    let mut r = Counted {
        inner: f,
        bar: b.clone(),
    };
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = r.read(&mut buf).map_err(|e| local(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    b.finish_and_clear();
    Ok((meta.len(), hex::encode(h.finalize())))
}

/// Whether an error may go away by asking again: the connection broke,
/// the upload was busy (the broken request not yet ended on the master),
/// or the offset moved.
fn retryable(e: &CliError) -> bool {
    match e {
        CliError::Transport(_) => true,
        CliError::Api(a) => matches!(
            a.code(),
            ErrorCode::Conflict | ErrorCode::MalformedBody | ErrorCode::Internal
        ),
        _ => false,
    }
}

/// Upload a local file (which must have sha256 `want`, when given);
/// returns the complete upload.
pub fn send_file(
    client: &Client,
    path: &Path,
    name: &str,
    want: Option<&str>,
) -> Result<Upload, CliError> {
    let (size, sha256) = hash_file(path, name)?;
    if let Some(w) = want {
        if !w.eq_ignore_ascii_case(&sha256) {
            return Err(local(
                path,
                format!("its sha256 is {sha256}, not {w} (--sha256)"),
            ));
        }
    }
    // An earlier cm may have left this very file half sent: go on with it.
    let found: Vec<Upload> = client.call(api::uploads::list(Some(&sha256)))?;
    let mine = found.into_iter().find(|u| {
        u.size == Some(size) && matches!(u.state, UploadState::Receiving | UploadState::Complete)
    });
    let mut up = match mine {
        Some(u) => {
            if u.state == UploadState::Complete {
                eprintln!(
                    "cm: {name}: the master has these bytes already (upload {})",
                    u.id
                );
                return Ok(u);
            }
            eprintln!(
                "cm: {name}: resuming upload {} at {} of {size} bytes",
                u.id, u.offset
            );
            u
        }
        None => client.call(api::uploads::create(&CreateUpload {
            size: Some(size),
            sha256: Some(sha256.clone()),
            url: None,
        }))?,
    };
    let file = File::open(path).map_err(|e| local(path, e))?;
    let b = bar(Some(size), &format!("uploading {name}"));
    b.set_position(up.offset);
    let mut stalled = 0u32;
    while up.state == UploadState::Receiving {
        let offset = up.offset;
        let len = CHUNK.min(size.saturating_sub(offset));
        let now = file.metadata().map_err(|e| local(path, e))?.len();
        if now != size {
            b.finish_and_clear();
            return Err(local(
                path,
                format!("changed while being sent ({size} bytes, now {now})"),
            ));
        }
        let mut part = file.try_clone().map_err(|e| local(path, e))?;
        part.seek(SeekFrom::Start(offset))
            .map_err(|e| local(path, e))?;
        b.set_position(offset);
        let body = cm_client::reqwest::blocking::Body::sized(
            Counted {
                inner: part.take(len),
                bar: b.clone(),
            },
            len,
        );
        match client.write_upload(up.id, offset, body, CHUNK_TIMEOUT) {
            Ok(next) => {
                stalled = 0;
                up = next;
            }
            Err(e) if retryable(&e) => {
                let before = up.offset;
                let wait = Duration::from_secs(1u64 << stalled.min(4)).min(Duration::from_secs(15));
                std::thread::sleep(wait);
                up = match client.call(api::uploads::show(up.id)) {
                    Ok(u) => u,
                    Err(e2) if retryable(&e2) => up,
                    Err(e2) => {
                        b.finish_and_clear();
                        return Err(e2);
                    }
                };
                if up.offset > before {
                    stalled = 0;
                } else {
                    stalled += 1;
                }
                b.suspend(|| {
                    eprintln!(
                        "cm: {name}: sending was cut at {} of {size} bytes ({e}); resuming",
                        up.offset
                    )
                });
                if stalled >= MAX_STALLED {
                    b.finish_and_clear();
                    return Err(CliError::Transport(format!(
                        "{name}: no progress after {MAX_STALLED} attempts ({e}); run the same command again to resume upload {}",
                        up.id
                    )));
                }
            }
            Err(e) => {
                b.finish_and_clear();
                return Err(e);
            }
        }
    }
    b.finish_and_clear();
    match up.state {
        UploadState::Complete => Ok(up),
        other => Err(CliError::Failed(format!(
            "upload {} of {name} ended {}",
            up.id,
            other.as_str()
        ))),
    }
}

/// Have the master fetch an https URL; returns the complete upload.
pub fn fetch_url(
    client: &Client,
    url: &str,
    sha256: Option<String>,
    name: &str,
) -> Result<Upload, CliError> {
    let mut up: Upload = client.call(api::uploads::create(&CreateUpload {
        size: None,
        sha256,
        url: Some(url.to_string()),
    }))?;
    let b = bar(None, &format!("master fetching {name}"));
    let mut misses = 0u32;
    while up.state == UploadState::Fetching {
        if let (Some(n), None) = (up.size, b.length()) {
            b.set_length(n);
            b.set_style(
                ProgressStyle::with_template(
                    "{msg} [{wide_bar}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
        }
        b.set_position(up.offset);
        std::thread::sleep(Duration::from_millis(500));
        match client.call(api::uploads::show(up.id)) {
            Ok(u) => {
                misses = 0;
                up = u;
            }
            Err(e) if retryable(&e) && misses < MAX_STALLED => misses += 1,
            Err(e) => {
                b.finish_and_clear();
                return Err(e);
            }
        }
    }
    b.finish_and_clear();
    match (up.state, up.error.take()) {
        (UploadState::Complete, _) => Ok(up),
        (_, Some(error)) => Err(CliError::Api(ApiError { error })),
        (other, None) => Err(CliError::Failed(format!(
            "the import of {url} ended {}",
            other.as_str()
        ))),
    }
}
