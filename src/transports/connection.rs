//! What a client connection may do, once for every transport.
//!
//! [`Connection`] is owned by a transport's connection task (the Socket.IO
//! layer's per-connection state, the `/ws` task, the SSE stream): the
//! client id, the outbox and wire format the hub pushes into, the rooms
//! joined, who the client is (token claims), its message-rate bucket, its
//! slot in the connection limits and its connection metric. [`admit`] is the
//! check before a connection opens; [`Connection::join`] is every join's
//! rule check, room limit, hub join (or resuming join) and broker
//! confirmation; when the connection ends ([`Connection::end`], or drop) it
//! leaves every room and records the disconnect with its reason.
//!
//! Never touches a socket or a wire format: the transports keep their
//! protocol (Engine.IO/Socket.IO framing, the `/ws` JSON ops, the SSE
//! stream) and turn a [`Refusal`] into their own error.

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderMap;

use crate::disconnect::DisconnectReason;
use crate::hub::{
    ClientId, Format, Held, Hub, LogId, LogRead, Member, Outbox, OutboxLimits, Ready, Since,
};
use crate::refusal::Refusal;
use crate::security::{self, Identity, MessageRate, Permit, Security};
use crate::telemetry;

/// How long a join waits for the broker to confirm the room's subscription
/// before it is refused (`broker_unavailable`).
pub const JOIN_CONFIRM_TIMEOUT: Duration = Duration::from_secs(5);

/// A request let in: its slot in the limits and who it is.
#[derive(Debug)]
pub struct Admitted {
    pub permit: Permit,
    pub identity: Identity,
}

/// Where a connection's token is.
#[derive(Debug, Clone, Copy)]
pub enum Token<'a> {
    /// In the request: `Authorization: Bearer`, else `token` in this query.
    Request(Option<&'a str>),
    /// In the protocol's own handshake, after the connection opened
    /// (Socket.IO's CONNECT, whose refusal is a `CONNECT_ERROR` and not an
    /// HTTP status): anonymous until then.
    Handshake,
}

/// The checks before a connection opens, in the order every transport
/// applies them: the browser origin, the connection limits of the client's
/// address (the peer, or whom a trusted proxy forwards), the token.
pub fn admit(
    security: &Arc<Security>,
    transport: &'static str,
    headers: &HeaderMap,
    peer: Option<IpAddr>,
    token: Token<'_>,
) -> Result<Admitted, Refusal> {
    Admission::start(security, transport, headers)?.admit(headers, peer, token)
}

/// [`admit`] in its two steps, for a transport that answers something
/// between them: the origin first (a page on an allowed origin may then read
/// every later refusal, so the transport adds its CORS headers), then the
/// rest when the request is known to open a connection.
#[derive(Debug)]
pub struct Admission {
    security: Arc<Security>,
    transport: &'static str,
    origin: Option<String>,
}

impl Admission {
    /// Checks the browser origin.
    pub fn start(
        security: &Arc<Security>,
        transport: &'static str,
        headers: &HeaderMap,
    ) -> Result<Admission, Refusal> {
        let origin = security.check_origin(transport, headers)?;
        Ok(Admission {
            security: security.clone(),
            transport,
            origin,
        })
    }

    /// The checked origin, to reflect in CORS headers (`None`: the request
    /// named none, or the same origin).
    pub fn origin(&self) -> Option<&str> {
        self.origin.as_deref()
    }

    /// The connection limits of the client's address, then the token.
    pub fn admit(
        self,
        headers: &HeaderMap,
        peer: Option<IpAddr>,
        token: Token<'_>,
    ) -> Result<Admitted, Refusal> {
        let (security, transport) = (&self.security, self.transport);
        let permit = security.admit_connection(transport, security.client_ip(peer, headers))?;
        let identity = match token {
            Token::Request(query) => {
                let token = security::request_token(headers, query);
                security.authenticate(transport, token.as_deref())?
            }
            Token::Handshake => Identity::Anonymous,
        };
        Ok(Admitted { permit, identity })
    }
}

