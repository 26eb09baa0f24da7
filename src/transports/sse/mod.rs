//! Server-Sent Events at `GET /sse?channel=a&channel=b`.
//!
//! Owns SSE connections: each request joins its rooms on the hub with one
//! bounded outbox and streams the outbox as `text/event-stream`, with comment
//! heartbeats so proxies keep idle streams open. Each message is encoded once
//! (by [`FORMAT`]) as a whole SSE event and shared by every SSE client.
//! Called by `http`, which mounts [`handler`], and by `server`, which puts
//! [`start_listener`] in front of hyper; never reads the broker.

mod direct;
mod prefixed;

pub use direct::{SseListener, start as start_listener};

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{Extensions, HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, Bytes, BytesMut};

use crate::disconnect::DisconnectReason;
use crate::hub::{self, Event, Frame, Hub, OutboxLimits, Since};
use crate::net::serve::WriteStall;
use crate::refusal::Refusal;
use crate::security::{self, Security};
use crate::shutdown::Shutdown;
use crate::transports::connection::{Admission, Connection, Token};
use crate::transports::json;

/// Interval of the `: keepalive` comment on an idle stream.
const HEARTBEAT: Duration = Duration::from_secs(15);

pub static FORMAT: hub::Format = hub::Format {
    id: 1,
    name: "sse",
    encode,
    separate_attachments: false,
};

/// Shared state of the SSE endpoint.
#[derive(Clone)]
pub struct Sse {
    pub security: Arc<Security>,
    pub hub: Arc<Hub>,
    pub limits: OutboxLimits,
    pub shutdown: Shutdown,
}

/// `GET /sse?channel=a&channel=b` on a connection hyper serves (after other
/// requests on a kept-alive connection; fresh connections are answered by
/// [`direct`]).
pub async fn handler(
    State(sse): State<Sse>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    extensions: Extensions,
) -> Response {
    let query = query.unwrap_or_default();
    match open(&sse, &headers, &query, security::peer_ip(&extensions)).await {
        Ok((mut stream, headers)) => {
            stream.stall = extensions.get::<WriteStall>().cloned();
            let chunks = futures_util::stream::unfold(stream, |mut stream| async move {
                let chunk = stream.next_chunk().await?;
                Some((Ok::<_, std::io::Error>(chunk), stream))
            });
            (headers, Body::from_stream(chunks)).into_response()
        }
        Err(refused) => refused.into_response(),
    }
}

/// Checks the origin, the rooms, the connection limits, the token
/// (`Authorization: Bearer` or `?token=`) and every room's rules, then joins
/// them: the stream with its response headers, or the error response. A
/// client resuming after a reconnect sends `Last-Event-ID` (EventSource does
/// it by itself); the rooms' recent messages after it are replayed.
async fn open(
    sse: &Sse,
    headers: &HeaderMap,
    query: &str,
    peer: Option<IpAddr>,
) -> Result<(Stream, HeaderMap), Refused> {
    // The origin first: a page on an allowed origin may read every later
    // refusal, also one of its rooms.
    let admission =
        Admission::start(&sse.security, FORMAT.name, headers).map_err(|refusal| Refused {
            error: refusal,
            origin: None,
        })?;
    let origin = admission.origin().map(str::to_owned);
    let refused = |error: Refusal| {
        tracing::info!(code = error.code, message = %error.message, "sse request refused");
        Refused {
            error,
            origin: origin.clone(),
        }
    };
    let channels = channels(query).map_err(refused)?;
    let admitted = admission
        .admit(headers, peer, Token::Request(Some(query)))
        .map_err(refused)?;
    let since = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| Since::parse(v.trim()));
    let (hub, security) = (sse.hub.clone(), sse.security.clone());
    let mut conn = Connection::admitted(hub, security, &FORMAT, sse.limits, admitted);
    conn.may_join(&channels).map_err(refused)?;
    // Dropping the connection leaves its rooms.
    conn.join_all(channels, since).await.map_err(refused)?;
    tracing::debug!(client = conn.client().0, sub = conn.identity().sub(), rooms = ?conn.rooms(), "sse client connected");
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // nginx would otherwise buffer the stream.
    headers.insert(
        header::HeaderName::from_static("x-accel-buffering"),
        HeaderValue::from_static("no"),
    );
    add_cors(&mut headers, origin.as_deref());
    Ok((Stream::new(conn, sse.shutdown.clone()), headers))
}

