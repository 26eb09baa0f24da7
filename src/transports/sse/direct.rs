//! Fresh HTTP/1 connections whose first request is `GET /sse`, served without
//! hyper.
//!
//! hyper keeps its 8 KiB read buffer and its connection state for as long as a
//! response streams, which made an idle SSE client cost ≈23 KiB of server
//! memory (`scripts/bench --only idle`). [`SseListener`] sits between the
//! listener and hyper: it reads each new connection's first request head
//! into a small buffer, within `--header-timeout-s`; a `GET /sse` has its
//! head parsed by `httparse` and is streamed from here, holding only the
//! socket and the [`Stream`]; anything else goes on to hyper with the bytes
//! read so far replayed ([`Prefixed`]).
//! The response is close-delimited (`Connection: close`), so the events go
//! out as they are, without chunked framing.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::serve::Listener;
use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::timeout;

use super::prefixed::Prefixed;
use super::{Sse, Stream};
use crate::disconnect::DisconnectReason;
use crate::net::Handoff;
use crate::net::deadline::is_write_timeout;
use crate::refusal::Refusal;

/// First allocation for a request head; grown only for long heads.
const HEAD_BUFFER: usize = 512;
/// A longer request head is refused (431), as hyper would.
const MAX_HEAD: usize = 16 * 1024;
const MAX_HEADERS: usize = 64;
/// Connections on their way to hyper, waiting for its accept loop.
const HANDOFF_QUEUE: usize = 64;
/// How long a goodbye (FIN or TLS close_notify) may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// A listener for `net::serve` that answers fresh `GET /sse` connections
/// itself and passes every other connection on.
pub type SseListener<Io> = Handoff<Prefixed<Box<Io>>>;

/// Starts accepting from `inner`; stops on shutdown. A connection whose
/// first request head is not complete within `header_timeout` is closed
/// (`--header-timeout-s`: slow heads hold sockets).
pub fn start<L>(mut inner: L, sse: Sse, header_timeout: Duration) -> io::Result<SseListener<L::Io>>
where
    L: Listener<Addr = SocketAddr>,
{
    let (handoff, listener) = Handoff::channel(inner.local_addr()?, HANDOFF_QUEUE);
    let tasks = sse.shutdown.clone();
    sse.shutdown.clone().spawn(async move {
        loop {
            let (io, peer) = tokio::select! {
                _ = tasks.requested() => return,
                accepted = inner.accept() => accepted,
            };
            tasks.spawn(routed(
                io,
                peer,
                sse.clone(),
                header_timeout,
                handoff.clone(),
            ));
        }
    });
    Ok(listener)
}

/// The task of one accepted connection: reads the first request head and
/// decides who serves the connection. The socket is boxed: an async fn keeps
/// a by-value argument in its future, and again in each callee it is moved
/// into (`serve` held it twice), ≈1.2 KiB per copy over TLS (rustls's
/// connection state); behind the box each copy is a pointer. A block, not an
/// `async fn`, for the arguments themselves: an `async fn` keeps each one
/// twice (as passed, and as the local it becomes).
fn routed<Io>(
    io: Io,
    peer: SocketAddr,
    sse: Sse,
    header_timeout: Duration,
    handoff: mpsc::Sender<(Prefixed<Box<Io>>, SocketAddr)>,
) -> impl Future<Output = ()>
where
    Io: AsyncRead + AsyncWrite + Unpin,
{
    let mut io = Box::new(io);
    async move {
        let mut head = Vec::with_capacity(HEAD_BUFFER);
        let read = tokio::select! {
            _ = sse.shutdown.requested() => return,
            read = timeout(header_timeout, read_whole_head(&mut io, &mut head)) => read,
        };
        match read {
            Ok(Ok(())) if is_sse_request(&head) => serve(io, peer, head, &sse).await,
            Ok(Ok(())) => {
                // Err only when hyper's accept loop has stopped (shutdown).
                let _ = handoff.send((Prefixed::new(head.into(), io), peer)).await;
            }
            // Closed, failed, or too slow (a trickled head holds a socket):
            // nobody to answer.
            Ok(Err(_)) | Err(_) => {}
        }
    }
}

