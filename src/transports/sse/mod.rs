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

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{Extensions, HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, Bytes, BytesMut};

use crate::disconnect::DisconnectReason;
use crate::hub::{self, ClientId, Event, Frame, Hub, Member, Outbox, OutboxLimits};
use crate::net::serve::WriteStall;
use crate::refusal::Refusal;
use crate::security::{self, Identity, Permit, Security};
use crate::shutdown::Shutdown;
use crate::telemetry;
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

/// Checks the origin, the connection limits, the token (`Authorization:
/// Bearer` or `?token=`) and every room, then joins them: the stream with its
/// response headers, or the error response. A client resuming after a
/// reconnect sends `Last-Event-ID` (EventSource does it by itself); the rooms'
/// recent messages after it are replayed.
async fn open(
    sse: &Sse,
    headers: &HeaderMap,
    query: &str,
    peer: Option<IpAddr>,
) -> Result<(Stream, HeaderMap), Refused> {
    let origin = sse
        .security
        .check_origin(FORMAT.name, headers)
        .map_err(|refusal| Refused {
            error: refusal,
            origin: None,
        })?;
    let (channels, identity, permit) = match admit(sse, headers, query, peer) {
        Ok(admitted) => admitted,
        Err(error) => {
            tracing::info!(code = error.code, message = %error.message, "sse request refused");
            return Err(Refused { error, origin });
        }
    };
    let since = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let stream = Stream::open(sse, channels, since, permit);
    let rooms: Vec<&str> = stream.rooms.iter().map(String::as_str).collect();
    if let Err(refused) = crate::transports::confirm_joins(&sse.hub, stream.client, &rooms).await {
        // Dropping the stream leaves its rooms.
        let status = if refused.code == "broker_unavailable" {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::FORBIDDEN
        };
        return Err(Refused {
            error: Refusal::new(status, refused.code, refused.message),
            origin,
        });
    }
    tracing::debug!(client = stream.client.0, sub = identity.sub(), rooms = ?stream.rooms, "sse client connected");
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
    Ok((stream, headers))
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

/// The checks before a stream opens: rooms, limits (per client address,
/// which a trusted proxy may forward), token, permissions.
fn admit(
    sse: &Sse,
    headers: &HeaderMap,
    query: &str,
    peer: Option<IpAddr>,
) -> Result<(Vec<String>, Identity, Permit), Refusal> {
    let security = &sse.security;
    let channels = channels(security, query)?;
    let permit = security.admit_connection(FORMAT.name, security.client_ip(peer, headers))?;
    let token = security::request_token(headers, Some(query));
    let identity = security.authenticate(FORMAT.name, token.as_deref())?;
    for channel in &channels {
        security.authorize(FORMAT.name, &identity, channel, security::Op::Subscribe)?;
    }
    Ok((channels, identity, permit))
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

/// The requested rooms, validated, without duplicates.
fn channels(security: &Security, query: &str) -> Result<Vec<String>, Refusal> {
    let mut channels: Vec<String> = Vec::new();
    for (key, value) in form_urlencoded(query) {
        if key != "channel" {
            continue;
        }
        security.check_room(FORMAT.name, &value)?;
        if !channels.contains(&value) {
            security.room_limit(FORMAT.name, channels.len(), 1)?;
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

/// One SSE client: its rooms and outbox. Leaves its rooms when dropped, which
/// happens when the client goes away (the body or the connection is dropped).
struct Stream {
    hub: Arc<Hub>,
    client: ClientId,
    outbox: Arc<Outbox>,
    rooms: Vec<String>,
    shutdown: Shutdown,
    opened: bool,
    /// The connection's, when hyper writes the stream: tells a stuck
    /// client (its write deadline ran out) from one that went away.
    stall: Option<WriteStall>,
    /// The end was counted and logged (by the writer or by `Drop`).
    reported: bool,
    _open: telemetry::ConnectionMetric,
    _permit: Permit,
}

impl Stream {
    fn open(sse: &Sse, rooms: Vec<String>, since: Option<u64>, permit: Permit) -> Self {
        let client = sse.hub.client_id();
        let outbox = Arc::new(Outbox::new(sse.limits));
        for room in &rooms {
            let member = Member {
                client,
                outbox: outbox.clone(),
                format: &FORMAT,
            };
            match since {
                Some(since) => sse.hub.join_since(room, member, since),
                None => usize::from(sse.hub.join(room, member)),
            };
        }
        Stream {
            hub: sse.hub.clone(),
            client,
            outbox,
            rooms,
            shutdown: sse.shutdown.clone(),
            opened: false,
            stall: None,
            reported: false,
            _open: telemetry::ConnectionMetric::open(FORMAT.name),
            _permit: permit,
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
            _ = self.outbox.ready() => true,
            _ = tokio::time::sleep(HEARTBEAT) => false,
            _ = self.shutdown.requested() => {
                self.outbox.close(DisconnectReason::ServerShutdown);
                true
            }
        };
        if !ready {
            return Some(Bytes::from_static(b": keepalive\n\n"));
        }
        if let Some(reason) = self.outbox.closed() {
            self.report_close(reason);
            return None;
        }
        let mut frames = Vec::new();
        self.outbox.drain_into(&mut frames, 256);
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
        telemetry::bytes_out(FORMAT.name, chunk.len());
        Some(chunk)
    }
}

impl Stream {
    /// Counts and logs a stream the server ended.
    fn report_close(&mut self, reason: DisconnectReason) {
        self.reported = true;
        telemetry::disconnected(FORMAT.name, reason);
        tracing::info!(
            client = self.client.0,
            reason = reason.code(),
            "sse client disconnected"
        );
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        if !self.reported {
            // hyper dropped the body: its write deadline ran out on a
            // client that stopped reading, the outbox closed while hyper
            // could not ask for more, or the client went away.
            let stuck = self.stall.as_ref().is_some_and(WriteStall::stalled);
            match self.outbox.closed() {
                Some(reason) => self.report_close(reason),
                None if stuck => {
                    self.outbox.close(DisconnectReason::SlowConsumer);
                    self.report_close(DisconnectReason::SlowConsumer);
                }
                None => telemetry::disconnected(FORMAT.name, DisconnectReason::ClientClosed),
            }
        }
        for room in &self.rooms {
            self.hub.leave(room, self.client);
        }
    }
}

/// A message as one whole SSE event. The JSON envelope may contain raw line
/// breaks (pretty-printed JSON payloads), so each line gets its own `data:`
/// field; EventSource joins them back with `\n`, which is still valid JSON.
/// Both envelopes go as SSE type `message` (an `EventSource`'s `onmessage`
/// gets them; their `type` field tells them apart).
fn encode(event: &Event<'_>) -> Option<Frame> {
    let (envelope, id) = match event {
        Event::Message(message) => (json::message_envelope(message), message.id),
        Event::App(event) => (json::event_envelope(event), event.id),
        Event::Joined { .. } | Event::Disconnect => return None,
    };
    let mut out = Vec::with_capacity(envelope.len() + 48);
    out.extend_from_slice(b"event: message\nid: ");
    out.extend_from_slice(id.to_string().as_bytes());
    out.push(b'\n');
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
    fn channels_are_validated() {
        let security = Security::default();
        let channels = |q: &str| channels(&security, q);
        assert_eq!(
            channels("channel=a&channel=b&channel=a&x=1").unwrap(),
            vec!["a", "b"]
        );
        assert_eq!(channels("channel=caf%C3%A9").unwrap(), vec!["café"]);
        assert_eq!(channels("").unwrap_err().code, "no_channel");
        assert_eq!(channels("channel=").unwrap_err().code, "room_empty");
        let many: Vec<String> = (0..65).map(|i| format!("channel=r{i}")).collect();
        assert_eq!(
            channels(&many.join("&")).unwrap_err().code,
            "too_many_channels"
        );
    }
}