/// Who asks to join, and through which transport: the checks of a join.
pub struct Joiner<'a> {
    pub security: &'a Security,
    pub transport: &'static str,
    pub identity: &'a Identity,
}

impl Joiner<'_> {
    /// Each name valid and open to this identity (the `[[rules]]` and token
    /// claims), and the room limit counting only the rooms not in `held`.
    /// The limit is checked as rooms are counted, so a request naming
    /// thousands of rooms stops at the first one over it.
    pub fn may_join<R: AsRef<str>>(&self, held: &[Arc<str>], rooms: &[R]) -> Result<(), Refusal> {
        let mut adding: Vec<&str> = Vec::new();
        for room in rooms.iter().map(AsRef::as_ref) {
            self.security
                .may_subscribe(self.transport, self.identity, room)?;
            if !held.iter().any(|r| &**r == room) && !adding.contains(&room) {
                self.security
                    .room_limit(self.transport, held.len(), adding.len() + 1)?;
                adding.push(room);
            }
        }
        Ok(())
    }
}

/// How a join went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Joined {
    /// Joined now (and confirmed by the broker).
    New,
    /// The connection held the room already.
    Already,
}

/// One client connection's rights and bookkeeping (see the module header).
/// Kept small: an idle connection carries it for its whole life.
pub struct Connection {
    hub: Arc<Hub>,
    security: Arc<Security>,
    /// The hub's encoder for this client; its name is the transport's label
    /// in logs and metrics.
    format: &'static Format,
    client: ClientId,
    outbox: Arc<Outbox>,
    rooms: Vec<Arc<str>>,
    /// `None`: anonymous, and nothing inline for the claims an idle
    /// anonymous connection would otherwise carry.
    identity: Option<Box<Identity>>,
    rate: MessageRate,
    /// Counts the connection while it is open; taken when it ends.
    metric: Option<telemetry::ConnectionMetric>,
    /// The connection's slot in the limits; freed when it is dropped.
    _permit: Option<Permit>,
}

impl Connection {
    /// A connection that was let in ([`admit`], or the transport's own
    /// checks), pushing into `outbox` in `format`.
    pub fn new(
        hub: Arc<Hub>,
        security: Arc<Security>,
        format: &'static Format,
        outbox: Arc<Outbox>,
        identity: Identity,
        permit: Option<Permit>,
    ) -> Connection {
        let rate = MessageRate::new(security.limits().max_messages_per_s);
        Connection {
            client: hub.client_id(),
            hub,
            security,
            format,
            outbox,
            rooms: Vec::new(),
            identity: boxed(identity),
            rate,
            metric: Some(telemetry::ConnectionMetric::open(format.name)),
            _permit: permit,
        }
    }

    /// A connection [`admit`] let in, with an outbox of its own.
    pub fn admitted(
        hub: Arc<Hub>,
        security: Arc<Security>,
        format: &'static Format,
        limits: OutboxLimits,
        admitted: Admitted,
    ) -> Connection {
        let outbox = Arc::new(Outbox::new(limits));
        let permit = Some(admitted.permit);
        Connection::new(hub, security, format, outbox, admitted.identity, permit)
    }

    pub fn client(&self) -> ClientId {
        self.client
    }

    pub fn outbox(&self) -> &Arc<Outbox> {
        &self.outbox
    }

    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    pub fn security(&self) -> &Arc<Security> {
        &self.security
    }