/// Reads until `head` holds a whole request head (or `MAX_HEAD` bytes).
async fn read_whole_head<Io>(io: &mut Io, head: &mut Vec<u8>) -> io::Result<()>
where
    Io: AsyncRead + Unpin,
{
    let mut scanned = 0;
    while head.len() < MAX_HEAD {
        // Only the new bytes (and the three before them) are searched, so a
        // head trickled byte by byte costs linear time.
        if ends_head(&head[scanned..]) {
            return Ok(());
        }
        scanned = head.len().saturating_sub(3);
        read_more(io, head).await?;
    }
    Ok(())
}

/// An empty line: `\r\n\r\n`, or bare `\n` line ends as httparse allows.
fn ends_head(bytes: &[u8]) -> bool {
    bytes
        .windows(2)
        .enumerate()
        .any(|(i, pair)| pair == b"\n\n" || (pair == b"\n\r" && bytes.get(i + 2) == Some(&b'\n')))
}

/// One read into `head`, doubling its allocation when full.
async fn read_more<Io>(io: &mut Io, head: &mut Vec<u8>) -> io::Result<()>
where
    Io: AsyncRead + Unpin,
{
    if head.len() == head.capacity() {
        head.reserve(head.len().clamp(HEAD_BUFFER, MAX_HEAD));
    }
    match io.read_buf(head).await? {
        0 => Err(io::ErrorKind::UnexpectedEof.into()),
        _ => Ok(()),
    }
}

/// `GET /sse` or `GET /sse?…`: other methods and paths are hyper's.
fn is_sse_request(head: &[u8]) -> bool {
    head.starts_with(b"GET /sse") && matches!(head.get(8), Some(b' ' | b'?'))
}

/// Serves one SSE request: the head, the checks, the stream.
async fn serve<Io>(mut io: Io, peer: SocketAddr, head: Vec<u8>, sse: &Sse)
where
    Io: AsyncRead + AsyncWrite + Unpin,
{
    let parsed = whole_head(&head);
    drop(head);
    let request = match parsed {
        Ok(request) => request,
        Err(error) => {
            tracing::info!(%peer, code = error.code, message = %error.message, "sse request refused");
            return respond(&mut io, error.into_response()).await;
        }
    };
    // Boxed: the checks and joins run once, and their state would otherwise
    // be in every idle client's task.
    let opened = Box::pin(super::open(
        sse,
        &request.headers,
        &request.query,
        Some(peer.ip()),
    ));
    match opened.await {
        Ok((mut stream, headers)) => {
            // Nothing of the request or the header map outlives the head.
            drop(request);
            let head = response_head(StatusCode::OK, &headers, None);
            drop(headers);
            let sent = write_flush(&mut io, &head).await;
            drop(head);
            if sent.is_ok() {
                send_stream(&mut io, &mut stream).await;
            }
        }
        Err(refused) => respond(&mut io, refused.into_response()).await,
    }
}

/// What the direct path needs of a request.
struct Head {
    query: String,
    headers: HeaderMap,
}

/// The head `routed` read whole; still incomplete means over `MAX_HEAD`.
fn whole_head(head: &[u8]) -> Result<Head, Refusal> {
    parse_head(head)?.ok_or_else(|| {
        Refusal::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            format!("the request head exceeds {MAX_HEAD} bytes"),
        )
    })
}

