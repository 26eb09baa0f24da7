//! Socket.IO on top of Engine.IO: one connection's namespaces, the CONNECT
//! handshake (v5 with an auth payload, v4 with the default namespace
//! connected at once), binary attachment reassembly, and dispatch of events
//! and acks to the [`Handler`].
//!
//! Owns the per-connection Socket.IO state ([`Conn`]). Never writes to a
//! socket: every packet goes to the connection's outbox through [`Socket`].
//! Called by the engine (as its [`Upper`]) on the connection's own task.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::FutureExt;
use serde_json::{Map, Value};

use super::broadcast::{FORMAT, FORMAT_WITHOUT_OFFSET};
use super::engine::parse_query;
use super::engine::{Link, Sid, Upper, Version};
use super::protocol::{Kind, Packet, ProtocolError};
use super::recovery::{self, Claim, Later, Pending, Recovery};
use super::socket::{AckId, Args, ConnectError, Core, Deferred, Handler, Handshake, Socket};
use crate::disconnect::DisconnectReason;
use crate::hub::{ClientId, Format, Frame, Hub, Member, Since};
use crate::security::{Identity, Permit, Security};
use crate::telemetry;
use crate::transports::sessions::{Lookup, Session};
use crate::transports::{Connection, push_lean};

pub struct Layer {
    pub hub: Arc<Hub>,
    pub handler: Arc<dyn Handler>,
    /// Index 0 is `/`; then the configured extra namespaces.
    pub namespaces: Vec<String>,
    /// What a connection may do: its message rate, the rooms it may join.
    pub security: Arc<Security>,
    /// Connection state recovery, when on (`--recovery-window-s` > 0).
    pub recovery: Option<Recovery>,
    /// Recovering CONNECTs answered from other tasks, by connection.
    pub(super) pending: Mutex<HashMap<ClientId, Arc<Pending>>>,
}

/// One connection's Socket.IO state.
pub struct Conn {
    core: Core,
    /// Connected namespaces: (index in `Layer::namespaces`, socket id).
    sockets: Vec<(usize, Sid)>,
    /// A binary packet waiting for its attachments (boxed: rare, and an
    /// idle connection should not carry its size).
    partial: Option<Box<(Packet, Vec<Bytes>)>>,
    /// Ever connected a namespace (the connect timeout's question).
    connected: bool,
    /// The handshake query, for `Handshake::query` (no allocation when the
    /// client sent only Engine.IO parameters, as the official clients do).
    query: Box<[(String, String)]>,
    /// The private session id of `/` when recovery is on: its session is
    /// saved under it when the transport is lost.
    pid: Option<Sid>,
    /// A recovering CONNECT on `/` is answered from another task; its
    /// [`Pending`] is in `Layer::pending` (not here: every idle connection
    /// would carry the pointer) until the connection takes the outcome in
    /// ([`Layer::settle`]).
    recovering: bool,
}

/// A session a CONNECT on `/` claims: its `pid`, the session (taken from
/// the store, or its lookup when the store answers later) and the position
/// the client reached.
enum Claimed {
    Now(Sid, Session, Since),
    Later(Sid, Lookup, Since),
}

impl Upper for Layer {
    type Conn = Conn;
    const TRANSPORT: &'static str = FORMAT.name;

    fn open(&self, link: &Link<'_>, query: &[(String, String)], permit: Option<Permit>) -> Conn {
        let mut conn = Conn {
            core: Core {
                conn: Connection::new(
                    self.hub.clone(),
                    self.security.clone(),
                    self.format(),
                    link.outbox.clone(),
                    Identity::Anonymous,
                    permit,
                ),
                next_ack: 0,
                deferred: None,
            },
            sockets: Vec::new(),
            partial: None,
            connected: false,
            query: query.into(),
            pid: None,
            recovering: false,
        };
        // Protocol v4 (Engine.IO v3 clients): the default namespace is
        // connected at once.
        if link.version == Version::V3 {
            self.connect(&mut conn, link, 0, &empty_object(), None);
        }
        conn
    }