    /// The transport's label in logs and metrics.
    pub fn transport(&self) -> &'static str {
        self.format.name
    }

    pub fn identity(&self) -> &Identity {
        self.identity.as_deref().unwrap_or(&ANONYMOUS)
    }

    /// Who the connection is, when a protocol authenticates after it opened
    /// (Socket.IO's CONNECT).
    pub fn set_identity(&mut self, identity: Identity) {
        self.identity = boxed(identity);
    }

    /// The rooms this connection joined (and did not leave).
    pub fn rooms(&self) -> &[Arc<str>] {
        &self.rooms
    }

    pub fn holds(&self, room: &str) -> bool {
        self.rooms.iter().any(|r| &**r == room)
    }

    /// Takes one token of the message-rate bucket (`--max-messages-per-s`);
    /// `Err` when the client sends too fast, counted and logged once.
    pub fn allow_message(&mut self) -> Result<(), DisconnectReason> {
        if self.rate.allow() {
            return Ok(());
        }
        let reason = DisconnectReason::MessageRate;
        telemetry::refused("rate", reason.code());
        tracing::info!(
            transport = self.transport(),
            client = self.client.0,
            code = reason.code(),
            "client sends too fast"
        );
        Err(reason)
    }

    /// The checks of a join of `rooms`, all before any is joined so a
    /// refused name joins nothing: each name valid and open to this
    /// identity (the `[[rules]]` and token claims), and the room limit
    /// counting only the rooms not held yet. The limit is checked as rooms
    /// are counted, so a request naming thousands of rooms stops at the
    /// first one over it.
    pub fn may_join<R: AsRef<str>>(&self, rooms: &[R]) -> Result<(), Refusal> {
        self.joiner().may_join(&self.rooms, rooms)
    }

    /// Who joins, for [`Joiner::may_join`] away from the connection.
    pub fn joiner(&self) -> Joiner<'_> {
        Joiner {
            security: &self.security,
            transport: self.transport(),
            identity: self.identity(),
        }
    }

    /// Takes in the rooms a recovered session was put back in (the hub has
    /// the client in them already: [`recover_from_log`]).
    pub fn adopt<R: AsRef<str>>(&mut self, rooms: &[R]) {
        for room in rooms.iter().map(AsRef::as_ref) {
            self.hold(room);
        }
    }

    /// Adds `room` to the connection's list; false when it held it already.
    fn hold(&mut self, room: &str) -> bool {
        let held = self.holds(room);
        if !held {
            super::push_lean(&mut self.rooms, Arc::from(room));
        }
        !held
    }

    /// This connection as a member of a room, for a join done elsewhere.
    pub fn as_member(&self) -> Member {
        self.member()
    }

    /// Joins `room` in the hub now (the checks passed): after `since`, the
    /// room's recent messages are replayed first. Returns whether the client
    /// joined now: false when the hub had it in the room already (also one
    /// an emitter joined on its behalf; with `since`, when this connection
    /// held it). The join is acknowledged only after [`Self::confirm`].
    pub fn enter(&mut self, room: &str, since: Option<u64>) -> bool {
        let new = self.hold(room);
        let member = self.member();
        match since {
            Some(since) => {
                // Replays nothing to a member.
                self.hub.join_since(room, member, since);
                new
            }
            None => self.hub.join(room, member),
        }
    }

    /// Rejoins the rooms of a session that comes back (Socket.IO connection
    /// state recovery; the checks passed), queuing what they missed after
    /// `since` in id order, exactly once with live messages ([`Hub::resume`]).
    /// False, joining nothing, when the rooms' history cannot fill the gap.
    /// Confirm the rooms with [`Self::confirm`].
    pub fn resume(&mut self, rooms: &[String], since: u64) -> bool {
        let mut names: Vec<&str> = Vec::with_capacity(rooms.len());
        for room in rooms {
            if !self.holds(room) && !names.contains(&room.as_str()) {
                names.push(room);
            }
        }
        if self.hub.resume(&names, &self.member(), since).is_none() {
            return false;
        }
        self.rooms.extend(names.into_iter().map(Arc::from));
        true
    }

    /// This connection as a member of a room.
    fn member(&self) -> Member {
        Member {
            client: self.client,
            outbox: self.outbox.clone(),
            format: self.format,
        }
    }

    /// Waits until the broker confirmed this node's subscription to every
    /// room in `rooms` (the ones this request just entered), so that every
    /// message published after the acknowledgement reaches the client. On a
    /// refusal or a timeout the client leaves those rooms in the hub (call
    /// [`Self::forget`] for the connection's own list). Owns what it needs,
    /// so a transport that cannot wait may spawn it.
    pub fn confirm(
        &self,
        rooms: Vec<String>,
    ) -> impl Future<Output = Result<(), Refusal>> + Send + 'static {
        let (hub, client) = (self.hub.clone(), self.client);
        async move { confirmed(&hub, client, &rooms).await }
    }

    /// Forgets rooms whose join was not confirmed (the hub already let go).
    pub fn forget<R: AsRef<str>>(&mut self, rooms: &[R]) {
        self.rooms
            .retain(|held| !rooms.iter().any(|room| room.as_ref() == &**held));
    }

    /// One join, whole: the checks, the hub join (resuming after `since`:
    /// from this node's history, or from the room's log, see
    /// docs/RECOVERY.md) and the broker confirmation.
    pub async fn join(&mut self, room: &str, since: Option<Since>) -> Result<Joined, Refusal> {
        self.may_join(&[room])?;
        if self.holds(room) {
            return Ok(Joined::Already);
        }
        let since = match since {
            // Boxed: the log read's state stays out of every idle task.
            Some(Since::Log(id)) => {
                return Box::pin(self.join_all_from_log(vec![room.to_string()], id))
                    .await
                    .map(|()| Joined::New);
            }
            Some(Since::Local(n)) => Some(n),
            None => None,
        };
        self.enter(room, since);
        // Not through `join_all`: one room needs no list, and every byte of
        // this future is in each idle connection's task.
        if let Err(refused) = confirmed(&self.hub, self.client, &[room]).await {
            self.forget(&[room]);
            return Err(refused);
        }
        Ok(Joined::New)
    }

    /// Enters and confirms rooms the checks already passed for.
    pub async fn join_all(
        &mut self,
        rooms: Vec<String>,
        since: Option<Since>,
    ) -> Result<(), Refusal> {
        let since = match since {
            Some(Since::Log(id)) => return Box::pin(self.join_all_from_log(rooms, id)).await,
            Some(Since::Local(n)) => Some(n),
            None => None,
        };
        for room in &rooms {
            self.enter(room, since);
        }
        let result = confirmed(&self.hub, self.client, &rooms).await;
        if result.is_err() {
            self.forget(&rooms);
        }
        result
    }

    /// Joins `rooms` resuming after a logged message's id: each room held
    /// (its logged messages wait) until its subscription is confirmed and
    /// its log read, then what the client missed is queued, or a reset.
    async fn join_all_from_log(&mut self, rooms: Vec<String>, since: LogId) -> Result<(), Refusal> {
        let mut held = Vec::with_capacity(rooms.len());
        for room in &rooms {
            self.hold(room);
            let member = Member {
                client: self.client,
                outbox: self.outbox.clone(),
                format: self.format,
            };
            held.extend(self.hub.hold(room, member, since));
        }
        let result = match confirmed(&self.hub, self.client, &rooms).await {
            Ok(()) => catch_up(&self.hub, held).await,
            Err(refused) => Err(refused),
        };
        if result.is_err() {
            for room in &rooms {
                self.hub.leave(room, self.client);
            }
            self.forget(&rooms);
        }
        result
    }

    /// Leaves `room`. Returns false if the hub did not have the client in it.
    pub fn leave(&mut self, room: &str) -> bool {
        if let Some(index) = self.rooms.iter().position(|r| &**r == room) {
            self.rooms.swap_remove(index);
        }
        // Also a room an emitter's `socketsJoin` joined on its behalf.
        self.hub.leave(room, self.client)
    }

    /// Leaves every room.
    pub fn leave_all(&mut self) {
        for room in std::mem::take(&mut self.rooms) {
            self.hub.leave(&room, self.client);
        }
    }

    /// Counts bytes written to the client (`roomcast_bytes_out_total`).
    pub fn record_bytes_out(&self, bytes: usize) {
        telemetry::bytes_out(self.transport(), bytes);
    }

    /// Whether [`Self::end`] ran.
    pub fn ended(&self) -> bool {
        self.metric.is_none()
    }

    /// The connection is over: it leaves every room, and the disconnect is
    /// counted with its reason (once; dropping an open connection counts
    /// `client_closed`). Its limits slot is freed when it is dropped.
    pub fn end(&mut self, reason: DisconnectReason) {
        let Some(metric) = self.metric.take() else {
            return;
        };
        telemetry::disconnected(self.transport(), reason);
        drop(metric);
        self.leave_all();
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.end(DisconnectReason::ClientClosed);
    }
}

