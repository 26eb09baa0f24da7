//! Server-Sent Events at `GET /sse?channel=a&channel=b`.
//!
//! Owns SSE connections: each request joins its rooms on the hub with one
//! bounded outbox and streams the outbox as `text/event-stream`, with comment
//! heartbeats so proxies keep idle streams open. Each message is encoded once
//! (by [`FORMAT`]) as a whole SSE event and shared by every SSE client.
//! Called by `http`, which mounts [`handler`]; never reads the broker.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, Bytes, BytesMut};

use crate::disconnect::DisconnectReason;
use crate::http::ApiError;
use crate::hub::{self, ClientId, Event, Frame, Hub, Member, Outbox, OutboxLimits};
use crate::shutdown::Shutdown;
use crate::telemetry;
use crate::transports::json;

/// Most rooms one SSE request may name.
pub const MAX_CHANNELS: usize = 64;

/// Interval of the `: keepalive` comment on an idle stream.
const HEARTBEAT: Duration = Duration::from_secs(15);

pub static FORMAT: hub::Format = hub::Format {
    id: 1,
    name: "sse",
    encode,
};

/// Shared state of the SSE endpoint.
#[derive(Clone)]
pub struct Sse {
    pub hub: Arc<Hub>,
    pub limits: OutboxLimits,
    pub shutdown: Shutdown,
}

/// `GET /sse?channel=a&channel=b`: validates the rooms, then streams.
/// A client resuming after a reconnect sends `Last-Event-ID` (EventSource
/// does it by itself); the rooms' recent messages after it are replayed.
pub async fn handler(
    State(sse): State<Sse>,
    RawQuery(query): RawQuery,
    headers: axum::http::HeaderMap,
) -> Response {
    let channels = match channels(query.as_deref().unwrap_or("")) {
        Ok(channels) => channels,
        Err(error) => {
            tracing::info!(code = error.code, message = %error.message, "sse request refused");
            return error.into_response();
        }
    };
    let since = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let stream = Stream::open(&sse, channels, since);
    tracing::debug!(client = stream.client.0, rooms = ?stream.rooms, "sse client connected");
    let body = Body::from_stream(futures_util::stream::unfold(stream, Stream::next));
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
            // nginx would otherwise buffer the stream.
            (header::HeaderName::from_static("x-accel-buffering"), "no"),
        ],
        body,
    )
        .into_response()
}

/// The requested rooms, validated, without duplicates.
fn channels(query: &str) -> Result<Vec<String>, ApiError> {
    let mut channels: Vec<String> = Vec::new();
    for (key, value) in form_urlencoded(query) {
        if key != "channel" {
            continue;
        }
        hub::validate_room_name(&value).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                e.code(),
                format!("channel {value:?}: {e}"),
            )
        })?;
        if !channels.contains(&value) {
            channels.push(value);
        }
    }
    if channels.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "no_channel",
            "name at least one room: /sse?channel=ROOM (repeatable)",
        ));
    }
    if channels.len() > MAX_CHANNELS {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "too_many_channels",
            format!("at most {MAX_CHANNELS} channels per stream"),
        ));
    }
    Ok(channels)
}

fn form_urlencoded(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    url::form_urlencoded::parse(query.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned()))
}

/// One SSE client: its rooms and outbox. Leaves its rooms when dropped, which
/// happens when the client goes away (hyper drops the body).
struct Stream {
    hub: Arc<Hub>,
    client: ClientId,
    outbox: Arc<Outbox>,
    rooms: Vec<String>,
    shutdown: Shutdown,
    opened: bool,
    _open: telemetry::ConnectionMetric,
}

impl Stream {
    fn open(sse: &Sse, rooms: Vec<String>, since: Option<u64>) -> Self {
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
            _open: telemetry::ConnectionMetric::open(FORMAT.name),
        }
    }

    /// The next chunk of the body: queued events, a heartbeat, or the end.
    async fn next(mut self) -> Option<(Result<Bytes, std::io::Error>, Self)> {
        if !self.opened {
            // Tell EventSource how long to wait before reconnecting, and flush
            // the headers at once so the client sees the stream open.
            self.opened = true;
            return Some((
                Ok(Bytes::from_static(b"retry: 2000\n: connected\n\n")),
                self,
            ));
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
            return Some((Ok(Bytes::from_static(b": keepalive\n\n")), self));
        }
        if let Some(reason) = self.outbox.closed() {
            telemetry::disconnected(FORMAT.name, reason);
            tracing::info!(
                client = self.client.0,
                reason = reason.code(),
                "sse client disconnected"
            );
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
        Some((Ok(chunk), self))
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        if self.outbox.closed().is_none() {
            // The client went away (hyper dropped the body).
            telemetry::disconnected(FORMAT.name, DisconnectReason::ClientClosed);
        }
        for room in &self.rooms {
            self.hub.leave(room, self.client);
        }
    }
}

/// A message as one whole SSE event. The JSON envelope may contain raw line
/// breaks (pretty-printed JSON payloads), so each line gets its own `data:`
/// field; EventSource joins them back with `\n`, which is still valid JSON.
fn encode(event: &Event<'_>) -> Option<Frame> {
    let Event::Message(message) = event else {
        return None;
    };
    let envelope = json::message_envelope(message);
    let mut out = Vec::with_capacity(envelope.len() + 48);
    out.extend_from_slice(b"event: message\nid: ");
    out.extend_from_slice(message.id.to_string().as_bytes());
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