    fn message(
        &self,
        conn: &mut Conn,
        link: &Link<'_>,
        frame: Frame,
    ) -> Result<(), DisconnectReason> {
        self.settle(conn);
        conn.core.conn.allow_message()?;
        let bad = |error: &dyn std::fmt::Display| {
            tracing::debug!(sid = link.sid, %error, "bad socket.io packet");
            DisconnectReason::BadInput
        };
        let (packet, binary) = match frame {
            Frame::Text(bytes) => {
                if conn.partial.is_some() {
                    return Err(bad(&"text packet while reassembling attachments"));
                }
                let text = std::str::from_utf8(&bytes).map_err(|e| bad(&e))?;
                let packet = match Packet::decode(text) {
                    Ok(packet) => packet,
                    Err(error @ ProtocolError::BadUtf16 { .. }) => {
                        return self.unreadable(conn, link, error);
                    }
                    Err(error) => return Err(bad(&error)),
                };
                if packet.attachments > 0 {
                    let binary = Vec::with_capacity(packet.attachments);
                    conn.partial = Some(Box::new((packet, binary)));
                    return Ok(());
                }
                (packet, Vec::new())
            }
            Frame::Binary(data) => {
                let Some((packet, binary)) = conn.partial.as_deref_mut() else {
                    return Err(bad(&"unexpected binary attachment"));
                };
                binary.push(data);
                if binary.len() < packet.attachments {
                    return Ok(());
                }
                match conn.partial.take() {
                    Some(done) => *done,
                    None => return Ok(()),
                }
            }
        };
        self.dispatch(conn, link, packet, binary)
    }

    fn connected(&self, conn: &Conn) -> bool {
        conn.connected
    }

    fn sent(&self, conn: &Conn, bytes: usize) {
        conn.core.conn.record_bytes_out(bytes);
    }

    fn close(&self, conn: &mut Conn, link: &Link<'_>, reason: DisconnectReason) {
        self.settle(conn);
        if let Some(pending) = self.unpend(conn) {
            pending.close();
        }
        self.keep_session(conn, reason);
        for (index, id) in std::mem::take(&mut conn.sockets) {
            let mut socket = self.socket(&mut conn.core, link, index, &id);
            self.handler.on_disconnect(&mut socket, reason);
        }
        self.hub.unregister(conn.core.conn.client());
        conn.core.conn.end(reason);
    }
}