static ANONYMOUS: Identity = Identity::Anonymous;

fn boxed(identity: Identity) -> Option<Box<Identity>> {
    match identity {
        Identity::Anonymous => None,
        identity => Some(Box::new(identity)),
    }
}

/// Reads each held room's log and releases it with what was found. A
/// failed read refuses the join.
async fn catch_up(hub: &Hub, held: Vec<Held>) -> Result<(), Refusal> {
    for held in held {
        let read = read_log(hub, &held).await?;
        held.release(read);
    }
    Ok(())
}

/// What a held room's log has after the client's id (a node without a log
/// can only answer reset).
async fn read_log(hub: &Hub, held: &Held) -> Result<LogRead, Refusal> {
    let read = match hub.log() {
        Some(log) => log.read(held.room(), held.since()).await,
        None => Ok(LogRead::reset()),
    };
    read.map_err(|error| {
        tracing::warn!(room = held.room(), %error, "cannot read the room's log for a resuming join");
        Refusal::broker_unavailable(format!("cannot read the log of {:?}: {error}", held.room()))
    })
}

/// Puts a whole session's rooms back for `member`, resuming after `since`
/// from the rooms' log, all or nothing (Socket.IO connection state recovery,
/// whose one offset covers every room): each room held while its
/// subscription is confirmed and its log read, then all released as one
/// step ([`Held::release_all`]). `Ok(false)` when a room cannot be filled
/// (a reset); then, as on `Err`, the member is in none of the rooms. Owns
/// what it needs, so a transport may await it on another task.
pub async fn recover_from_log(
    hub: Arc<Hub>,
    member: Member,
    rooms: &[String],
    since: LogId,
) -> Result<bool, Refusal> {
    let client = member.client;
    let mut held = Vec::with_capacity(rooms.len());
    for room in rooms {
        held.extend(hub.hold(room, member.clone(), since));
    }
    let result = match confirmed(&hub, client, rooms).await {
        Ok(()) => read_all(&hub, &held).await,
        Err(refused) => Err(refused),
    };
    let recovered = result.map(|reads| Held::release_all(held, reads).is_some());
    if !matches!(recovered, Ok(true)) {
        for room in rooms {
            hub.leave(room, client);
        }
    }
    recovered
}

