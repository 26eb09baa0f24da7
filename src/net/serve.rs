//! Serves the router on connections from a listener, one tracked task per
//! connection, with hyper's HTTP/1 server (what `axum::serve` did, plus
//! the timeouts it does not expose).
//!
//! Owns the per-connection HTTP settings: a connection must complete each
//! request head within `header_read` of hyper starting to wait for it, idle
//! time included (the server passes `--keepalive-timeout-s`: the first head
//! of a connection was already read within `--header-timeout-s`, see
//! `sse::direct`), upgrades (websockets) are allowed, and on shutdown each
//! connection finishes its request in flight and closes. Each request carries the
//! peer's address (`ConnectInfo<SocketAddr>`, for the per-IP limits) and the
//! connection's [`WriteStall`]. Never routes, never reads bodies.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tower::ServiceExt;

use super::deadline::is_write_timeout;
use crate::shutdown::Shutdown;

/// Set when the connection ended because its write deadline ran out: a
/// response streamed through hyper (`/sse` on a kept-alive connection)
/// learns why its body was dropped.
#[derive(Clone, Debug, Default)]
pub struct WriteStall(Arc<AtomicBool>);

impl WriteStall {
    pub fn stalled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Serves `app` on every connection `listener` yields until shutdown.
pub fn serve<L>(
    shutdown: &Shutdown,
    mut listener: L,
    app: Router,
    header_read: Duration,
    what: &'static str,
) where
    L: axum::serve::Listener<Addr = SocketAddr>,
{
    let tasks = shutdown.clone();
    shutdown.spawn(async move {
        loop {
            let (io, peer) = tokio::select! {
                _ = tasks.requested() => return,
                accepted = listener.accept() => accepted,
            };
            let stop = tasks.clone();
            tasks.spawn(connection(io, peer, app.clone(), header_read, stop, what));
        }
    });
}

/// Serves one connection until it closes (or shutdown has drained it).
pub(crate) async fn connection<Io>(
    io: Io,
    peer: SocketAddr,
    app: Router,
    header_read: Duration,
    shutdown: Shutdown,
    what: &'static str,
) where
    Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let stall = WriteStall::default();
    let service = {
        let stall = stall.clone();
        hyper::service::service_fn(move |mut request: http::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            request.extensions_mut().insert(stall.clone());
            app.clone().oneshot(request)
        })
    };
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(header_read);
    let conn = http
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(conn);
    let served = tokio::select! {
        served = conn.as_mut() => served,
        _ = shutdown.requested() => {
            conn.as_mut().graceful_shutdown();
            conn.as_mut().await
        }
    };
    if let Err(error) = served {
        // Before `conn` drops (and with it a streaming body).
        if is_write_timeout(&error) {
            stall.0.store(true, Ordering::Relaxed);
        }
        tracing::debug!(%peer, %error, "{what}: connection ended");
    }
}
