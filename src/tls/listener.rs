//! The HTTPS listener: accepts TCP, runs TLS handshakes in their own tasks
//! (a slow or hostile client never holds up the accept loop), and hands
//! finished streams to `net::serve` through a bounded channel ([`Handoff`]), so the same
//! router, websocket upgrades and graceful shutdown work as on plain HTTP.
//!
//! TLS-ALPN-01 validation handshakes (`acme-tls/1`) end after the handshake:
//! the certificate was the answer, there is no HTTP behind them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::Listener;
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, mpsc};

use rustls::ServerConfig;

use super::resolver::ACME_TLS_ALPN;
use super::stream::{self, TlsStream};
use crate::net::accept::Accept;
use crate::net::{Handoff, WriteDeadline};
use crate::shutdown::Shutdown;

/// Handshakes in progress at once; more wait in the kernel's backlog.
const MAX_HANDSHAKES: usize = 512;
/// Finished handshakes waiting for `axum::serve` to pick them up.
const READY_QUEUE: usize = 64;

/// The HTTPS listener: TLS streams, handshaken.
pub type TlsListener = Handoff<TlsStream<WriteDeadline<TcpStream>>>;

/// Starts accepting on `listener` (sockets already admitted, with their
/// write deadline); a client that has not finished its handshake within
/// `handshake_timeout` is dropped. Handshakes stop on shutdown.
pub fn start(
    listener: Accept,
    config: Arc<ServerConfig>,
    handshake_timeout: Duration,
    shutdown: &Shutdown,
) -> TlsListener {
    let local_addr = listener
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let (ready, handoff) = Handoff::channel(local_addr, READY_QUEUE);
    let tasks = shutdown.clone();
    shutdown.spawn(accept_loop(
        listener,
        config,
        handshake_timeout,
        ready,
        tasks,
    ));
    handoff
}

async fn accept_loop(
    mut listener: Accept,
    config: Arc<ServerConfig>,
    handshake_timeout: Duration,
    ready: mpsc::Sender<(TlsStream<WriteDeadline<TcpStream>>, SocketAddr)>,
    shutdown: Shutdown,
) {
    let permits = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    loop {
        let permit = tokio::select! {
            _ = shutdown.requested() => return,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
        };
        let (tcp, peer) = tokio::select! {
            _ = shutdown.requested() => return,
            accepted = listener.accept() => accepted,
        };
        let config = config.clone();
        let ready = ready.clone();
        let stop = shutdown.clone();
        shutdown.spawn(async move {
            let _permit = permit;
            let handshake = tokio::select! {
                _ = stop.requested() => return,
                done = tokio::time::timeout(handshake_timeout, stream::accept(tcp, config)) => done,
            };
            let stream = match handshake {
                Ok(Ok(stream)) => stream,
                Ok(Err(error)) => {
                    tracing::debug!(%peer, %error, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            if stream.alpn_protocol() == Some(ACME_TLS_ALPN) {
                tracing::info!(%peer, "answered a TLS-ALPN-01 validation");
                return;
            }
            // Err only when the server is shutting down: the stream is dropped.
            tokio::select! {
                _ = stop.requested() => {}
                _ = ready.send((stream, peer)) => {}
            }
        });
    }
}
