//! The server side of a TLS connection as an `AsyncRead + AsyncWrite` stream,
//! over rustls's unbuffered connection ([`super::records`]), in place of
//! tokio-rustls.
//!
//! Why: the buffered `ServerConnection` behind tokio-rustls keeps a 4 KiB
//! record buffer per connection forever, the largest part of what an idle
//! HTTPS client costs (docs/TLS.md). Here an idle connection holds no buffer:
//! a read goes into a scratch buffer on the stack and is decrypted there;
//! only what it leaves over moves to the heap — a partial record, or
//! plaintext the caller had no room for — and is freed once used. A write is
//! sealed into a buffer that holds only what the socket has not taken yet,
//! freed once it has; a new write waits until then (backpressure).

use std::io;
use std::mem::{self, MaybeUninit};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use rustls::ServerConfig;
use rustls::server::UnbufferedServerConnection;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::records::{self, Goal, MAX_RECORD, Reached};

/// Most plaintext sealed per `poll_write`: four full records.
const MAX_WRITE: usize = 4 * 16_384;
/// Handshake messages being joined may span records (a long certificate
/// chain from a client, a large ClientHello); rustls caps a handshake message
/// at 64 KiB, so more buffered than that and a record is a hostile peer.
const MAX_HANDSHAKE_BUFFER: usize = 0xffff + MAX_RECORD;

/// A server-side TLS stream whose handshake is done ([`accept`]).
pub struct TlsStream<Io> {
    io: Io,
    conn: UnbufferedServerConnection,
    /// Received bytes not yet processed: a partial record (in the handshake,
    /// also messages being joined). Unallocated between records.
    incoming: Vec<u8>,
    /// Decrypted, not yet read.
    plaintext: Waiting,
    /// TLS the socket has not taken yet.
    outgoing: Waiting,
    /// The peer sent close_notify, or its socket ended at a record boundary.
    peer_closed: bool,
    close_sent: bool,
    /// The connection refused the peer's bytes (or could not seal): every
    /// read and write after that is an error too.
    failed: bool,
}

/// Runs the server side of a TLS handshake on `io` (ALPN and the
/// certificate come from `config`).
pub async fn accept<Io>(io: Io, config: Arc<ServerConfig>) -> io::Result<TlsStream<Io>>
where
    Io: AsyncRead + AsyncWrite + Unpin,
{
    let conn = UnbufferedServerConnection::new(config).map_err(records::tls_error)?;
    let mut stream = TlsStream {
        io,
        conn,
        incoming: Vec::new(),
        plaintext: Waiting::default(),
        outgoing: Waiting::default(),
        peer_closed: false,
        close_sent: false,
        failed: false,
    };
    std::future::poll_fn(|cx| stream.poll_handshake(cx)).await?;
    Ok(stream)
}

impl<Io> TlsStream<Io> {
    /// The protocol agreed by ALPN.
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        self.conn.alpn_protocol()
    }

    /// Runs the connection over `received` (the front of which it returns
    /// as processed); application data goes into `out` while it has room, the
    /// rest into `self.plaintext` (only ever given an `out` while
    /// `self.plaintext` is empty, so the order holds).
    fn process(
        &mut self,
        received: &mut [u8],
        mut out: Option<&mut ReadBuf<'_>>,
        goal: Goal<'_>,
    ) -> (usize, io::Result<Reached>) {
        let plaintext = &mut self.plaintext.bytes;
        let mut io = records::Buffers {
            outgoing: &mut self.outgoing.bytes,
            plaintext: |mut data: &[u8]| {
                if let Some(out) = out.as_deref_mut() {
                    let n = data.len().min(out.remaining());
                    out.put_slice(&data[..n]);
                    data = &data[n..];
                }
                plaintext.extend_from_slice(data);
            },
            peer_closed: &mut self.peer_closed,
        };
        records::advance(&mut self.conn, received, &mut io, goal)
    }

    /// [`Self::process`] over `self.incoming`, keeping what is left of it
    /// (dropping the allocation when nothing is).
    fn process_incoming(
        &mut self,
        out: Option<&mut ReadBuf<'_>>,
        goal: Goal<'_>,
    ) -> io::Result<Reached> {
        let mut incoming = mem::take(&mut self.incoming);
        let (done, result) = self.process(&mut incoming, out, goal);
        incoming.drain(..done);
        if !incoming.is_empty() {
            self.incoming = incoming;
        }
        result
    }
}

