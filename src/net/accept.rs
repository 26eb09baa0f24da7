//! The accept loop of every listener: each TCP socket gets its slot in the
//! connection limits and its write deadline the moment it is accepted,
//! before a byte is read.
//!
//! Owns socket admission: a client may hold [`SOCKETS_PER_CLIENT`] sockets,
//! so `--max-connections` (capped below the open-file limit, so accepting
//! never runs out of descriptors) and `--max-connections-per-ip` (of the TCP
//! peer; a `--trusted-proxies` peer carries many clients and counts only in
//! the total) bound sockets at twice their number; the transports count
//! their clients against the numbers themselves, and answer the client one
//! over with a 503 on its spare socket. A socket over a socket limit is
//! closed at once, so a flood never fills the kernel's backlog; past the total, a few
//! reserve slots still answer `/healthz` and `/readyz` (one request, short
//! header timeout) for health checks. `EMFILE`/`ENFILE` pause accepting
//! briefly. Refusals and accept failures are logged at most once a second.
//! Used by `server` for the plain listener, the HTTPS listener (under TLS)
//! and the plain-HTTP listener beside HTTPS; never reads a request itself.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::deadline::WriteDeadline;
use crate::security::{ConnectionGuard, LimitRefusal, Limits, Security};
use crate::shutdown::Shutdown;
use crate::telemetry;

/// Sockets one client may hold: a Socket.IO polling client has its long
/// poll and a POST open at once (and a refused client needs one to hear why).
pub const SOCKETS_PER_CLIENT: usize = 2;
/// Descriptors kept out of `--max-connections` for everything else: the
/// listeners, broker connections, files, the runtime's own.
const FD_HEADROOM: usize = 64;
/// Sockets past the total limit that may still ask `/healthz` or `/readyz`.
const HEALTH_RESERVE: usize = 8;
/// How long a reserve socket may take to send its request head.
const RESERVE_HEADER_TIMEOUT: Duration = Duration::from_secs(1);
/// Pause after the process ran out of descriptors.
const EXHAUSTED_PAUSE: Duration = Duration::from_millis(100);

/// Socket admission shared by every listener of the server.
#[derive(Clone)]
pub struct Sockets {
    guard: Arc<ConnectionGuard>,
    security: Arc<Security>,
    write_timeout: Duration,
    reserve: Arc<Semaphore>,
}

impl Sockets {
    /// The socket limits from the connection limits, with the total capped
    /// by the open-file limit (raised to its hard maximum first).
    pub fn new(security: Arc<Security>, write_timeout: Duration) -> Sockets {
        let limits = security.limits();
        let mut max_connections = limits.max_connections.saturating_mul(SOCKETS_PER_CLIENT);
        if let Some(files) = raise_open_file_limit() {
            let room = files.saturating_sub(FD_HEADROOM + HEALTH_RESERVE).max(1);
            if max_connections == 0 || max_connections > room {
                tracing::info!(
                    max_connections = limits.max_connections,
                    open_files = files,
                    "--max-connections needs more open files than allowed; \
                     at most {room} sockets are admitted (raise `ulimit -n` for more)"
                );
                max_connections = room;
            }
        }
        let guard = ConnectionGuard::new(Limits {
            max_connections,
            max_connections_per_ip: limits
                .max_connections_per_ip
                .saturating_mul(SOCKETS_PER_CLIENT),
            // The connect rate is the transports' (per client, not per socket).
            connect_rate_per_ip: 0.0,
            ..limits.clone()
        });
        Sockets {
            guard,
            security,
            write_timeout,
            reserve: Arc::new(Semaphore::new(HEALTH_RESERVE)),
        }
    }

    /// Accepts on `listener`; with `health`, sockets past the total limit
    /// may use a reserve slot to reach that router.
    pub fn accept(&self, listener: TcpListener, health: Option<(Router, Shutdown)>) -> Accept {
        Accept {
            listener,
            sockets: self.clone(),
            health,
            refused: Throttle::default(),
            failed: Throttle::default(),
        }
    }
}

