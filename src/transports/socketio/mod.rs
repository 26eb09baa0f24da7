//! Socket.IO for roomcast: our own Engine.IO v3/v4 + Socket.IO v4/v5 server,
//! built for fan-out and small memory (one task and a few hundred bytes of
//! buffers per connection; each message encoded once for every client).
//!
//! Layers, bottom up, one file or folder each:
//! - `engine/`: Engine.IO — packets, polling payloads, sessions and
//!   heartbeats, the polling handlers and the websocket task. Usable alone
//!   (the conformance example's echo server runs on it).
//! - `protocol`: Socket.IO packet codec.
//! - `layer`: Socket.IO connection state on top of Engine.IO (namespaces,
//!   CONNECT, attachments, dispatch).
//! - `socket`: the [`Handler`] trait and the [`Socket`] handlers get.
//! - `broadcast`: [`FORMAT`] (and, with recovery off, `FORMAT_WITHOUT_OFFSET`),
//!   the hub's encoding of a message for us.
//! - `roomcast`: roomcast's own events (`channel`, `leave`).
//! - `recovery`: connection state recovery's `pid` and `offset`, and which
//!   lost connections leave a session behind.
//!
//! Never does: per-recipient encoding (the hub shares one frame), extra
//! tasks per connection, keeping the HTTP request after the handshake.
//! Called by `http` (the lead's router) through [`SocketIo::new`] and
//! [`SocketIo::router`].

mod broadcast;
pub mod engine;
mod layer;
pub mod protocol;
mod recovery;
mod roomcast;
mod socket;

use std::sync::Arc;
use std::time::Duration;

pub use broadcast::FORMAT;
pub use roomcast::RoomcastHandler;
pub use socket::{AckId, Args, ConnectError, Handler, Handshake, Later, SendError, Socket};

use crate::hub::{Hub, OutboxLimits};
use crate::security::{Limits, Security};
use crate::shutdown::Shutdown;
use crate::transports::sessions::{MemorySessions, SessionStore};
use engine::{Engine, EngineConfig};
use layer::Layer;
use recovery::Recovery;

/// Socket.IO settings.
#[derive(Debug, Clone)]
pub struct SocketIoConfig {
    /// Where Socket.IO is served, e.g. `/socket.io/`.
    pub path: String,
    pub ping_interval: Duration,
    pub ping_timeout: Duration,
    /// Largest websocket message or polling POST body, bytes.
    pub max_payload: usize,
    /// A connection that joins no namespace within this is closed.
    pub connect_timeout: Duration,
    pub outbox: OutboxLimits,
    /// Extra namespaces besides `/`, e.g. `/custom`.
    pub namespaces: Vec<String>,
    /// Origins, connection limits, message rate, polling buffer bound and
    /// what a connection may join (token rules, room limit); `None` for none
    /// of them (the default room rules and limit still apply to joins).
    pub security: Option<Arc<Security>>,
    /// How long a lost connection's session waits for its client to come
    /// back (connection state recovery); zero turns recovery off.
    pub recovery_window: Duration,
    /// Where those sessions are kept; `None`: in this process.
    pub sessions: Option<Arc<dyn SessionStore>>,
}

impl Default for SocketIoConfig {
    /// The reference server's defaults.
    fn default() -> Self {
        SocketIoConfig {
            path: "/socket.io/".into(),
            ping_interval: Duration::from_millis(25_000),
            ping_timeout: Duration::from_millis(20_000),
            max_payload: 1_000_000,
            connect_timeout: Duration::from_millis(45_000),
            outbox: OutboxLimits::default(),
            namespaces: Vec::new(),
            security: None,
            recovery_window: Duration::ZERO,
            sessions: None,
        }
    }
}

/// The Socket.IO server: shared state of every connection.
pub struct SocketIo {
    engine: Arc<Engine<Layer>>,
    path: String,
}

impl SocketIo {
    pub fn new(
        config: SocketIoConfig,
        hub: Arc<Hub>,
        handler: Arc<dyn Handler>,
        shutdown: Shutdown,
    ) -> Arc<Self> {
        let mut namespaces = vec!["/".to_owned()];
        for nsp in config.namespaces {
            let nsp = if nsp.starts_with('/') {
                nsp
            } else {
                format!("/{nsp}")
            };
            if !namespaces.contains(&nsp) {
                namespaces.push(nsp);
            }
        }
        let engine_config = EngineConfig {
            ping_interval: config.ping_interval,
            ping_timeout: config.ping_timeout,
            max_payload: config.max_payload,
            connect_timeout: Some(config.connect_timeout),
            outbox: config.outbox,
            security: config.security.clone(),
        };
        // Without security settings no message rate applies; the room
        // rules and limit are the defaults.
        let security = config.security.clone().unwrap_or_else(|| {
            Arc::new(Security::open(Limits {
                max_messages_per_s: 0.0,
                ..Limits::default()
            }))
        });
        let recovery = (!config.recovery_window.is_zero()).then(|| Recovery {
            window: config.recovery_window,
            store: config
                .sessions
                .clone()
                .unwrap_or_else(|| Arc::new(MemorySessions::default())),
            tasks: shutdown.clone(),
        });
        let layer = Layer {
            hub,
            handler,
            namespaces,
            security,
            recovery,
            pending: Default::default(),
        };
        Arc::new(SocketIo {
            engine: Engine::new(engine_config, layer, shutdown),
            path: config.path,
        })
    }

    /// Serves the configured path: GET, POST, OPTIONS and websocket upgrades.
    pub fn router(self: &Arc<Self>) -> axum::Router {
        self.engine.router(&self.path)
    }

    /// Open Engine.IO connections (polling sessions and websockets).
    pub fn connections(&self) -> usize {
        self.engine.connections()
    }
}
