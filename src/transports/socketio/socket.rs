//! The application-facing side of Socket.IO: the [`Handler`] trait roomcast
//! (or a test server) implements, and the [`Socket`] it gets in each
//! callback to emit, ack, join and leave rooms, or disconnect.
//!
//! Owns the shape of the API only; packet dispatch lives in `layer`.
//! Callbacks are synchronous and run on the connection's own task, in the
//! order the client's packets arrived, so a handler never races itself and
//! an event sent right after CONNECT is handled after `on_connect`.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;

use super::engine::Link;
use super::protocol::{Kind, Packet};
use crate::disconnect::DisconnectReason;
use crate::hub::{ClientId, Frame, Hub, PushError};
use crate::security::Identity;
use crate::transports::Connection;

/// Roomcast's application logic on top of Socket.IO.
pub trait Handler: Send + Sync + 'static {
    /// A client connects to a namespace. `Err` refuses it with a
    /// CONNECT_ERROR. Emits and joins made here reach the client after its
    /// connect acknowledgement.
    fn on_connect(
        &self,
        _socket: &mut Socket<'_>,
        _handshake: &Handshake<'_>,
    ) -> Result<(), ConnectError> {
        Ok(())
    }

    /// The client emitted `event`. `ack` is set when it waits for an answer.
    fn on_event(&self, socket: &mut Socket<'_>, event: &str, args: Args, ack: Option<AckId>);

    /// The client answered an [`Socket::emit_with_ack`].
    fn on_ack(&self, _socket: &mut Socket<'_>, _id: u64, _args: Args) {}

    /// The client sent a packet whose header is fine but whose data cannot
    /// be read (`code`, e.g. a string that is not valid UTF-16). The
    /// connection stays; by default the client is told in the ack it asked
    /// for, `[{ok: false, code, error}]`, or else in an `error` event
    /// `{code, message}`.
    fn on_unreadable(
        &self,
        socket: &mut Socket<'_>,
        ack: Option<AckId>,
        code: &str,
        message: &str,
    ) {
        let _ = match ack {
            Some(ack) => socket.ack(
                ack,
                Args::new(vec![
                    serde_json::json!({"ok": false, "code": code, "error": message}),
                ]),
            ),
            None => socket.emit(
                "error",
                Args::new(vec![serde_json::json!({"code": code, "message": message})]),
            ),
        };
    }

    /// The socket left the namespace (client, server or transport).
    fn on_disconnect(&self, _socket: &mut Socket<'_>, _reason: DisconnectReason) {}
}

/// What a client presented when connecting to a namespace.
#[derive(Debug, Clone, Copy)]
pub struct Handshake<'a> {
    /// The CONNECT payload (protocol v5, clients 3.x/4.x); `{}` when absent
    /// and always for protocol v4 (clients 1.x/2.x), which has none.
    pub auth: &'a Value,
    /// The query string of the connection's first request, minus the
    /// Engine.IO parameters; for v4 namespaces, the CONNECT packet's own
    /// query when it has one.
    pub query: &'a [(String, String)],
}

/// Refuses a connection: the client gets CONNECT_ERROR with this message.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectError {
    pub message: String,
    pub data: Option<Value>,
}

/// An ack the client asked for; answer it with [`Socket::ack`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckId(pub u64);

/// Event arguments: JSON values, and binary attachments that the values
/// reference with `{"_placeholder":true,"num":N}`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Args {
    pub values: Vec<Value>,
    pub binary: Vec<Bytes>,
}

impl Args {
    pub fn new(values: Vec<Value>) -> Args {
        Args {
            values,
            binary: Vec::new(),
        }
    }

    /// The placeholder for attachment `num`.
    pub fn placeholder(num: usize) -> Value {
        serde_json::json!({"_placeholder": true, "num": num})
    }
}

/// The outgoing queue refused a packet: the client is a slow consumer (or
/// already gone) and its connection is closing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("client outbox closed: {0}")]
pub struct SendError(pub DisconnectReason);

/// Per-connection state a socket's methods change.
pub(super) struct Core {
    /// Rooms, identity (set by the handler's `on_connect`), limits.
    pub conn: Connection,
    pub next_ack: u64,
    /// Set while `on_connect` runs: emits and joins wait until the connect
    /// acknowledgement is queued, so they follow it.
    pub deferred: Option<Vec<Deferred>>,
}

#[derive(Debug)]
pub(super) enum Deferred {
    Frame(Frame),
    Join(String),
}

/// One connected socket (a client in one namespace), lent to a callback.
pub struct Socket<'a> {
    pub(super) hub: &'a Arc<Hub>,
    pub(super) link: &'a Link<'a>,
    pub(super) core: &'a mut Core,
    pub(super) nsp: &'a str,
    pub(super) id: &'a str,
    pub(super) disconnect: bool,
}

