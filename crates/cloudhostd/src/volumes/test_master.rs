//! A stand-in for the master's `/v1/agent/transfers/{id}` in unit tests:
//! a local HTTP/1.1 server answering each connection as told.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// One request the stand-in master received.
#[derive(Debug)]
pub struct Seen {
    pub head: String,
    pub body: Vec<u8>,
}

/// Answer `answers.len()` connections, one request each, with the
/// (status, headers, body) given; returns the base URL and what came.
pub async fn master(answers: Vec<(u16, Vec<u8>)>) -> (String, tokio::task::JoinHandle<Vec<Seen>>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", l.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let mut seen = Vec::new();
        for (status, body) in answers {
            let (mut c, _) = l.accept().await.unwrap();
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
            let mut req_body = buf[head_end..].to_vec();
            while req_body.len() < len {
                let n = c.read(&mut chunk).await.unwrap();
                assert!(n > 0, "connection closed in the body");
                req_body.extend_from_slice(&chunk[..n]);
            }
            let reply = format!(
                "HTTP/1.1 {status} X\r\ncontent-length: {}\r\ncontent-type: application/octet-stream\r\nconnection: close\r\n\r\n",
                body.len()
            );
            // A client that stops reading (too long) may close first.
            let _ = c.write_all(reply.as_bytes()).await;
            let _ = c.write_all(&body).await;
            let _ = c.shutdown().await;
            seen.push(Seen {
                head,
                body: req_body,
            });
        }
        seen
    });
    (base, task)
}
