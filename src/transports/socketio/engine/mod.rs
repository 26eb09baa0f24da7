//! Engine.IO v3/v4 server: sessions, heartbeats, HTTP long-polling, websocket
//! and the polling → websocket upgrade, on one path.
//!
//! Owns the transport level only: what a connection's messages *mean* belongs
//! to the [`Upper`] layer on top (Socket.IO, or the conformance example's
//! echo). Never parses Socket.IO packets and never touches the hub. Every
//! outgoing message goes through the connection's [`Outbox`]; heartbeats and
//! other control packets are written by the owning task itself, so a full
//! queue never breaks the heartbeat.
//!
//! Called by `SocketIo` (and the conformance example) through [`Engine::new`]
//! and [`Engine::router`].
//!
//! Architecture invariants: one task per websocket connection, owning the
//! socket; one small timer task per polling session; no lock held across an
//! `.await`; nothing from the HTTP request kept past the handshake except the
//! copied-out sid, version and flags.

mod heartbeat;
pub mod packet;
pub mod payload;
mod polling;
mod request;
mod session;
mod websocket;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::response::{IntoResponse, Response};
use http::{StatusCode, header};

use crate::disconnect::DisconnectReason;
use crate::hub::{Frame, Outbox, OutboxLimits, StallLimit};
use crate::security::{Permit, Security};
use crate::shutdown::Shutdown;

pub use packet::{Version, message_text};
pub use request::parse_query;
use session::Session;

/// The protocol's error codes (engine.io `Server.errors`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineError {
    UnknownTransport,
    UnknownSid,
    BadHandshakeMethod,
    BadRequest,
    Forbidden,
    UnsupportedProtocolVersion,
}

impl EngineError {
    fn code(self) -> u8 {
        match self {
            EngineError::UnknownTransport => 0,
            EngineError::UnknownSid => 1,
            EngineError::BadHandshakeMethod => 2,
            EngineError::BadRequest => 3,
            EngineError::Forbidden => 4,
            EngineError::UnsupportedProtocolVersion => 5,
        }
    }

    fn message(self) -> &'static str {
        match self {
            EngineError::UnknownTransport => "Transport unknown",
            EngineError::UnknownSid => "Session ID unknown",
            EngineError::BadHandshakeMethod => "Bad handshake method",
            EngineError::BadRequest => "Bad request",
            EngineError::Forbidden => "Forbidden",
            EngineError::UnsupportedProtocolVersion => "Unsupported protocol version",
        }
    }
}

impl IntoResponse for EngineError {
    fn into_response(self) -> Response {
        let status = match self {
            EngineError::Forbidden => StatusCode::FORBIDDEN,
            _ => StatusCode::BAD_REQUEST,
        };
        let body = format!(
            r#"{{"code":{},"message":"{}"}}"#,
            self.code(),
            self.message()
        );
        (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
    }
}

/// Engine.IO settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub ping_interval: Duration,
    pub ping_timeout: Duration,
    /// Largest websocket message or polling POST body, bytes.
    pub max_payload: usize,
    /// How long the upper layer may take to complete its own handshake
    /// (Socket.IO CONNECT); `None` for layers without one.
    pub connect_timeout: Option<Duration>,
    pub outbox: OutboxLimits,
    /// Origin checks, connection limits and the polling buffer bound;
    /// `None`: none of them (the conformance example).
    pub security: Option<Arc<Security>>,
}