/// Parses a request head: `None` while it is incomplete. Kept synchronous
/// so the header array never lives in the connection's future.
fn parse_head(head: &[u8]) -> Result<Option<Head>, Refusal> {
    let bad = |message: String| Refusal::new(StatusCode::BAD_REQUEST, "bad_request", message);
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut slots);
    match request.parse(head) {
        Ok(httparse::Status::Partial) => return Ok(None),
        Ok(httparse::Status::Complete(_)) => {}
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Refusal::new(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "headers_too_large",
                format!("more than {MAX_HEADERS} request headers"),
            ));
        }
        Err(error) => return Err(bad(format!("malformed request head: {error}"))),
    }
    let query = request
        .path
        .and_then(|path| path.split_once('?'))
        .map_or(String::new(), |(_, query)| query.to_owned());
    let mut headers = HeaderMap::with_capacity(request.headers.len());
    for header in request.headers.iter() {
        let name = HeaderName::from_bytes(header.name.as_bytes())
            .map_err(|_| bad(format!("invalid header name {:?}", header.name)))?;
        let value = HeaderValue::from_bytes(header.value)
            .map_err(|_| bad(format!("invalid value for header {:?}", header.name)))?;
        headers.append(name, value);
    }
    Ok(Some(Head { query, headers }))
}

/// Writes a whole (error) response and closes the connection.
async fn respond<Io>(io: &mut Io, response: Response)
where
    Io: AsyncWrite + Unpin,
{
    let (parts, body) = response.into_parts();
    // Our error bodies are small JSON objects; a larger one is a bug, sent empty.
    let body = axum::body::to_bytes(body, 64 * 1024)
        .await
        .unwrap_or_default();
    let mut out = response_head(parts.status, &parts.headers, Some(body.len()));
    out.extend_from_slice(&body);
    if io.write_all(&out).await.is_ok() {
        let _ = timeout(CLOSE_TIMEOUT, io.shutdown()).await;
    }
}

/// An HTTP/1.1 status line and headers; the connection closes after the body.
fn response_head(
    status: StatusCode,
    headers: &HeaderMap,
    content_length: Option<usize>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if let Some(length) = content_length {
        out.extend_from_slice(format!("content-length: {length}\r\n").as_bytes());
    }
    out.extend_from_slice(b"connection: close\r\n\r\n");
    out
}

/// What woke the streaming loop.
enum Step {
    Send(Option<Bytes>),
    Peer(io::Result<usize>),
}

/// Streams until the client goes away or the stream ends (shutdown, slow
/// consumer). Reads at the same time only to notice the client leaving.
/// (By reference: a stream passed by value is kept twice in the task, as
/// passed and as the local it becomes.)
async fn send_stream<Io>(io: &mut Io, stream: &mut Stream)
where
    Io: AsyncRead + AsyncWrite + Unpin,
{
    let mut scratch = [0u8; 64];
    loop {
        let step = tokio::select! {
            chunk = stream.next_chunk() => Step::Send(chunk),
            read = io.read(&mut scratch) => Step::Peer(read),
        };
        match step {
            Step::Send(Some(chunk)) => {
                // A client that stops reading blocks this write; the hub may
                // close its outbox meanwhile, or the server may shut down.
                let written = tokio::select! {
                    written = write_flush(io, &chunk) => written,
                    reason = stream.conn.outbox().wait_closed() => {
                        stream.end(reason);
                        break;
                    }
                    _ = stream.shutdown.requested() => {
                        stream.conn.outbox().close(DisconnectReason::ServerShutdown);
                        stream.end(DisconnectReason::ServerShutdown);
                        break;
                    }
                };
                match written {
                    Ok(()) => {}
                    // The socket took nothing for `--write-timeout-s`.
                    Err(error) if is_write_timeout(&error) => {
                        stream.conn.outbox().close(DisconnectReason::SlowConsumer);
                        stream.end(DisconnectReason::SlowConsumer);
                        return;
                    }
                    // The client went away mid-write.
                    Err(_) => return,
                }
            }
            // The stream ended by the server's decision.
            Step::Send(None) => break,
            // Anything sent after the request is ignored.
            Step::Peer(Ok(n)) if n > 0 => continue,
            // EOF or reset: the client went away.
            Step::Peer(_) => return,
        }
    }
    let _ = timeout(CLOSE_TIMEOUT, io.shutdown()).await;
}