/// A listener whose sockets carry their slot and write deadline.
pub struct Accept {
    listener: TcpListener,
    sockets: Sockets,
    health: Option<(Router, Shutdown)>,
    refused: Throttle,
    failed: Throttle,
}

impl Accept {
    /// Admits or closes one accepted socket.
    fn admit(&mut self, tcp: TcpStream, peer: SocketAddr) -> Option<WriteDeadline<TcpStream>> {
        let sockets = &self.sockets;
        let ip = Some(peer.ip()).filter(|ip| !sockets.security.proxies.contains(*ip));
        let socket = |tcp: TcpStream| {
            // Small frames must leave at once: Nagle's algorithm with delayed
            // ACKs adds tens of milliseconds per message otherwise.
            let _ = tcp.set_nodelay(true);
            WriteDeadline::new(tcp, sockets.write_timeout)
        };
        let refusal = match sockets.guard.admit(ip) {
            Ok(slot) => return Some(socket(tcp).with_slot(slot)),
            Err(refusal) => refusal,
        };
        telemetry::refused("limit", refusal.code());
        if refusal == LimitRefusal::TooManyConnections
            && let Some((router, shutdown)) = &self.health
            && let Ok(reserve) = sockets.reserve.clone().try_acquire_owned()
        {
            let (router, stop) = (router.clone(), shutdown.clone());
            let io = socket(tcp);
            shutdown.spawn(async move {
                let _reserve = reserve;
                super::serve::connection(io, peer, router, RESERVE_HEADER_TIMEOUT, stop, "reserve")
                    .await;
            });
            return None;
        }
        if let Some(suppressed) = self.refused.ready() {
            tracing::warn!(
                %peer,
                code = refusal.code(),
                open = sockets.guard.open(),
                suppressed,
                "sockets refused at accept (one line per second at most)"
            );
        }
        None
    }
}

impl axum::serve::Listener for Accept {
    type Io = WriteDeadline<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.listener.accept().await {
                Ok((tcp, peer)) => {
                    if let Some(io) = self.admit(tcp, peer) {
                        return (io, peer);
                    }
                }
                Err(error) => {
                    let exhausted = is_exhaustion(&error);
                    if let Some(suppressed) = self.failed.ready() {
                        tracing::warn!(%error, suppressed, "accept failed (one line per second at most)");
                    }
                    if exhausted {
                        // Spinning would not free a descriptor; closing
                        // connections (timeouts, clients leaving) will.
                        tokio::time::sleep(EXHAUSTED_PAUSE).await;
                    }
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.listener.local_addr()
    }
}

/// Out of descriptors or kernel memory: accepting again at once would fail
/// the same way. (Other accept errors concern one connection.)
fn is_exhaustion(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// At most one log line per second; counts what it kept quiet.
#[derive(Default)]
struct Throttle {
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    /// `Some(lines suppressed since the last one)` when a line may go out.
    fn ready(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|last| now.duration_since(last) < Duration::from_secs(1))
        {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// Raises the soft open-file limit to the hard one; returns the limit in
/// force (`None` when it cannot be read or is unlimited).
fn raise_open_file_limit() -> Option<usize> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        }
    }
    if limit.rlim_cur == libc::RLIM_INFINITY {
        return None;
    }
    usize::try_from(limit.rlim_cur).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_throttle_lets_one_line_a_second_through_and_counts_the_rest() {
        let mut throttle = Throttle::default();
        assert_eq!(throttle.ready(), Some(0));
        assert_eq!(throttle.ready(), None);
        assert_eq!(throttle.ready(), None);
        throttle.last = Some(Instant::now() - Duration::from_secs(2));
        assert_eq!(throttle.ready(), Some(2));
    }

    #[test]
    fn the_open_file_limit_is_known_and_positive() {
        assert!(raise_open_file_limit().is_some_and(|n| n > 0));
    }
}
