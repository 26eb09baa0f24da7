//! Plain WebSocket at `/ws` with JSON text frames (protocol in `protocol.rs`).
//!
//! Owns `/ws` connections: one task per connection owns the socket, its
//! bounded outbox and its room list; it reads client requests, writes
//! replies, drains the outbox and keeps the heartbeat. Frames from the hub are
//! the shared JSON envelope of `transports::json`, encoded once per message.
//! Called by `http`, which mounts [`handler`]. Bad frames get an `error` frame;
//! repeated abuse closes with 1008, oversize frames with 1009.

pub mod protocol;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{RawQuery, State};
use axum::http::{Extensions, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::time::Instant;

use crate::brokers::Broker;
use crate::disconnect::DisconnectReason;
use crate::hub::{self, Event, Frame, Hub, OutboxLimits};
use crate::refusal::Refusal;
use crate::security::{self, Op, Security};
use crate::shutdown::Shutdown;
use crate::telemetry;
use crate::transports::connection::{self, Admitted, Connection, Token};
use crate::transports::json;
use crate::transports::websocket::{self, Close};
use protocol::Request;

/// Write buffer of a connection, bytes (tungstenite allocates it on first use).
const WRITE_BUFFER: usize = 8 * 1024;
/// Read buffer of a connection, bytes: allocated at the upgrade and kept for
/// the connection's life (tungstenite never shrinks it). Clients send small
/// JSON ops; a larger frame grows it (read this many bytes at a time).
const READ_BUFFER: usize = 256;

pub static FORMAT: hub::Format = hub::Format {
    id: 2,
    name: "ws",
    encode,
    separate_attachments: false,
};

/// A queued frame as a message: JSON text (binary frames as they are).
fn message(frame: Frame) -> Option<Message> {
    match frame {
        Frame::Text(bytes) => websocket::text(bytes),
        Frame::Binary(bytes) => Some(Message::Binary(bytes)),
    }
}

fn encode(event: &Event<'_>) -> Option<Frame> {
    match event {
        Event::Message(message) => Some(Frame::Text(json::message_envelope(message).into())),
        Event::App(event) => Some(Frame::Text(json::event_envelope(event).into())),
        Event::Reset { room } => Some(Frame::Text(json::reset_envelope(room).into())),
        Event::Joined { .. } | Event::Disconnect => None,
    }
}

/// Settings and shared handles of the `/ws` endpoint.
#[derive(Clone)]
pub struct Ws {
    pub security: Arc<Security>,
    pub hub: Arc<Hub>,
    pub broker: Arc<dyn Broker>,
    pub shutdown: Shutdown,
    pub limits: OutboxLimits,
    /// Largest inbound frame, bytes.
    pub max_frame: usize,
    pub ping_interval: Duration,
    pub ping_timeout: Duration,
    /// Whether clients may use the `publish` op.
    pub allow_publish: bool,
    /// The Socket.IO emitter's channel prefix (`--emitter-key`): its
    /// channels are the back end's, never a client's to publish to.
    pub emitter_key: String,
    /// Refused frames tolerated before the connection is closed (1008).
    pub max_errors: u32,
}

/// `GET /ws`: checks the origin, the connection limits and the token (401
/// JSON before the upgrade when refused), then upgrades with small buffers
/// (tungstenite's default read buffer is 128 KiB per connection).
pub async fn handler(
    State(ws): State<Arc<Ws>>,
    upgrade: WebSocketUpgrade,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    extensions: Extensions,
) -> Response {
    let peer = security::peer_ip(&extensions);
    let token = Token::Request(query.as_deref());
    let admitted = match connection::admit(&ws.security, FORMAT.name, &headers, peer, token) {
        Ok(admitted) => admitted,
        Err(refusal) => return refusal.into_response(),
    };
    drop((headers, query, extensions));
    upgrade
        .read_buffer_size(READ_BUFFER)
        // Frames are serialized into this buffer and written once per batch
        // flush; 0 would mean one write syscall per frame.
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(ws.limits.max_bytes.max(64 * 1024))
        .max_message_size(ws.max_frame)
        .max_frame_size(ws.max_frame)
        .on_upgrade(move |socket| {
            // axum runs this callback on its own short-lived task; the
            // connection gets one tracked task (so shutdown waits for its
            // close frame), and no second task stays alive waiting for it.
            let shutdown = ws.shutdown.clone();
            let client = Box::new(Client::new(ws, admitted));
            shutdown.spawn(client.run(Box::new(socket)));
            std::future::ready(())
        })
}

/// One `/ws` client: the connection (rooms, outbox, identity, limits) and
/// what only this protocol tracks. The endpoint's settings are shared, not
/// copied into every client.
struct Client {
    ws: Arc<Ws>,
    conn: Connection,
    errors: u32,
    last_seen: Instant,
}

impl Client {
    fn new(ws: Arc<Ws>, admitted: Admitted) -> Self {
        let (hub, security) = (ws.hub.clone(), ws.security.clone());
        let conn = Connection::admitted(hub, security, &FORMAT, ws.limits, admitted);
        Client {
            ws,
            conn,
            errors: 0,
            last_seen: Instant::now(),
        }
    }

    /// Boxed arguments: an async fn keeps its by-value arguments in the
    /// future twice (as passed, and as the locals they become), so the
    /// client and its socket by value cost every idle connection a second
    /// copy of both (≈0.7 KiB).
    async fn run(mut self: Box<Self>, mut socket: Box<WebSocket>) {
        tracing::debug!(client = self.conn.client().0, "ws client connected");
        let close = self.serve(&mut socket).await;
        let reason = close
            .as_ref()
            .map_or(DisconnectReason::ClientClosed, |c| c.reason);
        self.conn.end(reason);
        if let Some(close) = close {
            websocket::send_close(&mut socket, close).await;
            let level_info = close.reason != DisconnectReason::ClientClosed;
            if level_info {
                tracing::info!(
                    client = self.conn.client().0,
                    reason = close.reason.code(),
                    "ws client disconnected"
                );
            }
        } else {
            tracing::debug!(
                client = self.conn.client().0,
                "ws client closed the connection"
            );
        }
    }

    /// Runs until the connection ends; `None` when the client closed it.
    async fn serve(&mut self, socket: &mut WebSocket) -> Option<Close> {
        let mut heartbeat = tokio::time::interval(self.ws.ping_interval);
        heartbeat.reset();
        loop {
            tokio::select! {
                _ = self.ws.shutdown.requested() => {
                    return Some(Close::because(DisconnectReason::ServerShutdown));
                }
                _ = self.conn.outbox().ready() => {
                    if let Some(reason) = self.conn.outbox().closed() {
                        return Some(Close::because(reason));
                    }
                    if let Err(reason) = self.write(socket, &mut heartbeat).await {
                        return Some(Close::because(reason));
                    }
                }
                received = socket.recv() => {
                    self.last_seen = Instant::now();
                    match received {
                        None | Some(Ok(Message::Close(_))) => return None,
                        Some(Err(error)) => return Some(websocket::read_error(error)),
                        Some(Ok(message)) => {
                            if let Err(close) = self.on_message(socket, message).await {
                                return Some(close);
                            }
                        }
                    }
                }
                _ = heartbeat.tick() => {
                    if let Err(reason) = self.beat(socket).await {
                        return Some(Close::because(reason));
                    }
                }
            }
        }
    }

    /// Checks the client's liveness and pings it; a quiet connection gives
    /// its queue's buffer back.
    async fn beat(&self, socket: &mut WebSocket) -> Result<(), DisconnectReason> {
        if self.ping_overdue() {
            return Err(DisconnectReason::PingTimeout);
        }
        self.conn.outbox().release_idle();
        socket
            .send(Message::Ping(Default::default()))
            .await
            .map_err(|error| websocket::write_failed(&error))
    }

    fn ping_overdue(&self) -> bool {
        self.last_seen.elapsed() > self.ws.ping_interval + self.ws.ping_timeout
    }

    /// Drains the outbox onto the socket. While a write waits for a client
    /// that does not read, the outbox closing (overflow), the heartbeat and
    /// shutdown still end the connection; the socket's write deadline ends
    /// the write itself (`slow_consumer`). A ping that fell due meanwhile
    /// goes out after the write.
    async fn write(
        &self,
        socket: &mut WebSocket,
        heartbeat: &mut tokio::time::Interval,
    ) -> Result<(), DisconnectReason> {
        let mut ping_owed = false;
        {
            let flush = self.flush(socket);
            tokio::pin!(flush);
            loop {
                tokio::select! {
                    written = &mut flush => {
                        written?;
                        break;
                    }
                    reason = self.conn.outbox().wait_closed() => return Err(reason),
                    _ = self.ws.shutdown.requested() => return Err(DisconnectReason::ServerShutdown),
                    _ = heartbeat.tick() => {
                        if self.ping_overdue() {
                            return Err(DisconnectReason::PingTimeout);
                        }
                        ping_owed = true;
                    }
                }
            }
        }
        if ping_owed {
            self.beat(socket).await?;
        }
        Ok(())
    }

    /// Writes what the outbox holds, one flush per batch.
    async fn flush(&self, socket: &mut WebSocket) -> Result<(), DisconnectReason> {
        let outbox = self.conn.outbox();
        while let Some(bytes) = websocket::write_batch(socket, outbox, message).await? {
            self.conn.record_bytes_out(bytes);
        }
        Ok(())
    }

    async fn on_message(&mut self, socket: &mut WebSocket, message: Message) -> Result<(), Close> {
        if matches!(message, Message::Text(_) | Message::Binary(_)) {
            self.conn.allow_message().map_err(Close::because)?;
        }
        let (id, result) = match message {
            Message::Text(text) => protocol::parse(text.as_str()),
            Message::Binary(_) => (
                None,
                Err(Refusal::new(
                    StatusCode::BAD_REQUEST,
                    "binary_unsupported",
                    "binary frames are not supported; send JSON text",
                )),
            ),
            // tungstenite answers pings itself; any frame counts as liveness.
            Message::Ping(_) | Message::Pong(_) | Message::Close(_) => return Ok(()),
        };
        let reply = match result {
            Ok(request) => self.act(request).await,
            Err(error) => Err(error),
        };
        let text = match &reply {
            Ok(kind) => protocol::reply(kind, id.as_ref()),
            Err(error) => {
                // Only the client's own mistakes count toward the limit: a
                // broker outage (5xx) is not a reason to close anyone.
                if error.status.is_client_error() {
                    self.errors += 1;
                }
                tracing::info!(client = self.conn.client().0, code = error.code, message = %error.message, "ws request refused");
                protocol::error(id.as_ref(), error)
            }
        };
        socket
            .send(Message::Text(text.into()))
            .await
            .map_err(|error| Close::because(websocket::write_failed(&error)))?;
        if self.errors > self.ws.max_errors {
            return Err(Close {
                reason: DisconnectReason::BadInput,
                code: close_code::POLICY,
                text: "too many invalid requests",
            });
        }
        Ok(())
    }

    /// Performs a request; returns the reply type.
    async fn act(&mut self, request: Request) -> Result<&'static str, Refusal> {
        match request {
            Request::Subscribe { channel, since } => {
                // Boxed: a join's state (the broker's confirmation) would
                // otherwise be in every idle client's task.
                Box::pin(self.conn.join(&channel, since)).await?;
                Ok("ok")
            }
            Request::Unsubscribe { channel } => {
                if !self.conn.holds(&channel) {
                    return Err(Refusal::new(
                        StatusCode::BAD_REQUEST,
                        "not_subscribed",
                        format!("not subscribed to {channel:?}"),
                    ));
                }
                self.conn.leave(&channel);
                Ok("ok")
            }
            Request::Publish { channel, payload } => {
                if !self.ws.allow_publish {
                    return Err(Refusal::new(
                        StatusCode::FORBIDDEN,
                        "publish_disabled",
                        "client publishing is disabled (server flag --ws-publish)",
                    ));
                }
                if crate::emitter::is_emitter_channel(&self.ws.emitter_key, &channel) {
                    crate::telemetry::refused("forbidden", "reserved_channel");
                    return Err(Refusal::new(
                        StatusCode::FORBIDDEN,
                        "reserved_channel",
                        format!(
                            "{channel:?} is a Socket.IO emitter channel; only the back end publishes there"
                        ),
                    ));
                }
                let security = &self.ws.security;
                security.check_room(FORMAT.name, &channel).and_then(|()| {
                    security.authorize(FORMAT.name, self.conn.identity(), &channel, Op::Publish)
                })?;
                security::payload_limit(FORMAT.name, payload.len(), self.ws.max_frame)?;
                self.ws
                    .broker
                    .publish(&channel, payload.into())
                    .await
                    .map_err(|e| {
                        Refusal::new(StatusCode::SERVICE_UNAVAILABLE, e.code(), e.to_string())
                    })?;
                telemetry::message_published("ws");
                Ok("ok")
            }
            Request::Ping => Ok("pong"),
        }
    }
}

#[cfg(test)]
mod task_size {
    use super::*;

    /// The size of the future `f` returns, without calling it.
    fn future_size<A, B, F: Future>(_: fn(A, B) -> F) -> usize {
        size_of::<F>()
    }

    #[test]
    fn the_task_holds_no_copies_of_the_client_and_its_socket() {
        // By value they were in the future twice each (debug build: 2,384
        // bytes, against 1,056 boxed).
        let by_value_twice = 2 * (size_of::<Client>() + size_of::<WebSocket>());
        assert!(future_size(Client::run) < by_value_twice);
    }
}