impl Layer {
    /// The hub format of this server's connections: messages carry their
    /// offset only when a client can recover with it.
    fn format(&self) -> &'static Format {
        match self.recovery {
            Some(_) => &FORMAT,
            None => &FORMAT_WITHOUT_OFFSET,
        }
    }

    fn namespace_index(&self, nsp: &str) -> Option<usize> {
        self.namespaces.iter().position(|n| n == nsp)
    }

    fn socket<'a>(
        &'a self,
        core: &'a mut Core,
        link: &'a Link<'a>,
        index: usize,
        id: &'a Sid,
    ) -> Socket<'a> {
        Socket {
            hub: &self.hub,
            link,
            core,
            nsp: &self.namespaces[index],
            id: id.as_str(),
            disconnect: false,
        }
    }

    fn dispatch(
        &self,
        conn: &mut Conn,
        link: &Link<'_>,
        packet: Packet,
        binary: Vec<Bytes>,
    ) -> Result<(), DisconnectReason> {
        if packet.kind == Kind::Connect {
            let Some(index) = self.namespace_index(&packet.nsp) else {
                self.refuse(link, &packet.nsp, "Invalid namespace");
                return Ok(());
            };
            let auth = match packet.data {
                Some(data) if link.version == Version::V4 => data,
                _ => empty_object(),
            };
            let query = packet.query.as_deref().map(parse_query);
            self.connect(conn, link, index, &auth, query.as_deref());
            return Ok(());
        }
        let Some(position) = conn
            .sockets
            .iter()
            .position(|(index, _)| self.namespaces[*index] == packet.nsp)
        else {
            // The reference server closes a connection that talks to a
            // namespace it did not join.
            tracing::debug!(sid = link.sid, nsp = %packet.nsp, "packet for an unconnected namespace");
            return Err(DisconnectReason::BadInput);
        };
        let (index, id) = conn.sockets[position];
        let keeps_live = index == 0 && self.keeps_live(conn);
        let mut socket = self.socket(&mut conn.core, link, index, &id);
        match packet.kind {
            Kind::Disconnect => {
                conn.sockets.remove(position);
                self.handler
                    .on_disconnect(&mut socket, DisconnectReason::ClientClosed);
                self.after_namespace_left(conn, index);
                return Ok(());
            }
            Kind::Event | Kind::BinaryEvent => {
                let Some(Value::Array(mut values)) = packet.data else {
                    return Err(DisconnectReason::BadInput);
                };
                let Value::String(event) = values.remove(0) else {
                    return Err(DisconnectReason::BadInput);
                };
                let ack = packet.id.map(AckId);
                // A shared store keeps a live session's rooms up to date.
                let before = keeps_live.then(|| socket.rooms().to_vec());
                self.handler
                    .on_event(&mut socket, &event, Args { values, binary }, ack);
                let disconnect = socket.disconnect;
                if before.is_some_and(|before| !same_rooms(&before, conn.core.conn.rooms())) {
                    self.live(conn);
                }
                if disconnect {
                    self.server_disconnect(conn, link, position);
                }
                return Ok(());
            }
            Kind::Ack | Kind::BinaryAck => {
                let (Some(Value::Array(values)), Some(id)) = (packet.data, packet.id) else {
                    return Err(DisconnectReason::BadInput);
                };
                self.handler
                    .on_ack(&mut socket, id, Args { values, binary });
            }
            Kind::Connect | Kind::ConnectError => return Err(DisconnectReason::BadInput),
        }
        if socket.disconnect {
            self.server_disconnect(conn, link, position);
        }
        Ok(())
    }

    /// A packet for a joined namespace whose data cannot be read: the
    /// handler tells the client, the connection stays. (For a namespace the
    /// client has not joined, the connection closes as for any packet.)
    fn unreadable(
        &self,
        conn: &mut Conn,
        link: &Link<'_>,
        error: ProtocolError,
    ) -> Result<(), DisconnectReason> {
        let ProtocolError::BadUtf16 { nsp, id } = &error else {
            return Err(DisconnectReason::BadInput);
        };
        let Some(&(index, sid)) = conn
            .sockets
            .iter()
            .find(|(index, _)| self.namespaces[*index] == *nsp)
        else {
            return Err(DisconnectReason::BadInput);
        };
        tracing::debug!(sid = link.sid, %error, "unreadable socket.io packet");
        crate::telemetry::refused("input", "bad_utf16");
        let mut socket = self.socket(&mut conn.core, link, index, &sid);
        self.handler
            .on_unreadable(&mut socket, id.map(AckId), "bad_utf16", &error.to_string());
        Ok(())
    }

    /// Connects namespace `index`: the handler runs and the socket is
    /// registered before the acknowledgement is queued, and what the handler
    /// emitted or joined follows the acknowledgement.
    fn connect(
        &self,
        conn: &mut Conn,
        link: &Link<'_>,
        index: usize,
        auth: &Value,
        query: Option<&[(String, String)]>,
    ) {
        // Connected already, or `/` is being recovered.
        if conn.sockets.iter().any(|(i, _)| *i == index) || (index == 0 && conn.recovering) {
            return;
        }
        let recovery = match (&self.recovery, index, link.version) {
            (Some(recovery), 0, Version::V4) => Some(recovery),
            _ => None,
        };
        let claimed = recovery.and_then(|recovery| self.claimed(recovery, link, auth));
        let id = match &claimed {
            Some(Claimed::Now(_, session, _)) => Sid::parse(&session.sid),
            _ => None,
        }
        .unwrap_or_else(Sid::random);
        conn.core.deferred = Some(Vec::new());
        let handshake = Handshake {
            auth,
            query: query.unwrap_or(&conn.query),
        };
        let mut socket = self.socket(&mut conn.core, link, index, &id);
        let outcome = self.handler.on_connect(&mut socket, &handshake);
        let disconnect = socket.disconnect;
        let deferred = conn.core.deferred.take().unwrap_or_default();
        let nsp = &self.namespaces[index];
        if let Err(error) = outcome {
            self.refuse_with(link, nsp, error);
            return;
        }
        conn.connected = true;
        if index == 0 {
            // One of "everyone" for the emitter's room-less events and requests.
            self.hub.register(Member {
                client: conn.core.conn.client(),
                outbox: link.outbox.clone(),
                format: self.format(),
            });
        }
        let (claimed, later) = match claimed {
            Some(Claimed::Later(pid, lookup, since)) => (None, Some((pid, lookup, since))),
            claimed => (claimed, None),
        };
        if let (Some(recovery), Some((pid, lookup, since)), false) = (recovery, later, disconnect) {
            self.connect_later(conn, link, recovery, (pid, lookup, since), deferred);
            return;
        }
        push_lean(&mut conn.sockets, (index, id));
        let pid = recovery.map(|recovery| match claimed {
            Some(Claimed::Now(pid, session, since))
                if self.recover(conn, link, recovery, &session, since) =>
            {
                pid
            }
            _ => Sid::random(),
        });
        conn.pid = pid;
        let data = match (link.version, pid) {
            (Version::V4, Some(pid)) => {
                Some(serde_json::json!({ "sid": id.as_str(), "pid": pid.as_str() }))
            }
            (Version::V4, None) => Some(serde_json::json!({ "sid": id.as_str() })),
            (Version::V3, _) => None,
        };
        let _ = link
            .outbox
            .push(Packet::new(Kind::Connect, nsp, data).to_frame());
        for item in deferred {
            match item {
                Deferred::Frame(frame) => {
                    let _ = link.outbox.push(frame);
                }
                Deferred::Join(room) => {
                    conn.core.conn.enter(&room, None);
                }
            }
        }
        if pid.is_some() {
            self.live(conn);
        }
        if disconnect {
            let position = conn.sockets.len() - 1;
            self.server_disconnect(conn, link, position);
        }
    }

    /// A recovering CONNECT whose session or log is awaited ([`Later`]):
    /// the handler's joins now, its frames after the answer, which the task
    /// queues; the connection takes the outcome in when it next hears from
    /// the client or closes ([`Self::settle`]; the client sends nothing on
    /// `/` before the answer).
    fn connect_later(
        &self,
        conn: &mut Conn,
        link: &Link<'_>,
        recovery: &Recovery,
        (pid, lookup, since): (Sid, Lookup, Since),
        deferred: Vec<Deferred>,
    ) {
        let mut after = Vec::new();
        for item in deferred {
            match item {
                Deferred::Frame(frame) => after.push(frame),
                Deferred::Join(room) => {
                    conn.core.conn.enter(&room, None);
                }
            }
        }
        let core = &conn.core.conn;
        let later = Later {
            hub: self.hub.clone(),
            member: core.as_member(),
            security: core.security().clone(),
            transport: core.transport(),
            identity: core.identity().clone(),
            recovery: recovery.clone(),
            pid,
            since,
            after,
            sid: link.sid.to_owned(),
        };
        let pending = Arc::new(Pending::default());
        conn.recovering = true;
        self.pending_connects()
            .insert(conn.core.conn.client(), pending.clone());
        recovery.tasks.spawn(later.run(lookup, pending));
    }

    fn pending_connects(&self) -> std::sync::MutexGuard<'_, HashMap<ClientId, Arc<Pending>>> {
        // One insert or remove per use: a poisoned map is still consistent.
        self.pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The connection's recovery in flight, no longer its.
    fn unpend(&self, conn: &mut Conn) -> Option<Arc<Pending>> {
        if !std::mem::take(&mut conn.recovering) {
            return None;
        }
        self.pending_connects().remove(&conn.core.conn.client())
    }

    /// Takes in a recovery answered from another task, once it is done.
    fn settle(&self, conn: &mut Conn) {
        if !conn.recovering {
            return;
        }
        let client = conn.core.conn.client();
        let Some(settled) = self
            .pending_connects()
            .get(&client)
            .and_then(|p| p.settled())
        else {
            return;
        };
        self.unpend(conn);
        push_lean(&mut conn.sockets, (0, settled.sid));
        conn.pid = Some(settled.pid);
        conn.core.conn.adopt(&settled.rooms);
    }

    /// The session a CONNECT on `/` asks to recover, taken from the store:
    /// its `pid`, the session and the position the client reached. `None`
    /// for a first connection, and (logged) for a `pid`/`offset` we never
    /// sent or a session that is gone.
    fn claimed(&self, recovery: &Recovery, link: &Link<'_>, auth: &Value) -> Option<Claimed> {
        let (pid, since) = match recovery::claim(auth) {
            Claim::Fresh => return None,
            Claim::Resume { pid, since } => (pid, since),
            Claim::Malformed(why) => {
                tracing::info!(sid = link.sid, why, "cannot recover session: new session");
                telemetry::socketio_recovery("malformed");
                return None;
            }
        };
        // The node-local store answers at once; a shared one later.
        let mut lookup = recovery.store.take(pid.as_str());
        let session = match (&mut lookup).now_or_never() {
            None => return Some(Claimed::Later(pid, lookup, since)),
            Some(None) => {
                tracing::info!(sid = link.sid, "session expired or unknown: new session");
                telemetry::socketio_recovery("expired");
                return None;
            }
            Some(Some(session)) => session,
        };
        // An offset with an epoch is read from the rooms' log, awaited.
        if matches!(since, Since::Log(_)) && self.hub.log().is_some() {
            let found: Lookup = Box::pin(std::future::ready(Some(session)));
            return Some(Claimed::Later(pid, found, since));
        }
        Some(Claimed::Now(pid, session, since))
    }

    /// Puts a session's rooms back (`on_connect` authenticated the client
    /// again, so the rules are checked with who it is now), replaying what
    /// they missed after `since` before the CONNECT answer (the client
    /// buffers events until it), and has the broker confirm them. False when
    /// a room is refused now or the gap cannot be filled.
    fn recover(
        &self,
        conn: &mut Conn,
        link: &Link<'_>,
        recovery: &Recovery,
        session: &Session,
        since: Since,
    ) -> bool {
        let core = &mut conn.core.conn;
        if let Err(refused) = core.may_join(&session.rooms) {
            recovery::rooms_refused(link.sid, &refused);
            return false;
        }
        // Without a log, a logged message's id is kept in the history too.
        let since = match since {
            Since::Local(n) => n,
            Since::Log(id) => id.n,
        };
        if !core.resume(&session.rooms, since) {
            tracing::info!(
                sid = link.sid,
                since,
                "missed messages no longer held: new session"
            );
            telemetry::socketio_recovery("gap");
            return false;
        }
        telemetry::socketio_recovery("recovered");
        let confirm = core.confirm(session.rooms.clone());
        let sid = link.sid.to_owned();
        recovery.tasks.spawn(async move {
            if let Err(refused) = confirm.await {
                tracing::info!(sid, code = refused.code, "recovered rooms not confirmed");
            }
        });
        true
    }

    /// The transport was lost: keep `/`'s session for the recovery window.
    /// Else (a goodbye, a punishment) it is over.
    fn keep_session(&self, conn: &Conn, reason: DisconnectReason) {
        let (Some(recovery), Some(pid)) = (&self.recovery, conn.pid) else {
            return;
        };
        match session_of(conn) {
            Some(session) if recovery::recoverable(reason) => {
                recovery.store.save(pid.as_str(), session, recovery.window);
            }
            _ => recovery.store.end(pid.as_str()),
        }
    }

    /// Whether the store keeps this connection's live session.
    fn keeps_live(&self, conn: &Conn) -> bool {
        conn.pid.is_some()
            && self
                .recovery
                .as_ref()
                .is_some_and(|recovery| recovery.store.keeps_live())
    }

    /// Tells a store that keeps live sessions this one as it is now.
    fn live(&self, conn: &Conn) {
        if !self.keeps_live(conn) {
            return;
        }
        if let (Some(recovery), Some(pid), Some(session)) =
            (&self.recovery, conn.pid, session_of(conn))
        {
            recovery.store.live(pid.as_str(), &session);
        }
    }

    fn refuse(&self, link: &Link<'_>, nsp: &str, message: &str) {
        let error = ConnectError {
            message: message.to_owned(),
            data: None,
        };
        self.refuse_with(link, nsp, error);
    }

    /// CONNECT_ERROR: v5 `{"message":..}` (plus `data`), v4 a bare string.
    fn refuse_with(&self, link: &Link<'_>, nsp: &str, error: ConnectError) {
        let data = match link.version {
            Version::V4 => {
                let mut object = Map::new();
                object.insert("message".into(), Value::String(error.message));
                if let Some(data) = error.data {
                    object.insert("data".into(), data);
                }
                Value::Object(object)
            }
            Version::V3 => Value::String(error.message),
        };
        let _ = link
            .outbox
            .push(Packet::new(Kind::ConnectError, nsp, Some(data)).to_frame());
    }

    /// The handler asked to disconnect a socket: DISCONNECT to the client.
    fn server_disconnect(&self, conn: &mut Conn, link: &Link<'_>, position: usize) {
        let (index, id) = conn.sockets.remove(position);
        let nsp = &self.namespaces[index];
        let _ = link
            .outbox
            .push(Packet::new(Kind::Disconnect, nsp, None).to_frame());
        let mut socket = self.socket(&mut conn.core, link, index, &id);
        self.handler
            .on_disconnect(&mut socket, DisconnectReason::ServerDisconnect);
        self.after_namespace_left(conn, index);
    }

    /// Rooms deliver on the default namespace: leaving it leaves them all.
    fn after_namespace_left(&self, conn: &mut Conn, index: usize) {
        if index == 0 {
            self.hub.unregister(conn.core.conn.client());
            conn.core.conn.leave_all();
            // A goodbye or a server disconnect leaves no session behind.
            if let (Some(recovery), Some(pid)) = (&self.recovery, conn.pid.take()) {
                recovery.store.end(pid.as_str());
            }
        }
    }
}

