//! The write deadline every accepted socket carries: [`WriteDeadline`] fails
//! a write (and every later one) with `TimedOut` once the peer has accepted
//! no bytes for `--write-timeout-s`. It also holds the socket's slot in the
//! connection limits (from `accept`), freed when the socket is dropped,
//! whoever owns it then (hyper, a websocket task, an SSE stream).
//!
//! It sits directly on the TCP stream (under TLS, under hyper, under the
//! websocket and SSE writers), so no transport can forget it and no peer that
//! stops reading holds a socket, a slot or a write buffer for longer than the
//! timeout. The transports see the error as [`is_write_timeout`] and close
//! the client as `slow_consumer`. Reads pass through untouched: read
//! deadlines belong to the protocols (header timeout, heartbeats).
//!
//! The timer is allocated the first time a write has to wait, so an idle
//! connection pays one pointer for it.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::security::Permit;
use crate::telemetry::SocketMetric;

pub struct WriteDeadline<Io> {
    inner: Io,
    timeout: Duration,
    /// Runs while a write waits for the peer; `None` until one first had to.
    stalled: Option<Pin<Box<Sleep>>>,
    /// A write is waiting (the timer counts from when it started to).
    waiting: bool,
    /// The deadline passed: the connection is dead for writing.
    expired: bool,
    /// The socket's place in `--max-connections` and the per-IP limits, and
    /// in `roomcast_sockets`.
    _slot: Option<(Permit, SocketMetric)>,
}

impl<Io> WriteDeadline<Io> {
    pub fn new(inner: Io, timeout: Duration) -> Self {
        WriteDeadline {
            inner,
            timeout,
            stalled: None,
            waiting: false,
            expired: false,
            _slot: None,
        }
    }

    /// Ties the socket's slot in the limits to the socket.
    pub fn with_slot(mut self, slot: Permit) -> Self {
        self._slot = Some((slot, SocketMetric::open()));
        self
    }

    /// Called when a write could not proceed: starts the timer if it was
    /// not running, and fails once it has run out.
    fn poll_stalled(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        if !self.waiting {
            self.waiting = true;
            let at = Instant::now() + self.timeout;
            match &mut self.stalled {
                Some(sleep) => sleep.as_mut().reset(at),
                None => self.stalled = Some(Box::pin(tokio::time::sleep_until(at))),
            }
        }
        let Some(sleep) = self.stalled.as_mut() else {
            return Poll::Pending;
        };
        ready!(sleep.as_mut().poll(cx));
        self.expired = true;
        Poll::Ready(self.timed_out())
    }

    fn timed_out(&self) -> io::Error {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "write timed out: the peer accepted no bytes for {:?}",
                self.timeout
            ),
        )
    }

    /// Wraps one write-side poll: progress stops the timer, waiting runs it.
    fn guarded<T>(
        &mut self,
        cx: &mut Context<'_>,
        poll: impl FnOnce(Pin<&mut Io>, &mut Context<'_>) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>>
    where
        Io: Unpin,
    {
        if self.expired {
            return Poll::Ready(Err(self.timed_out()));
        }
        match poll(Pin::new(&mut self.inner), cx) {
            Poll::Ready(done) => {
                self.waiting = false;
                Poll::Ready(done)
            }
            Poll::Pending => self.poll_stalled(cx).map(Err),
        }
    }
}

impl<Io: AsyncRead + Unpin> AsyncRead for WriteDeadline<Io> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<Io: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<Io> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.guarded(cx, |io, cx| io.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.guarded(cx, |io, cx| io.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.guarded(cx, |io, cx| io.poll_flush(cx))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.expired {
            // Nothing more can leave; the caller drops the socket.
            return Poll::Ready(Ok(()));
        }
        self.guarded(cx, |io, cx| io.poll_shutdown(cx))
    }
}

/// True when `error`, anywhere in its source chain, is a write deadline
/// that ran out (the websocket layers wrap the I/O error).
pub fn is_write_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(error) = next {
        if let Some(io) = error.downcast_ref::<io::Error>()
            && io.kind() == io::ErrorKind::TimedOut
        {
            return true;
        }
        next = error.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_peer_that_reads_nothing_fails_the_write_after_the_timeout() {
        let (mut client, server) = tokio::io::duplex(16);
        let mut io = WriteDeadline::new(server, Duration::from_millis(200));
        let started = Instant::now();
        let error = io.write_all(&[0u8; 64]).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert!(is_write_timeout(&error));
        assert!(started.elapsed() >= Duration::from_millis(200));
        // Dead for writing from now on, at once; shutdown does not wait.
        assert!(io.write_all(b"x").await.is_err());
        io.shutdown().await.unwrap();
        let mut got = [0u8; 16];
        client.read_exact(&mut got).await.unwrap();
    }

    #[tokio::test]
    async fn a_slow_reader_that_keeps_reading_is_never_timed_out() {
        let (mut client, server) = tokio::io::duplex(16);
        let mut io = WriteDeadline::new(server, Duration::from_millis(300));
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            let mut chunk = [0u8; 16];
            while got.len() < 160 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let n = client.read(&mut chunk).await.unwrap();
                got.extend_from_slice(&chunk[..n]);
            }
            got.len()
        });
        // 1 s in all, but never 300 ms without progress.
        io.write_all(&[1u8; 160]).await.unwrap();
        assert_eq!(reader.await.unwrap(), 160);
    }
}