impl Socket<'_> {
    /// This socket's id (sent to v5 clients in the CONNECT answer).
    pub fn id(&self) -> &str {
        self.id
    }

    pub fn namespace(&self) -> &str {
        self.nsp
    }

    /// The Engine.IO session id of the connection.
    pub fn sid(&self) -> &str {
        self.link.sid
    }

    pub fn client(&self) -> ClientId {
        self.core.conn.client()
    }

    /// The connection: its rooms, identity and what it may join.
    pub fn connection(&self) -> &Connection {
        &self.core.conn
    }

    /// Forgets rooms whose join the broker did not confirm (see
    /// [`Connection::confirm`]; the hub let go of them already).
    pub fn forget(&mut self, rooms: &[String]) {
        self.core.conn.forget(rooms);
    }

    /// Emits `event` to this client.
    pub fn emit(&mut self, event: &str, args: Args) -> Result<(), SendError> {
        self.send(Kind::Event, None, Some(event), args)
    }

    /// Emits `event` asking for an ack; the answer comes to
    /// [`Handler::on_ack`] with the returned id.
    pub fn emit_with_ack(&mut self, event: &str, args: Args) -> Result<u64, SendError> {
        let id = self.core.next_ack;
        self.core.next_ack += 1;
        self.send(Kind::Event, Some(id), Some(event), args)?;
        Ok(id)
    }

    /// Answers an ack the client asked for.
    pub fn ack(&mut self, ack: AckId, args: Args) -> Result<(), SendError> {
        self.send(Kind::Ack, Some(ack.0), None, args)
    }

    fn send(
        &mut self,
        kind: Kind,
        id: Option<u64>,
        event: Option<&str>,
        args: Args,
    ) -> Result<(), SendError> {
        for frame in frames(self.nsp, kind, id, event, args) {
            self.push(frame)?;
        }
        Ok(())
    }

    /// A handle that answers this socket later, from another task (an ack
    /// that waits for the broker to confirm a join). Not for `on_connect`,
    /// whose sends are deferred until the connect acknowledgement.
    pub fn later(&self) -> Later {
        Later {
            outbox: self.link.outbox.clone(),
            nsp: self.nsp.to_owned(),
        }
    }

    /// The hub, shared, for work that outlives the callback.
    pub fn hub(&self) -> &Arc<Hub> {
        self.hub
    }

    pub(super) fn push(&mut self, frame: Frame) -> Result<(), SendError> {
        if let Some(deferred) = &mut self.core.deferred {
            deferred.push(Deferred::Frame(frame));
            return Ok(());
        }
        self.link.outbox.push(frame).map_err(|error| match error {
            PushError::Full(reason) | PushError::Closed(reason) => SendError(reason),
        })
    }

    /// Joins a hub room: broadcasts to it reach this client as `message`
    /// events on the default namespace. Returns false if already a member.
    /// The caller checks the join first ([`Connection::may_join`]).
    pub fn join(&mut self, room: &str) -> bool {
        if let Some(deferred) = &mut self.core.deferred {
            deferred.push(Deferred::Join(room.to_owned()));
            return true;
        }
        self.core.conn.enter(room, None)
    }

    /// Leaves a room. Returns false if not a member.
    pub fn leave(&mut self, room: &str) -> bool {
        self.core.conn.leave(room)
    }

    /// Who the connection authenticated as (shared by its namespaces).
    pub fn identity(&self) -> &Identity {
        self.core.conn.identity()
    }

    /// Records who the connection is (from `on_connect`).
    pub fn set_identity(&mut self, identity: Identity) {
        self.core.conn.set_identity(identity);
    }

    /// Rooms this connection is in.
    pub fn rooms(&self) -> &[Arc<str>] {
        self.core.conn.rooms()
    }

    /// Disconnects this socket from its namespace after the callback: the
    /// client gets a DISCONNECT packet and does not reconnect by itself.
    pub fn disconnect(&mut self) {
        self.disconnect = true;
    }
}

/// The frames of one packet: the packet, then its binary attachments.
fn frames(nsp: &str, kind: Kind, id: Option<u64>, event: Option<&str>, args: Args) -> Vec<Frame> {
    let mut values = args.values;
    if let Some(event) = event {
        values.insert(0, Value::String(event.to_owned()));
    }
    let binary = !args.binary.is_empty();
    let kind = match (kind, binary) {
        (Kind::Event, true) => Kind::BinaryEvent,
        (Kind::Ack, true) => Kind::BinaryAck,
        (kind, _) => kind,
    };
    let mut packet = Packet::new(kind, nsp, Some(Value::Array(values)));
    packet.id = id;
    packet.attachments = args.binary.len();
    let mut frames = vec![packet.to_frame()];
    frames.extend(args.binary.into_iter().map(Frame::Binary));
    frames
}

/// Answers a socket after its callback returned (see [`Socket::later`]).
pub struct Later {
    outbox: Arc<crate::hub::Outbox>,
    nsp: String,
}

impl Later {
    pub fn ack(&self, ack: AckId, args: Args) -> Result<(), SendError> {
        self.send(Kind::Ack, Some(ack.0), None, args)
    }

    pub fn emit(&self, event: &str, args: Args) -> Result<(), SendError> {
        self.send(Kind::Event, None, Some(event), args)
    }

    fn send(
        &self,
        kind: Kind,
        id: Option<u64>,
        event: Option<&str>,
        args: Args,
    ) -> Result<(), SendError> {
        for frame in frames(&self.nsp, kind, id, event, args) {
            self.outbox.push(frame).map_err(|error| match error {
                PushError::Full(reason) | PushError::Closed(reason) => SendError(reason),
            })?;
        }
        Ok(())
    }
}