/// The protocol layer on top of Engine.IO. Its callbacks are synchronous and
/// run on the connection's task (or under the polling session's lock), one at
/// a time per connection, in arrival order.
pub trait Upper: Send + Sync + 'static {
    /// Per-connection state, owned by the connection.
    type Conn: Send + 'static;

    /// The transport's label in the logs and metrics of its refusals and
    /// connections (the engine admits connections under it).
    const TRANSPORT: &'static str;

    /// A connection opened; the open packet is already on its way, so what
    /// this queues follows it. `query` is the handshake query string (minus
    /// the Engine.IO parameters); copy what you need, it is dropped after.
    /// `permit` is the connection's slot in the limits (when the engine has
    /// security settings): keep it exactly as long as the connection.
    fn open(
        &self,
        link: &Link<'_>,
        query: &[(String, String)],
        permit: Option<Permit>,
    ) -> Self::Conn;

    /// A message from the client. `Err` closes the connection.
    fn message(
        &self,
        conn: &mut Self::Conn,
        link: &Link<'_>,
        frame: Frame,
    ) -> Result<(), DisconnectReason>;

    /// The engine wrote `bytes` for this connection (a batch of queued
    /// frames on a websocket, a polling response): the upper layer counts
    /// them. Not counted by default.
    fn sent(&self, _conn: &Self::Conn, _bytes: usize) {}

    /// Whether the upper handshake is complete; asked once at
    /// `connect_timeout`, and the connection closes if not.
    fn connected(&self, _conn: &Self::Conn) -> bool {
        true
    }

    /// The connection ended (called exactly once per opened connection).
    fn close(&self, conn: &mut Self::Conn, link: &Link<'_>, reason: DisconnectReason);
}

/// What the upper layer may use of a connection.
#[derive(Debug, Clone, Copy)]
pub struct Link<'a> {
    pub sid: &'a str,
    pub version: Version,
    /// Everything the upper layer sends goes here: text frames are whole
    /// Engine.IO packets (see [`message_text`]), binary frames message data.
    pub outbox: &'a Arc<Outbox>,
}

/// Engine.IO session id: 20 URL-safe characters, stored inline.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sid([u8; Sid::LEN]);

impl Sid {
    const LEN: usize = 20;

    pub fn random() -> Sid {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut bytes = [0u8; Sid::LEN];
        rand::fill(&mut bytes[..]);
        for b in &mut bytes {
            *b = ALPHABET[usize::from(*b & 63)];
        }
        Sid(bytes)
    }

    pub fn parse(text: &str) -> Option<Sid> {
        let bytes: [u8; Sid::LEN] = text.as_bytes().try_into().ok()?;
        bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
            .then_some(Sid(bytes))
    }

