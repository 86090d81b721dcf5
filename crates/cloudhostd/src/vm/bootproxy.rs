//! The boot proxy: the only thing on the host a guest reaches by default.
//!
//! QEMU hands each connection a guest opens to `10.0.2.2:PORT` to a relay
//! process (relay.rs), which joins it to this VM's `boot.sock`. Here each
//! request is read with bounds (header size and time, body size), and only
//! the master's guest routes, `/boot/...` and `/nocloud/...`, go on to the
//! master at its own URL (`--master`: loopback or another machine, and TLS
//! once the master speaks it), without this host's token. Anything else is
//! refused with 403. As OpenStack's metadata proxy, it lets guests reach
//! their configuration and nothing else of the control plane.

use crate::client::Master;
use cm_api::{ApiError, ErrorCode};
use futures::StreamExt;
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full, Limited, StreamBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use token_bucket::TokenBucket;
use tokio::net::UnixListener;
use tokio::sync::Semaphore;

/// Connections of one guest at once; more are closed at once.
const MAX_CONNS: usize = 8;
/// Requests of one guest per second, and at once.
const REQUESTS_PER_SEC: f64 = 10.0;
const REQUEST_BURST: f64 = 20.0;
/// A request's head: its size, and how long it may take to arrive.
const MAX_HEAD: usize = 16 * 1024;
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// A request's body (update_cache, assign and heartbeat bodies are small).
const MAX_BODY: usize = 256 * 1024;
const BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// One request to the master, its answer's body included; long-polls of
/// `GET /boot/v1/configs/{uuid}?wait=S` last up to 60 s.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(120);
/// A connection is asked to close after this long (the request under way
/// finishes first).
const MAX_CONN_LIFE: Duration = Duration::from_secs(600);

/// The request headers passed to the master; the rest stay behind.
const PASSED: [HeaderName; 6] = [
    header::AUTHORIZATION,
    header::CONTENT_TYPE,
    header::ACCEPT,
    header::USER_AGENT,
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
];

type Body = UnsyncBoxBody<Bytes, std::io::Error>;

#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error("guests reach only /boot/ and /nocloud/ on the master")]
    NotGuestRoute,
    #[error("method not allowed")]
    Method,
    #[error("the request body is larger than {MAX_BODY} bytes")]
    TooLarge,
    #[error("the request body could not be read: {0}")]
    BadBody(String),
    #[error("the master cannot be reached: {0}")]
    Unreachable(String),
}

impl Refusal {
    fn code(&self) -> ErrorCode {
        match self {
            Refusal::NotGuestRoute => ErrorCode::Forbidden,
            Refusal::Method => ErrorCode::MethodNotAllowed,
            Refusal::TooLarge => ErrorCode::BodyTooLarge,
            Refusal::BadBody(_) => ErrorCode::MalformedBody,
            Refusal::Unreachable(_) => ErrorCode::HostUnavailable,
        }
    }

    fn response(&self) -> Response<Body> {
        let code = self.code();
        let body = serde_json::to_vec(&ApiError::new(code, self.to_string())).unwrap_or_default();
        let mut r = Response::new(full(body));
        *r.status_mut() =
            StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        r
    }
}

