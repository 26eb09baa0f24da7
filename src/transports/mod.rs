//! Transports hold client connections and speak their wire protocols; all of
//! them join rooms on the same hub and drain the same kind of bounded outbox.
//!
//! Each declares one `hub::Format` with a unique id below `hub::MAX_FORMATS`:
//! Socket.IO 0, SSE 1, plain WebSocket 2.

pub mod connection;
pub mod json;
pub mod socketio;
pub mod sse;
pub mod ws;

pub use connection::{Connection, JOIN_CONFIRM_TIMEOUT};

use crate::disconnect::DisconnectReason;

/// Why a websocket write failed (or a read, which also flushes what waits
/// to be written): the socket's write deadline ([`crate::net::deadline`])
/// means the client stopped reading (`slow_consumer`); anything else is the
/// transport's.
pub fn write_failed(error: &(dyn std::error::Error + 'static)) -> DisconnectReason {
    if crate::net::deadline::is_write_timeout(error) {
        DisconnectReason::SlowConsumer
    } else {
        DisconnectReason::TransportError
    }
}