/// [`recover_from_log`] from this node's history instead (an offset
/// without an epoch, or a node without a log), through [`Hub::resume`].
pub async fn recover_from_history(
    hub: Arc<Hub>,
    member: Member,
    rooms: &[String],
    since: u64,
) -> Result<bool, Refusal> {
    let mut names: Vec<&str> = Vec::with_capacity(rooms.len());
    for room in rooms {
        if !names.contains(&room.as_str()) {
            names.push(room);
        }
    }
    if hub.resume(&names, &member, since).is_none() {
        return Ok(false);
    }
    confirmed(&hub, member.client, rooms).await.map(|()| true)
}

async fn read_all(hub: &Hub, held: &[Held]) -> Result<Vec<LogRead>, Refusal> {
    let mut reads = Vec::with_capacity(held.len());
    for one in held {
        reads.push(read_log(hub, one).await?);
    }
    Ok(reads)
}

/// [`Connection::confirm`] on borrowed parts; a refused join leaves the
/// rooms in the hub.
async fn confirmed<R: AsRef<str>>(hub: &Hub, client: ClientId, rooms: &[R]) -> Result<(), Refusal> {
    let result = confirm_all(hub, rooms).await;
    if let Err(refused) = &result {
        tracing::info!(client = client.0, code = refused.code, message = %refused.message, "join not confirmed");
        for room in rooms {
            hub.leave(room.as_ref(), client);
        }
    }
    result
}