/// `/`'s session: its socket id and rooms (`None` if `/` is not connected).
fn session_of(conn: &Conn) -> Option<Session> {
    let (_, sid) = conn.sockets.iter().find(|(index, _)| *index == 0)?;
    Some(Session {
        sid: sid.as_str().to_owned(),
        rooms: conn
            .core
            .conn
            .rooms()
            .iter()
            .map(|room| room.to_string())
            .collect(),
    })
}

/// The same rooms, in the same order (an event joins or leaves).
fn same_rooms(before: &[Arc<str>], now: &[Arc<str>]) -> bool {
    before.len() == now.len() && before.iter().zip(now).all(|(a, b)| Arc::ptr_eq(a, b))
}

fn empty_object() -> Value {
    Value::Object(Map::new())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::hub::{Outbox, OutboxLimits};
    use crate::transports::sessions::{MemorySessions, SessionStore};
    use crate::transports::socketio::RoomcastHandler;

    fn layer() -> Layer {
        Layer {
            hub: Arc::new(Hub::new()),
            handler: Arc::new(RoomcastHandler::new(Default::default())),
            namespaces: vec!["/".into(), "/custom".into()],
            security: Arc::default(),
            recovery: None,
            pending: Mutex::default(),
        }
    }

    fn drain(outbox: &Outbox) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(frame) = outbox.pop() {
            if let Frame::Text(b) = frame {
                out.push(String::from_utf8(b.to_vec()).unwrap());
            }
        }
        out
    }

    #[test]
    fn joins_on_connect_follow_the_connect_answer() {
        // A handler that joins and emits during on_connect.
        struct Eager;
        impl Handler for Eager {
            fn on_connect(
                &self,
                socket: &mut Socket<'_>,
                _handshake: &Handshake<'_>,
            ) -> Result<(), ConnectError> {
                socket.join("early");
                let _ = socket.emit("hi", Args::default());
                Ok(())
            }
            fn on_event(&self, _: &mut Socket<'_>, _: &str, _: Args, _: Option<AckId>) {}
        }
        let layer = Layer {
            handler: Arc::new(Eager),
            ..layer()
        };
        let outbox = Arc::new(Outbox::new(OutboxLimits::default()));
        let link = Link {
            sid: "s",
            version: Version::V4,
            outbox: &outbox,
        };
        let mut conn = layer.open(&link, &[], None);
        assert!(drain(&outbox).is_empty(), "v5: nothing before CONNECT");
        layer
            .message(&mut conn, &link, Frame::Text(Bytes::from_static(b"0")))
            .unwrap();
        let frames = drain(&outbox);
        assert!(frames[0].starts_with("40{\"sid\":"), "{frames:?}");
        assert_eq!(frames[1], r#"42["hi"]"#);
        assert_eq!(layer.hub.room_size("early"), 1);
        layer.close(&mut conn, &link, DisconnectReason::ClientClosed);
        assert_eq!(layer.hub.room_size("early"), 0, "rooms left on close");
    }

    /// A layer with recovery on, and a client connection of protocol v5.
    struct Recovering {
        layer: Layer,
        store: Arc<MemorySessions>,
    }

    impl Recovering {
        fn new() -> Self {
            let store = Arc::new(MemorySessions::default());
            Recovering {
                layer: Recovering::layer(store.clone()),
                store,
            }
        }

        /// A layer keeping its sessions in `store`.
        fn layer(store: Arc<dyn SessionStore>) -> Layer {
            Layer {
                recovery: Some(Recovery {
                    window: std::time::Duration::from_secs(60),
                    store,
                    tasks: Default::default(),
                }),
                ..layer()
            }
        }

        /// Opens a connection of `version` and hands it `packet` (if any);
        /// returns it, its outbox and every frame queued.
        fn open(&self, version: Version, packet: Option<&str>) -> (Conn, Arc<Outbox>, Vec<String>) {
            let outbox = Arc::new(Outbox::new(OutboxLimits::default()));
            let link = link(&outbox, version);
            let mut conn = self.layer.open(&link, &[], None);
            if let Some(packet) = packet {
                let frame = Frame::Text(Bytes::from(packet.to_owned()));
                self.layer.message(&mut conn, &link, frame).unwrap();
            }
            let frames = drain(&outbox);
            (conn, outbox, frames)
        }

        /// Connects `/` with `auth`; returns the connection, its outbox and
        /// the CONNECT answer's `{sid, pid}` and what came before it.
        fn connect(&self, auth: &str) -> (Conn, Arc<Outbox>, Value, Vec<String>) {
            let (conn, outbox, mut frames) = self.open(Version::V4, Some(&format!("0{auth}")));
            let answer = frames.pop().unwrap();
            let data = serde_json::from_str(answer.strip_prefix("40").unwrap()).unwrap();
            (conn, outbox, data, frames)
        }

        fn event(&self, conn: &mut Conn, outbox: &Arc<Outbox>, text: &'static str) {
            let frame = Frame::Text(Bytes::from_static(text.as_bytes()));
            let link = link(outbox, Version::V4);
            self.layer.message(conn, &link, frame).unwrap();
        }

        fn close(&self, conn: &mut Conn, outbox: &Arc<Outbox>, reason: DisconnectReason) {
            self.layer.close(conn, &link(outbox, Version::V4), reason);
        }

        /// A client that joined with `join` and received a message in room
        /// `a` loses its transport: its first CONNECT answer and the auth it
        /// comes back with.
        fn lost(&self, join: &'static str) -> (Value, String) {
            let (mut conn, outbox, first, _) = self.connect("");
            self.event(&mut conn, &outbox, join);
            self.layer.hub.deliver("a", Bytes::from_static(b"seen"));
            let seen = offset(drain(&outbox).last().unwrap());
            self.close(&mut conn, &outbox, DisconnectReason::TransportError);
            let pid = first["pid"].as_str().unwrap();
            let auth = format!(r#"{{"pid":"{pid}","offset":"{seen}"}}"#);
            (first, auth)
        }
    }

    fn link(outbox: &Arc<Outbox>, version: Version) -> Link<'_> {
        Link {
            sid: "s",
            version,
            outbox,
        }
    }

    /// The offset (last argument) of a `message` frame.
    fn offset(frame: &str) -> String {
        let args: Vec<Value> = serde_json::from_str(&frame[2..]).unwrap();
        args.last().unwrap().as_str().unwrap().to_owned()
    }

    #[tokio::test]
    async fn a_lost_transport_leaves_a_session_the_client_recovers() {
        let r = Recovering::new();
        let (mut conn, outbox, first, _) = r.connect("");
        let pid = first["pid"].as_str().unwrap().to_owned();
        r.event(&mut conn, &outbox, r#"20["channel",["a","b"]]"#);
        r.layer.hub.deliver("a", Bytes::from_static(b"seen"));
        let frames = drain(&outbox);
        let seen = offset(frames.last().unwrap());
        r.close(&mut conn, &outbox, DisconnectReason::TransportError);
        assert_eq!(r.store.len(), 1, "session kept");
        r.layer.hub.deliver("b", Bytes::from_static(b"missed"));

        let auth = format!(r#"{{"pid":"{pid}","offset":"{seen}"}}"#);
        let (_conn, _outbox, answer, before) = r.connect(&auth);
        assert_eq!(answer["pid"], pid.as_str(), "recovered: the same pid");
        assert_eq!(answer["sid"], first["sid"], "and the same socket id");
        assert_eq!(before.len(), 1, "{before:?}");
        assert!(
            before[0].starts_with(r#"42["message","missed""#),
            "{before:?}"
        );
        assert_eq!(r.layer.hub.room_size("a"), 1, "rooms back");
        assert!(r.store.is_empty(), "taken once");

        let (_c, _o, again, _) = r.connect(&auth);
        assert_ne!(again["pid"], pid.as_str(), "a session recovers once");
    }

    #[tokio::test]
    async fn a_goodbye_or_a_bad_claim_gives_a_new_session() {
        let r = Recovering::new();
        let (mut conn, outbox, first, _) = r.connect("");
        r.event(&mut conn, &outbox, r#"2["channel","a"]"#);
        r.event(&mut conn, &outbox, "1");
        r.close(&mut conn, &outbox, DisconnectReason::ClientClosed);
        assert!(r.store.is_empty(), "a goodbye leaves no session");
        let pid = first["pid"].as_str().unwrap();
        for auth in [
            format!(r#"{{"pid":"{pid}","offset":"1"}}"#),
            r#"{"pid":"not a pid","offset":"1"}"#.to_owned(),
            format!(r#"{{"pid":"{pid}","offset":["1"]}}"#),
            format!(r#"{{"pid":"{pid}"}}"#),
        ] {
            let (_c, _o, answer, before) = r.connect(&auth);
            assert!(before.is_empty(), "{auth}: {before:?}");
            assert_ne!(answer["pid"], pid, "{auth}");
            assert!(answer["pid"].is_string(), "{auth}");
        }
        assert_eq!(r.layer.hub.room_size("a"), 0);
    }

    #[test]
    fn only_protocol_v5_on_the_default_namespace_gets_a_pid() {
        let r = Recovering::new();
        let (_conn, _outbox, answer, _) = r.connect("");
        assert!(answer["pid"].is_string(), "{answer}");
        // Another namespace: rooms deliver on `/` only.
        let (_conn, _outbox, frames) = r.open(Version::V4, Some("0/custom,"));
        assert!(frames[0].starts_with("40/custom,{\"sid\":"), "{frames:?}");
        assert!(!frames[0].contains("pid"), "{frames:?}");
        // Engine.IO v3 clients (1.x/2.x): `/` is connected at once, as before.
        let (_conn, _outbox, frames) = r.open(Version::V3, None);
        assert_eq!(frames, vec!["40"]);
    }

    /// Sessions that answer a lookup later, as a shared store does.
    #[derive(Debug, Default)]
    struct Later(MemorySessions);

    impl SessionStore for Later {
        fn save(&self, pid: &str, session: Session, window: std::time::Duration) {
            self.0.save(pid, session, window);
        }

        fn take(&self, pid: &str) -> Lookup {
            let found = self.0.take(pid);
            Box::pin(async move {
                tokio::task::yield_now().await;
                found.await
            })
        }
    }

    /// Frames queued to `outbox` once something is (the recovery task ran).
    async fn awaited(outbox: &Outbox) -> Vec<String> {
        for _ in 0..500 {
            let frames = drain(outbox);
            if !frames.is_empty() {
                return frames;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("no CONNECT answer");
    }

    #[tokio::test]
    async fn a_session_a_store_answers_later_is_recovered_before_the_connect_answer() {
        let store = Arc::new(Later::default());
        let r = Recovering {
            layer: Recovering::layer(store.clone()),
            store: Arc::new(MemorySessions::default()),
        };
        let (first, auth) = r.lost(r#"20["channel",["a","b"]]"#);
        let pid = first["pid"].as_str().unwrap().to_owned();
        r.layer.hub.deliver("b", Bytes::from_static(b"missed"));
        let (mut conn, outbox, before) = r.open(Version::V4, Some(&format!("0{auth}")));
        assert!(before.is_empty(), "nothing before the lookup: {before:?}");
        let frames = awaited(&outbox).await;
        assert!(
            frames[0].starts_with(r#"42["message","missed""#),
            "{frames:?}"
        );
        let answer: Value = serde_json::from_str(frames[1].strip_prefix("40").unwrap()).unwrap();
        assert_eq!(answer["pid"], pid.as_str(), "recovered");
        assert_eq!(answer["sid"], first["sid"]);
        assert_eq!(r.layer.hub.room_size("a"), 1, "rooms back");

        // The connection took the outcome in: `/` is connected, its rooms its own.
        r.event(&mut conn, &outbox, r#"2["leave","a"]"#);
        assert_eq!(r.layer.hub.room_size("a"), 0);
        r.close(&mut conn, &outbox, DisconnectReason::TransportError);
        assert_eq!(r.layer.hub.room_size("b"), 0, "left at the end");
        assert_eq!(store.0.len(), 1, "and saved again");
    }

    #[tokio::test]
    async fn a_connection_that_ends_while_its_session_is_looked_up_leaves_nothing_behind() {
        let store = Arc::new(Later::default());
        let r = Recovering {
            layer: Recovering::layer(store.clone()),
            store: Arc::new(MemorySessions::default()),
        };
        let (_, auth) = r.lost(r#"2["channel","a"]"#);
        let (mut conn, outbox, _) = r.open(Version::V4, Some(&format!("0{auth}")));
        r.close(&mut conn, &outbox, DisconnectReason::TransportError);
        for _ in 0..500 {
            if store.0.len() == 1 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(
            store.0.len(),
            1,
            "the session is kept for the client's next try"
        );
        assert_eq!(r.layer.hub.room_size("a"), 0, "its rooms left");
        assert!(r.layer.pending_connects().is_empty());
    }

    #[test]
    fn recovery_adds_nothing_to_an_idle_connection() {
        // 256 bytes before a recovery could be awaited on another task
        // (measured with the same fields and `pid: Option<Sid>` alone): the
        // task's handle lives in `Layer::pending`, not in every `Conn`.
        assert!(size_of::<Conn>() <= 256, "{}", size_of::<Conn>());
    }

    proptest! {
        #[test]
        fn arbitrary_frames_never_panic(
            frames in proptest::collection::vec(
                prop_oneof![
                    "[0-6][0-9/,\\-\\[\\]\"a-z{}:]{0,24}".prop_map(|s| Frame::Text(Bytes::from(s))),
                    ".{0,24}".prop_map(|s| Frame::Text(Bytes::from(s))),
                    proptest::collection::vec(any::<u8>(), 0..8)
                        .prop_map(|b| Frame::Binary(Bytes::from(b))),
                ],
                0..12,
            ),
            v3 in any::<bool>(),
        ) {
            let layer = layer();
            let outbox = Arc::new(Outbox::new(OutboxLimits::default()));
            let version = if v3 { Version::V3 } else { Version::V4 };
            let link = Link { sid: "s", version, outbox: &outbox };
            let mut conn = layer.open(&link, &[], None);
            for frame in frames {
                if layer.message(&mut conn, &link, frame).is_err() {
                    break;
                }
            }
            layer.close(&mut conn, &link, DisconnectReason::ClientClosed);
            prop_assert!(layer.hub.rooms().is_empty());
        }
    }
}