async fn write_flush<Io>(io: &mut Io, bytes: &[u8]) -> io::Result<()>
where
    Io: AsyncWrite + Unpin,
{
    io.write_all(bytes).await?;
    io.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    /// The size of the future `f` returns, without calling it.
    fn future_size<A, B, C, D, E, F: Future>(_: fn(A, B, C, D, E) -> F) -> usize {
        size_of::<F>()
    }

    /// A socket larger than rustls's server connection state.
    struct LargeSocket {
        _state: [u8; 4096],
    }

    impl AsyncRead for LargeSocket {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &mut tokio::io::ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Poll::Pending
        }
    }

    impl AsyncWrite for LargeSocket {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &[u8],
        ) -> Poll<io::Result<usize>> {
            Poll::Pending
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Pending
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Pending
        }
    }

    #[test]
    fn a_connection_task_holds_no_copy_of_its_socket() {
        let small = future_size(routed::<tokio::io::DuplexStream>);
        let large = future_size(routed::<LargeSocket>);
        assert_eq!(small, large, "the socket's size leaks into the task");
        assert!(large < size_of::<LargeSocket>());
    }

    #[test]
    fn only_get_sse_is_taken() {
        assert!(is_sse_request(b"GET /sse?channel=a HTTP/1.1\r\n"));
        assert!(is_sse_request(b"GET /sse HTTP/1.1\r\n"));
        assert!(!is_sse_request(b"GET /sse2 HTTP/1.1\r\n"));
        assert!(!is_sse_request(b"HEAD /sse HTTP/1.1\r\n"));
        assert!(!is_sse_request(b"POST /sse HTTP/1.1\r\n"));
        assert!(!is_sse_request(b"GET / HTTP/1.1\r\n"));
        assert!(!is_sse_request(b"PRI * HTTP/2.0\r\n"));
    }

    #[test]
    fn a_head_ends_at_its_empty_line() {
        assert!(ends_head(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"));
        assert!(ends_head(b"GET / HTTP/1.1\nHost: h\n\n"));
        assert!(!ends_head(b"GET / HTTP/1.1\r\nHost: h\r\n"));
        assert!(!ends_head(b"GET / HTTP/1.1\r\n"));
    }

    #[test]
    fn heads_parse_or_get_specific_errors() {
        let head =
            parse_head(b"GET /sse?channel=a&x=%20 HTTP/1.1\r\nHost: h\r\nOrigin: http://o\r\n\r\n")
                .unwrap()
                .unwrap();
        assert_eq!(head.query, "channel=a&x=%20");
        assert_eq!(head.headers["origin"], "http://o");
        assert!(
            parse_head(b"GET /sse HTTP/1.1\r\nHost: h\r\n")
                .unwrap()
                .is_none()
        );
        let error = parse_head(b"GET /sse HTTP/1.1\r\nBad Name: x\r\n\r\n")
            .err()
            .unwrap();
        assert_eq!((error.status.as_u16(), error.code), (400, "bad_request"));
        let many: String = (0..=MAX_HEADERS).map(|i| format!("x-{i}: v\r\n")).collect();
        let error = parse_head(format!("GET /sse HTTP/1.1\r\n{many}\r\n").as_bytes())
            .err()
            .unwrap();
        assert_eq!(
            (error.status.as_u16(), error.code),
            (431, "headers_too_large")
        );
    }

    #[test]
    fn response_heads_close_the_connection() {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        let head = response_head(StatusCode::FORBIDDEN, &headers, Some(12));
        assert_eq!(
            String::from_utf8(head).unwrap(),
            "HTTP/1.1 403 Forbidden\r\ncontent-type: application/json\r\n\
             content-length: 12\r\nconnection: close\r\n\r\n"
        );
    }
}