/// A stream refused: the error, readable by the page when its origin is allowed.
struct Refused {
    error: Refusal,
    origin: Option<String>,
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let mut response = self.error.into_response();
        add_cors(response.headers_mut(), self.origin.as_deref());
        response
    }
}

/// A browser page on an allowed origin may read the stream (and its errors).
fn add_cors(headers: &mut HeaderMap, origin: Option<&str>) {
    if let Some(value) = origin.and_then(|o| HeaderValue::from_str(o).ok()) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
        headers.append(header::VARY, HeaderValue::from_static("Origin"));
    }
}

/// The requested rooms, in order, without duplicates; checked as a join by
/// [`Connection::may_join`] once the client is admitted.
fn channels(query: &str) -> Result<Vec<String>, Refusal> {
    let mut seen = HashSet::new();
    let mut channels: Vec<String> = Vec::new();
    for (key, value) in form_urlencoded(query) {
        if key == "channel" && seen.insert(value.clone()) {
            channels.push(value);
        }
    }
    if channels.is_empty() {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "no_channel",
            "name at least one room: /sse?channel=ROOM (repeatable)",
        ));
    }
    Ok(channels)
}

fn form_urlencoded(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    url::form_urlencoded::parse(query.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned()))
}

/// One SSE client: its connection (rooms, outbox, limits slot), ended when
/// dropped, which happens when the client goes away (the body or the
/// connection is dropped).
struct Stream {
    conn: Connection,
    shutdown: Shutdown,
    opened: bool,
    /// The connection's, when hyper writes the stream: tells a stuck
    /// client (its write deadline ran out) from one that went away.
    stall: Option<WriteStall>,
}

impl Stream {
    fn new(conn: Connection, shutdown: Shutdown) -> Self {
        Stream {
            conn,
            shutdown,
            opened: false,
            stall: None,
        }
    }

    /// The next chunk of the body: queued events, a heartbeat, or the end.
    /// Cancel-safe: nothing is taken from the outbox before the last await.
    async fn next_chunk(&mut self) -> Option<Bytes> {
        if !self.opened {
            // Tell EventSource how long to wait before reconnecting, and flush
            // the headers at once so the client sees the stream open.
            self.opened = true;
            return Some(Bytes::from_static(b"retry: 2000\n: connected\n\n"));
        }
        let ready = tokio::select! {
            _ = self.conn.outbox().ready() => true,
            _ = tokio::time::sleep(HEARTBEAT) => false,
            _ = self.shutdown.requested() => {
                self.conn.outbox().close(DisconnectReason::ServerShutdown);
                true
            }
        };
        if !ready {
            // Quiet for a while: the queue's buffer goes back too.
            self.conn.outbox().release_idle();
            return Some(Bytes::from_static(b": keepalive\n\n"));
        }
        if let Some(reason) = self.conn.outbox().closed() {
            self.end(reason);
            return None;
        }
        let mut frames = Vec::new();
        self.conn.outbox().drain_into(&mut frames, 256);
        let chunk = match frames.as_slice() {
            [Frame::Text(one)] => one.clone(),
            _ => {
                let mut chunk = BytesMut::with_capacity(frames.iter().map(Frame::len).sum());
                for frame in &frames {
                    chunk.put_slice(frame.bytes());
                }
                chunk.freeze()
            }
        };
        self.conn.record_bytes_out(chunk.len());
        Some(chunk)
    }
}