impl<Io: AsyncRead + AsyncWrite + Unpin> TlsStream<Io> {
    fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            let processed = self.process_incoming(None, Goal::Read);
            if let Err(error) = processed {
                return Poll::Ready(Err(self.failed(cx, error)));
            }
            // The server's flight reaches the client before we wait for its answer.
            ready!(self.poll_send(cx))?;
            if !self.conn.is_handshaking() {
                self.incoming.shrink_to_fit();
                return Poll::Ready(Ok(()));
            }
            if self.peer_closed {
                return Poll::Ready(Err(eof("closed during the TLS handshake")));
            }
            if self.incoming.len() > MAX_HANDSHAKE_BUFFER {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "TLS handshake messages too large",
                )));
            }
            if ready!(self.poll_fill(cx))? == 0 {
                return Poll::Ready(Err(eof("closed during the TLS handshake")));
            }
        }
    }

    /// Reads once from the socket (after the partial record in
    /// `self.incoming`, if any) and processes what came.
    fn poll_receive(
        &mut self,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let processed = if self.incoming.is_empty() {
            let mut scratch = [MaybeUninit::<u8>::uninit(); MAX_RECORD];
            let mut read = ReadBuf::uninit(&mut scratch);
            ready!(Pin::new(&mut self.io).poll_read(cx, &mut read))?;
            let received = read.filled_mut();
            if received.is_empty() {
                // Ended between records without close_notify: an end all the
                // same (HTTP and the transports frame their own messages).
                self.peer_closed = true;
                return Poll::Ready(Ok(()));
            }
            let (done, processed) = self.process(received, Some(out), Goal::Read);
            if done < received.len() {
                self.incoming = received[done..].to_vec();
            }
            processed
        } else {
            if ready!(self.poll_fill(cx))? == 0 {
                return Poll::Ready(Err(eof("connection closed inside a TLS record")));
            }
            self.process_incoming(Some(out), Goal::Read)
        };
        match processed {
            Ok(_) => Poll::Ready(Ok(())),
            Err(error) => Poll::Ready(Err(self.failed(cx, error))),
        }
    }

    /// Reads more into `self.incoming` behind what it holds; the number of
    /// bytes read, 0 at the end of the stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let len = self.incoming.len();
        let room = if len < MAX_RECORD {
            MAX_RECORD - len
        } else {
            MAX_RECORD
        };
        self.incoming.resize(len + room, 0);
        let mut read = ReadBuf::new(&mut self.incoming[len..]);
        let polled = Pin::new(&mut self.io).poll_read(cx, &mut read);
        let n = read.filled().len();
        self.incoming.truncate(len + n);
        if self.incoming.is_empty() {
            self.incoming = Vec::new();
        }
        polled.map_ok(|()| n)
    }

    /// Writes `self.outgoing` until the socket has taken all of it.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.outgoing.is_empty() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, self.outgoing.front()))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.outgoing.take(n);
        }
        Poll::Ready(Ok(()))
    }

    /// The connection refused the peer's bytes: rustls queued an alert to
    /// tell the peer, sent if the socket takes it now.
    fn failed(&mut self, cx: &mut Context<'_>, error: io::Error) -> io::Error {
        self.failed = true;
        let _ = self.poll_send(cx);
        error
    }

    fn check_failed(&self) -> io::Result<()> {
        if self.failed {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the TLS connection failed",
            ));
        }
        Ok(())
    }
}

impl<Io: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsStream<Io> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.check_failed()?;
        loop {
            if !this.plaintext.is_empty() {
                let n = this.plaintext.len().min(out.remaining());
                out.put_slice(&this.plaintext.front()[..n]);
                this.plaintext.take(n);
                return Poll::Ready(Ok(()));
            }
            if this.peer_closed || out.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            // What the connection queued on its own (the answer to a key
            // update) goes out with the reads, or with the next write.
            if let Poll::Ready(Err(error)) = this.poll_send(cx) {
                return Poll::Ready(Err(error));
            }
            let before = out.filled().len();
            ready!(this.poll_receive(cx, out))?;
            if out.filled().len() > before {
                return Poll::Ready(Ok(()));
            }
        }
    }
}

impl<Io: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsStream<Io> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.check_failed()?;
        // New data is sealed only once the socket has taken the last.
        ready!(this.poll_send(cx))?;
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if this.close_sent {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "write after TLS close_notify",
            )));
        }
        let data = &data[..data.len().min(MAX_WRITE)];
        let written = match this.process_incoming(None, Goal::Write(data)) {
            Ok(Reached::Wrote(n)) => n,
            Ok(_) => {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "TLS connection cannot send",
                )));
            }
            Err(error) => return Poll::Ready(Err(this.failed(cx, error))),
        };
        // Sent now where the socket takes it, else before the next write or
        // by the flush.
        if let Poll::Ready(Err(error)) = this.poll_send(cx) {
            return Poll::Ready(Err(error));
        }
        Poll::Ready(Ok(written))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.close_sent && !this.failed {
            this.close_sent = true;
            // A connection that already failed has no close_notify to send.
            let _ = this.process_incoming(None, Goal::Close);
        }
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

/// Bytes taken from the front; the allocation is dropped once all are.
#[derive(Default)]
struct Waiting {
    bytes: Vec<u8>,
    taken: usize,
}

impl Waiting {
    fn is_empty(&self) -> bool {
        self.taken == self.bytes.len()
    }

    fn len(&self) -> usize {
        self.bytes.len() - self.taken
    }

    fn front(&self) -> &[u8] {
        &self.bytes[self.taken..]
    }

    fn take(&mut self, n: usize) {
        self.taken += n;
        if self.taken >= self.bytes.len() {
            *self = Waiting::default();
        }
    }
}

fn eof(what: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, what)
}