async fn confirm_all<R: AsRef<str>>(hub: &Hub, rooms: &[R]) -> Result<(), Refusal> {
    let deadline = tokio::time::Instant::now() + JOIN_CONFIRM_TIMEOUT;
    for room in rooms.iter().map(AsRef::as_ref) {
        match hub.ready(room) {
            Ready::Now(result) => result?,
            Ready::Later(pending) => match tokio::time::timeout_at(deadline, pending).await {
                Ok(result) => result?,
                Err(_) => {
                    return Err(Refusal::broker_unavailable(format!(
                        "the broker did not confirm the subscription to {room:?} within {JOIN_CONFIRM_TIMEOUT:?}"
                    )));
                }
            },
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::OutboxLimits;
    use crate::security::Limits;
    use crate::transports::ws::FORMAT;

    fn connection(hub: &Arc<Hub>, max_rooms: usize) -> Connection {
        let security = Arc::new(Security::open(Limits {
            max_rooms_per_connection: max_rooms,
            max_messages_per_s: 1.0,
            ..Limits::default()
        }));
        let outbox = Arc::new(Outbox::new(OutboxLimits::default()));
        Connection::new(
            hub.clone(),
            security,
            &FORMAT,
            outbox,
            Identity::Anonymous,
            None,
        )
    }

    #[tokio::test]
    async fn joins_are_checked_counted_once_and_left_at_the_end() {
        let hub = Arc::new(Hub::new());
        let mut conn = connection(&hub, 2);
        assert_eq!(conn.join("a", None).await, Ok(Joined::New));
        assert_eq!(conn.join("a", None).await, Ok(Joined::Already));
        assert_eq!(hub.room_size("a"), 1);
        // Only rooms not held count against the limit; a refused list
        // joins nothing.
        assert!(conn.may_join(&["a", "b", "b"]).is_ok());
        let refused = conn.may_join(&["b", "c"]).unwrap_err();
        assert_eq!(refused.code, "too_many_channels");
        assert_eq!(conn.join("", None).await.unwrap_err().code, "room_empty");
        assert_eq!(hub.room_size("b"), 0);
        conn.join_all(vec!["b".into()], Some(Since::Local(0)))
            .await
            .unwrap();
        assert_eq!(conn.rooms().len(), 2);
        assert!(conn.leave("b"));
        assert!(!conn.holds("b"));
        assert_eq!(hub.room_size("b"), 0);
        conn.end(DisconnectReason::ServerShutdown);
        assert!(conn.ended());
        assert_eq!(hub.room_size("a"), 0, "ending leaves every room");
        assert!(conn.rooms().is_empty());
    }

    #[tokio::test]
    async fn dropping_a_connection_leaves_its_rooms() {
        let hub = Arc::new(Hub::new());
        let mut conn = connection(&hub, 64);
        conn.join_all(vec!["x".into(), "y".into()], None)
            .await
            .unwrap();
        assert_eq!((hub.room_size("x"), hub.room_size("y")), (1, 1));
        drop(conn);
        assert_eq!((hub.room_size("x"), hub.room_size("y")), (0, 0));
    }

    #[test]
    fn the_message_rate_is_the_connection_s() {
        let hub = Arc::new(Hub::new());
        let mut conn = connection(&hub, 64);
        // 1 message per second: a burst of two seconds' worth, then refused.
        assert!(conn.allow_message().is_ok());
        assert!(conn.allow_message().is_ok());
        assert_eq!(conn.allow_message(), Err(DisconnectReason::MessageRate));
    }
}