impl Stream {
    /// Ends a stream the server closed: counted and logged.
    fn end(&mut self, reason: DisconnectReason) {
        self.conn.end(reason);
        tracing::info!(
            client = self.conn.client().0,
            reason = reason.code(),
            "sse client disconnected"
        );
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        if self.conn.ended() {
            return;
        }
        // hyper dropped the body: its write deadline ran out on a client
        // that stopped reading, the outbox closed while hyper could not ask
        // for more, or the client went away (the connection's own drop
        // counts that).
        let stuck = self.stall.as_ref().is_some_and(WriteStall::stalled);
        match self.conn.outbox().closed() {
            Some(reason) => self.end(reason),
            None if stuck => {
                self.conn.outbox().close(DisconnectReason::SlowConsumer);
                self.end(DisconnectReason::SlowConsumer);
            }
            None => {}
        }
    }
}

/// A message as one whole SSE event. The JSON envelope may contain raw line
/// breaks (pretty-printed JSON payloads), so each line gets its own `data:`
/// field; EventSource joins them back with `\n`, which is still valid JSON.
/// Both envelopes go as SSE type `message` (an `EventSource`'s `onmessage`
/// gets them; their `type` field tells them apart); a resume's reset as SSE
/// type `reset`.
fn encode(event: &Event<'_>) -> Option<Frame> {
    let (kind, envelope, id) = match event {
        Event::Message(message) => (
            "message",
            json::message_envelope(message),
            Some(message.wire_id().to_string()),
        ),
        Event::App(event) => (
            "message",
            json::event_envelope(event),
            Some(event.id.to_string()),
        ),
        // No `id:` line: the client's `Last-Event-ID` stays what it was.
        Event::Reset { room } => ("reset", json::reset_envelope(room), None),
        Event::Joined { .. } | Event::Disconnect => return None,
    };
    let mut out = Vec::with_capacity(envelope.len() + 48);
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(kind.as_bytes());
    out.push(b'\n');
    if let Some(id) = id {
        out.extend_from_slice(b"id: ");
        out.extend_from_slice(id.as_bytes());
        out.push(b'\n');
    }
    for line in split_lines(&envelope) {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    out.push(b'\n');
    Some(Frame::Text(Bytes::from(out)))
}

/// Splits on `\r\n`, `\r` and `\n`, the line ends SSE recognises.
fn split_lines(text: &[u8]) -> impl Iterator<Item = &[u8]> {
    text.split(|&b| b == b'\n').flat_map(|line| {
        line.strip_suffix(b"\r")
            .unwrap_or(line)
            .split(|&b| b == b'\r')
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::Message;

    #[test]
    fn events_are_split_into_data_lines() {
        let message = Message {
            room: Arc::from("r"),
            payload: Bytes::from_static(b"{\r\n \"a\":\n1}"),
            id: 3,
            ts: 9,
            log: None,
        };
        let Some(Frame::Text(frame)) = encode(&Event::Message(&message)) else {
            panic!("sse encodes messages");
        };
        let text = std::str::from_utf8(&frame).unwrap();
        assert!(text.starts_with("event: message\nid: 3\n"), "{text}");
        assert!(text.ends_with("\n\n"));
        let data: String = text
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .collect::<Vec<_>>()
            .join("\n");
        let v: serde_json::Value = serde_json::from_str(&data).unwrap();
        assert_eq!(v["data"]["a"], 1);
        assert!(
            encode(&Event::Joined { room: "r" }).is_none(),
            "no hello on SSE"
        );
    }

    #[test]
    fn channels_are_read_in_order_once_each() {
        assert_eq!(
            channels("channel=a&channel=b&channel=a&x=1").unwrap(),
            vec!["a", "b"]
        );
        assert_eq!(channels("channel=caf%C3%A9").unwrap(), vec!["café"]);
        assert_eq!(channels("").unwrap_err().code, "no_channel");
        // names are checked by the join, after admission
        assert_eq!(channels("channel=").unwrap(), vec![""]);
    }

    #[test]
    fn a_reset_is_an_event_of_its_own_without_an_id() {
        let Some(Frame::Text(bytes)) = encode(&Event::Reset { room: "r\"1" }) else {
            panic!("a reset is sent");
        };
        assert_eq!(
            &bytes[..],
            b"event: reset\ndata: {\"type\":\"reset\",\"channel\":\"r\\\"1\"}\n\n"
        );
    }
}