    pub fn as_str(&self) -> &str {
        // Only ever built from the ASCII alphabet above.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl std::fmt::Debug for Sid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Display for Sid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An Engine.IO server for one upper layer. Share it as `Arc<Engine<U>>`.
pub struct Engine<U: Upper> {
    config: EngineConfig,
    upper: U,
    /// Polling sessions (and upgraded ones, so their sid stays known).
    /// Websocket-only connections are not in here: nothing can address them.
    sessions: Mutex<HashMap<Sid, Arc<Session<U::Conn>>>>,
    shutdown: Shutdown,
    live: AtomicUsize,
}

impl<U: Upper> Engine<U> {
    pub fn new(config: EngineConfig, upper: U, shutdown: Shutdown) -> Arc<Self> {
        Arc::new(Engine {
            config,
            upper,
            sessions: Mutex::new(HashMap::new()),
            shutdown,
            live: AtomicUsize::new(0),
        })
    }

    /// Serves Engine.IO on `path` (with and without its trailing slash).
    pub fn router(self: &Arc<Self>, path: &str) -> axum::Router {
        request::router(self.clone(), path)
    }

    /// Open Engine.IO connections (polling sessions and websockets).
    pub fn connections(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    pub fn upper(&self) -> &U {
        &self.upper
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    fn sessions(&self) -> MutexGuard<'_, HashMap<Sid, Arc<Session<U::Conn>>>> {
        // Every update is one insert/remove: a poisoned map is still consistent.
        self.sessions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn session(&self, sid: &Sid) -> Option<Arc<Session<U::Conn>>> {
        self.sessions().get(sid).cloned()
    }

    fn remove_session(&self, sid: &Sid) {
        self.sessions().remove(sid);
    }

    fn new_outbox(&self) -> Arc<Outbox> {
        Arc::new(Outbox::new(self.config.outbox))
    }

    /// A polling session's outbox: the bounds of any client, and
    /// `--max-polling-buffer` for a client whose frames have waited
    /// `POLL_STALL` undrained (it stopped polling): `PollingBufferFull`.
    fn new_polling_outbox(&self) -> Arc<Outbox> {
        Arc::new(match &self.config.security {
            Some(security) => Outbox::polling(
                self.config.outbox,
                StallLimit {
                    max_bytes: security.max_polling_buffer,
                    after: POLL_STALL,
                },
            ),
            None => Outbox::new(self.config.outbox),
        })
    }

    /// Most bytes one GET answers with: the polling buffer bound, so a
    /// response is never larger than what a stopped client may hold.
    fn poll_batch_bytes(&self) -> usize {
        match &self.config.security {
            Some(security) => security.max_polling_buffer,
            None => self.config.outbox.max_bytes,
        }
    }

    /// A polling session's outbox, now drained by a websocket: only the
    /// client bounds (and the slow-consumer reason) apply from here on.
    fn upgraded_outbox(&self, outbox: &Arc<Outbox>) -> Arc<Outbox> {
        outbox.end_polling();
        outbox.clone()
    }

    /// Counts a connection for its lifetime (the connection metrics are
    /// the upper layer's: `transports::Connection`).
    fn track(self: &Arc<Self>) -> LiveGuard<U> {
        self.live.fetch_add(1, Ordering::Relaxed);
        LiveGuard {
            engine: self.clone(),
        }
    }

    /// The open packet for a new connection.
    fn open_packet(&self, sid: &Sid, version: Version, upgrades: bool) -> Frame {
        let upgrades = if upgrades { r#"["websocket"]"# } else { "[]" };
        let text = match version {
            Version::V4 => format!(
                r#"0{{"sid":"{sid}","upgrades":{upgrades},"pingInterval":{},"pingTimeout":{},"maxPayload":{}}}"#,
                self.config.ping_interval.as_millis(),
                self.config.ping_timeout.as_millis(),
                self.config.max_payload
            ),
            Version::V3 => format!(
                r#"0{{"sid":"{sid}","upgrades":{upgrades},"pingInterval":{},"pingTimeout":{}}}"#,
                self.config.ping_interval.as_millis(),
                self.config.ping_timeout.as_millis(),
            ),
        };
        Frame::Text(text.into())
    }
}

/// Decrements the live count when a connection's owner ends.
struct LiveGuard<U: Upper> {
    engine: Arc<Engine<U>>,
}

impl<U: Upper> Drop for LiveGuard<U> {
    fn drop(&mut self) {
        self.engine.live.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How long frames may wait for a GET before the polling client counts as
/// stopped (and `--max-polling-buffer` applies). Far above any network's
/// round trip, far below the heartbeat deadline.
const POLL_STALL: Duration = Duration::from_secs(5);

/// One log line per closed connection (the upper layer counts it).
fn log_close(sid: &Sid, transport: &str, reason: DisconnectReason) {
    match reason {
        DisconnectReason::SlowConsumer
        | DisconnectReason::PollingBufferFull
        | DisconnectReason::BadInput
        | DisconnectReason::MessageRate
        | DisconnectReason::TooLarge => {
            tracing::info!(%sid, transport, reason = reason.code(), "engine.io connection closed")
        }
        _ => {
            tracing::debug!(%sid, transport, reason = reason.code(), "engine.io connection closed")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sids_are_url_safe_and_parse_back() {
        let sid = Sid::random();
        assert_eq!(sid.as_str().len(), 20);
        assert_eq!(Sid::parse(sid.as_str()), Some(sid));
        assert_eq!(Sid::parse("short"), None);
        assert_eq!(Sid::parse("aaaaaaaaaaaaaaaaaaa%"), None);
    }
}
