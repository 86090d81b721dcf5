//! Appending a request body to an upload's file as it streams in: never
//! whole in memory, hashed on the way, bounded by the upload's size, ended
//! when the client goes silent.

use futures::StreamExt;
use sha2::{Digest, Sha256};
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncSeekExt, AsyncWriteExt};

/// How a body ended. In every case but `TooLong` the bytes received are
/// in the file and in the hash.
#[derive(Debug, PartialEq, Eq)]
pub enum Received {
    /// The whole body came.
    Ended,
    /// The connection broke (or the client went silent) mid-body.
    Cut(String),
    /// The body went past the upload's size: this request's bytes were
    /// dropped again.
    TooLong,
}

/// Append `body` to `path` (which holds `start` bytes), at most `limit`
/// bytes in all, updating `hash` (the hash of the first `start` bytes).
/// Returns the file's new length. An I/O error leaves the file holding a
/// prefix of what was sent and `hash` unusable; the caller drops it.
pub async fn receive(
    path: &Path,
    start: u64,
    limit: u64,
    hash: &mut Sha256,
    body: axum::body::Body,
    idle: Duration,
) -> std::io::Result<(u64, Received)> {
    let file = tokio::fs::OpenOptions::new().write(true).open(path).await?;
    let mut file = tokio::io::BufWriter::with_capacity(1 << 20, file);
    file.seek(std::io::SeekFrom::Start(start)).await?;
    let mut stream = body.into_data_stream();
    let mut h = hash.clone();
    let mut len = start;
    let outcome = loop {
        let chunk = match tokio::time::timeout(idle, stream.next()).await {
            Err(_) => break Received::Cut(format!("no data for {} s", idle.as_secs())),
            Ok(None) => break Received::Ended,
            Ok(Some(Err(e))) => break Received::Cut(e.to_string()),
            Ok(Some(Ok(c))) => c,
        };
        if len + chunk.len() as u64 > limit {
            break Received::TooLong;
        }
        file.write_all(&chunk).await?;
        h.update(&chunk);
        len += chunk.len() as u64;
    };
    file.flush().await?;
    let file = file.into_inner();
    if outcome == Received::TooLong {
        file.set_len(start).await?;
        return Ok((start, outcome));
    }
    if len == limit {
        file.sync_all().await?;
    }
    *hash = h;
    Ok((len, outcome))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body_of(chunks: Vec<Result<&'static [u8], std::io::Error>>) -> axum::body::Body {
        axum::body::Body::from_stream(futures::stream::iter(
            chunks
                .into_iter()
                .map(|c| c.map(bytes_of))
                .collect::<Vec<_>>(),
        ))
    }

    fn bytes_of(s: &'static [u8]) -> axum::body::Bytes {
        axum::body::Bytes::from_static(s)
    }

    #[tokio::test]
    async fn bodies_are_appended_hashed_bounded_and_kept_when_cut() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("u");
        std::fs::write(&p, b"").unwrap();
        let mut h = Sha256::new();
        let idle = Duration::from_secs(5);
        // A body cut after "ab": the two bytes stay.
        let cut = body_of(vec![
            Ok(b"ab"),
            Err(std::io::Error::other("connection reset")),
        ]);
        let (len, out) = receive(&p, 0, 6, &mut h, cut, idle).await.unwrap();
        assert_eq!(len, 2);
        assert!(matches!(out, Received::Cut(_)), "{out:?}");
        // Resumed from 2: "cd", then too long: dropped again.
        let long = body_of(vec![Ok(b"cd"), Ok(b"efg")]);
        let (len, out) = receive(&p, 2, 6, &mut h, long, idle).await.unwrap();
        assert_eq!((len, out), (2, Received::TooLong));
        assert_eq!(std::fs::read(&p).unwrap(), b"ab");
        let rest = body_of(vec![Ok(b"cd"), Ok(b"ef")]);
        let (len, out) = receive(&p, 2, 6, &mut h, rest, idle).await.unwrap();
        assert_eq!((len, out), (6, Received::Ended));
        assert_eq!(std::fs::read(&p).unwrap(), b"abcdef");
        assert_eq!(
            hex::encode(h.finalize()),
            hex::encode(Sha256::digest(b"abcdef"))
        );
        assert_eq!(
            hex::encode(super::super::hash_prefix(&p, 4).unwrap().finalize()),
            hex::encode(Sha256::digest(b"abcd"))
        );
    }

    #[tokio::test]
    async fn a_silent_client_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("u");
        std::fs::write(&p, b"").unwrap();
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<axum::body::Bytes, std::io::Error>>(1);
        tx.send(Ok(bytes_of(b"xy"))).await.unwrap();
        let body = axum::body::Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
        let mut h = Sha256::new();
        let (len, out) = receive(&p, 0, 10, &mut h, body, Duration::from_millis(200))
            .await
            .unwrap();
        drop(tx);
        assert_eq!(len, 2);
        assert!(matches!(out, Received::Cut(m) if m.contains("no data")));
    }
}