fn full(b: Vec<u8>) -> Body {
    Full::new(Bytes::from(b))
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// Whether `path` (a request's path, still percent-encoded) is one of the
/// master's guest routes, with nothing that a URL parser would turn into
/// another path: no `.` or `..` segment, no backslash, no encoded dot,
/// slash or backslash.
pub fn is_guest_route(path: &str) -> bool {
    if !(path.starts_with("/boot/") || path.starts_with("/nocloud/")) {
        return false;
    }
    let lower = path.to_ascii_lowercase();
    if path.contains('\\') || ["%2e", "%2f", "%5c"].iter().any(|e| lower.contains(e)) {
        return false;
    }
    !path.split('/').any(|seg| seg == "." || seg == "..")
}

/// One VM's proxy: its master, its rate.
struct Proxy {
    master: Arc<Master>,
    rate: Mutex<TokenBucket>,
}

impl Proxy {
    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        match self.forward(req).await {
            Ok(r) => r,
            Err(e) => e.response(),
        }
    }

    async fn forward(&self, req: Request<Incoming>) -> Result<Response<Body>, Refusal> {
        let (head, body) = req.into_parts();
        if !matches!(
            head.method,
            Method::GET | Method::HEAD | Method::PUT | Method::POST
        ) {
            return Err(Refusal::Method);
        }
        // Only origin-form targets (`GET /boot/... HTTP/1.1`).
        if head.uri.scheme().is_some() || head.uri.authority().is_some() {
            return Err(Refusal::NotGuestRoute);
        }
        let path = head.uri.path();
        if !is_guest_route(path) {
            return Err(Refusal::NotGuestRoute);
        }
        let target = head
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or(path);
        let wait = match self.rate.lock() {
            Ok(mut b) => b.take(1.0),
            Err(p) => p.into_inner().take(1.0),
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        let mut up = self
            .master
            .guest_request(head.method.clone(), target)
            .ok_or(Refusal::NotGuestRoute)?
            .timeout(UPSTREAM_TIMEOUT);
        for name in PASSED {
            for v in head.headers.get_all(&name) {
                up = up.header(&name, v);
            }
        }
        if matches!(head.method, Method::PUT | Method::POST) {
            let bytes = tokio::time::timeout(BODY_TIMEOUT, Limited::new(body, MAX_BODY).collect())
                .await
                .map_err(|_| Refusal::BadBody("too slow".into()))?
                .map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        Refusal::TooLarge
                    } else {
                        Refusal::BadBody(e.to_string())
                    }
                })?
                .to_bytes();
            up = up.body(bytes);
        }
        let resp = up
            .send()
            .await
            .map_err(|e| Refusal::Unreachable(e.without_url().to_string()))?;
        let mut out = Response::builder().status(resp.status().as_u16());
        for (name, v) in resp.headers() {
            if !is_hop_by_hop(name) {
                out = out.header(name, v);
            }
        }
        let stream = resp
            .bytes_stream()
            .map(|r| r.map(Frame::data).map_err(std::io::Error::other));
        out.body(StreamBody::new(stream).boxed_unsync())
            .map_err(|e| Refusal::Unreachable(e.to_string()))
    }
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    [
        header::CONNECTION,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::TE,
        header::TRAILER,
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
    ]
    .contains(name)
        || name.as_str() == "keep-alive"
}

/// Serve one VM's proxy socket until the task is aborted (its VM removed).
pub async fn serve(master: Arc<Master>, sock: PathBuf) {
    let _ = std::fs::remove_file(&sock);
    let listener = match UnixListener::bind(&sock) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("boot proxy {}: {e}", sock.display());
            return;
        }
    };
    let proxy = Arc::new(Proxy {
        master,
        rate: Mutex::new(TokenBucket::new(REQUESTS_PER_SEC, REQUEST_BURST)),
    });
    let conns = Arc::new(Semaphore::new(MAX_CONNS));
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!("boot proxy {}: {e}", sock.display());
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Over the limit: closed at once, and its relay process exits.
        let Ok(permit) = conns.clone().try_acquire_owned() else {
            continue;
        };
        let proxy = proxy.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let proxy = proxy.clone();
                async move { Ok::<_, std::convert::Infallible>(proxy.handle(req).await) }
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            // A guest may shut its side after the request (`nc`, and the
            // relay passes that on): the answer must still go back.
            builder
                .half_close(true)
                .timer(TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT)
                .max_buf_size(MAX_HEAD);
            let conn = builder.serve_connection(TokioIo::new(stream), svc);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = tokio::time::sleep(MAX_CONN_LIFE) => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(UPSTREAM_TIMEOUT, conn).await;
                }
            }
            drop(permit);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_guest_routes_pass() {
        for ok in [
            "/boot/v1/configs/0b0c5a52-1c5f-4c4e-9c38-6c1b1b1b1b1b",
            "/boot/v1/configs/x/status",
            "/boot/v1/assign",
            "/nocloud/u/meta-data",
            "/nocloud/u/",
        ] {
            assert!(is_guest_route(ok), "{ok}");
        }
        for bad in [
            "/v1/info",
            "/",
            "",
            "/boot",
            "/bootx/v1",
            "/nocloud",
            "/v1/agent/register",
            "/boot/../v1/info",
            "/boot/./../v1/info",
            "/nocloud/..",
            "/boot/%2e%2e/v1/info",
            "/boot/%2E%2e/v1/info",
            "/boot/.%2e/v1/info",
            "/boot/..%2fv1/info",
            "/boot/..%2Fv1/info",
            "/boot\\..\\v1/info",
            "/boot/%5c..%5cv1",
        ] {
            assert!(!is_guest_route(bad), "{bad}");
        }
    }

    #[test]
    fn refusals_are_the_json_error_document() {
        let r = Refusal::NotGuestRoute.response();
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
        assert_eq!(Refusal::TooLarge.response().status(), 413);
        assert_eq!(Refusal::Unreachable("x".into()).response().status(), 503);
    }
}
