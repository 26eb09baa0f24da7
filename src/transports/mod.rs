//! Transports hold client connections and speak their wire protocols; all of
//! them join rooms on the same hub and drain the same kind of bounded outbox.
//!
//! `connection` is what a connection may do, whatever its protocol;
//! `websocket` the WebSocket pieces `/ws` and Engine.IO share.
//!
//! Each declares one `hub::Format` with a unique id below `hub::MAX_FORMATS`:
//! Socket.IO 0 (3 with recovery off: no offset), SSE 1, plain WebSocket 2.

pub mod connection;
pub mod json;
pub mod sessions;
pub mod socketio;
pub mod sse;
pub mod websocket;
pub mod ws;

pub use connection::{Connection, JOIN_CONFIRM_TIMEOUT};

/// Pushes onto a list a connection keeps for its whole life and that
/// usually holds one item (its rooms, its Socket.IO namespaces): the first
/// push allocates one slot, where `Vec` would allocate four.
pub(crate) fn push_lean<T>(list: &mut Vec<T>, item: T) {
    if list.capacity() == 0 {
        list.reserve_exact(1);
    }
    list.push(item);
}
