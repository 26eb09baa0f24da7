//! A listener for `net::serve` fed through a channel by a background accept
//! loop that prepares each connection first (a TLS handshake, the SSE
//! routing), so a slow client never holds up the accept loop.

use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

pub struct Handoff<Io> {
    incoming: mpsc::Receiver<(Io, SocketAddr)>,
    local_addr: SocketAddr,
}

impl<Io> Handoff<Io> {
    /// The listener, and the sender its accept loop hands connections to.
    pub fn channel(local_addr: SocketAddr, queue: usize) -> (mpsc::Sender<(Io, SocketAddr)>, Self) {
        let (sender, incoming) = mpsc::channel(queue);
        let listener = Handoff {
            incoming,
            local_addr,
        };
        (sender, listener)
    }
}

impl<Io> axum::serve::Listener for Handoff<Io>
where
    Io: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Io = Io;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.incoming.recv().await {
            Some(next) => next,
            // The accept loop ended (shutdown): nothing more will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}
