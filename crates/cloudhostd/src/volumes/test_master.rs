//! A stand-in for the master's `/v1/agent/transfers/{id}` in unit tests:
//! a local HTTP/1.1 server answering each connection as told (`master`),
//! or keeping what is PUT and serving it to a GET (`relay`).

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One request the stand-in master received.
#[derive(Debug)]
pub struct Seen {
    /// The request line and headers, lowercased.
    pub head: String,
    pub body: Vec<u8>,
}

async fn read_request(c: &mut TcpStream) -> Seen {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    let head_end = loop {
        let n = c.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed in the head");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < len {
        let n = c.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed in the body");
        body.extend_from_slice(&chunk[..n]);
    }
    Seen { head, body }
}

async fn reply(c: &mut TcpStream, status: u16, body: &[u8]) {
    let head = format!(
        "HTTP/1.1 {status} X\r\ncontent-length: {}\r\ncontent-type: application/octet-stream\r\nconnection: close\r\n\r\n",
        body.len()
    );
    // A client that stops reading (too long) may close first.
    let _ = c.write_all(head.as_bytes()).await;
    let _ = c.write_all(body).await;
    let _ = c.shutdown().await;
}

/// Answer `answers.len()` connections, one request each, with the
/// (status, body) given; returns the base URL and what came.
pub async fn master(answers: Vec<(u16, Vec<u8>)>) -> (String, tokio::task::JoinHandle<Vec<Seen>>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", l.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let mut seen = Vec::new();
        for (status, body) in answers {
            let (mut c, _) = l.accept().await.unwrap();
            let req = read_request(&mut c).await;
            reply(&mut c, status, &body).await;
            seen.push(req);
        }
        seen
    });
    (base, task)
}

/// What a relay was sent last: the `x-cm-sha256` it came with, its length.
pub type Received = std::sync::Arc<std::sync::Mutex<Option<(String, u64)>>>;

/// A master that keeps the last body PUT (any transfer id) and serves it
/// to GETs (409 before); runs until the test ends.
pub async fn relay() -> (String, Received) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", l.local_addr().unwrap());
    let received = Received::default();
    let r = received.clone();
    tokio::spawn(async move {
        let mut kept: Option<Vec<u8>> = None;
        loop {
            let (mut c, _) = l.accept().await.unwrap();
            let req = read_request(&mut c).await;
            if req.head.starts_with("put ") {
                let sha = req
                    .head
                    .lines()
                    .find_map(|l| l.strip_prefix("x-cm-sha256: "))
                    .unwrap_or_default()
                    .trim()
                    .to_string();
                *r.lock().unwrap() = Some((sha, req.body.len() as u64));
                kept = Some(req.body);
                reply(&mut c, 200, b"{}").await;
            } else {
                match &kept {
                    Some(b) => reply(&mut c, 200, b).await,
                    None => reply(&mut c, 409, b"{}").await,
                }
            }
        }
    });
    (base, received)
}
