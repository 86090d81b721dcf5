//! The HTTP server around the router: our own accept loop on hyper, so that
//! a hostile or broken client cannot hold the master (docs/security.md,
//! "The master under hostile clients"):
//! - a header-read timeout: a connection that has not sent a whole request
//!   head this long after it opened (or after its last answer) is closed,
//!   so half-sent headers (slowloris) and idle keep-alives free their slot;
//! - a connection limit: past `max_connections` open connections the loop
//!   stops accepting, newcomers wait in the kernel's backlog and are taken
//!   as soon as a slot frees;
//! - each request carries its peer address (`ConnectInfo`) for the rate limits;
//! - graceful shutdown: stop accepting, let requests in flight finish,
//!   and give up on streams that never end (an SSE follower) after a bound.

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// How long requests in flight may finish after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// A request head must arrive within this after the connection opens
    /// or after the previous answer.
    pub header_read_timeout: Duration,
    /// Open connections at most; more wait to be accepted.
    pub max_connections: usize,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            header_read_timeout: Duration::from_secs(10),
            max_connections: crate::config::MAX_CONNECTIONS,
        }
    }
}

/// Serve `router` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnLimits,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    // Connections watch this and finish gracefully when it turns true.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let mut warned_full = false;
    tokio::pin!(shutdown);
    loop {
        if slots.available_permits() == 0 && !warned_full {
            warned_full = true;
            tracing::warn!(
                "{} connections open (the limit): new ones wait until one closes",
                limits.max_connections
            );
        }
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    accept_error(e).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        if slots.available_permits() > 0 {
            warned_full = false;
        }
        let _ = stream.set_nodelay(true);
        let svc = tower::ServiceExt::map_request(
            router.clone(),
            move |mut req: axum::http::Request<Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                req.map(axum::body::Body::new)
            },
        );
        let conn = http
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(svc))
            .with_upgrades();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            tokio::pin!(conn);
            let stopping = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            let res = tokio::select! {
                r = conn.as_mut() => r,
                _ = stopping => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = res {
                tracing::debug!("connection from {peer}: {e}");
            }
            drop(permit);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    // Every connection holds a slot: all slots free means all closed.
    let all = u32::try_from(limits.max_connections.max(1)).unwrap_or(u32::MAX);
    if tokio::time::timeout(SHUTDOWN_GRACE, slots.acquire_many(all))
        .await
        .is_err()
    {
        tracing::info!(
            "closing streams still open after {}s",
            SHUTDOWN_GRACE.as_secs()
        );
    }
    Ok(())
}

/// Errors of `accept`: a connection that died in the backlog is nothing;
/// out of file descriptors is a pause, not a busy loop.
async fn accept_error(e: std::io::Error) {
    use std::io::ErrorKind as K;
    if matches!(
        e.kind(),
        K::ConnectionAborted | K::ConnectionReset | K::ConnectionRefused | K::Interrupted
    ) {
        return;
    }
    tracing::warn!("accept: {e}");
    tokio::time::sleep(Duration::from_millis(100)).await;
}
