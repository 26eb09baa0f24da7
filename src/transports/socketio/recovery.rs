//! Socket.IO connection state recovery (socket.io ≥ 4.6), the protocol side:
//! the CONNECT answer on `/` carries a private session id `pid` beside the
//! socket id; every `message` carries its offset (the message id, a string)
//! as its last argument (`broadcast`); a client that lost its transport
//! sends `{pid, offset}` in its next CONNECT, and is `recovered` when the
//! answer carries the same `pid` again.
//!
//! What a lost connection leaves behind is a [`Session`] in the
//! [`SessionStore`] for the recovery window; what it missed comes from the
//! rooms' history after `offset` (`Connection::resume`). When either is gone
//! the client gets a new `pid`: a new session, `recovered === false`.
//!
//! Only on the default namespace (where rooms deliver) and only for protocol
//! v5 clients (3.x/4.x): protocol v4's CONNECT has no payload.
//!
//! A session in a shared store, or an offset the rooms' log must serve, is
//! awaited before the CONNECT answer ([`Later`]): on a task of its own that
//! lives only while that CONNECT is answered (the connection's own task is
//! synchronous where it handles packets, and an idle connection must not
//! carry the state of an await). The connection holds a [`Pending`] until
//! it takes the outcome in.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use super::engine::Sid;
use super::protocol::{Kind, Packet};
use crate::disconnect::DisconnectReason;
use crate::hub::{Frame, Hub, Member, Since};
use crate::refusal::Refusal;
use crate::security::{Identity, Security};
use crate::shutdown::Shutdown;
use crate::telemetry;
use crate::transports::connection::{self, Joiner};
use crate::transports::sessions::{Lookup, Session, SessionStore};

/// Recovery is on: sessions are kept for `window` in `store`.
#[derive(Clone)]
pub struct Recovery {
    pub window: Duration,
    pub store: Arc<dyn SessionStore>,
    /// Where a recovered session's broker confirmations are awaited.
    pub tasks: Shutdown,
}

/// What a CONNECT's payload asks for.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Claim {
    /// No `pid`: a first connection.
    Fresh,
    /// The session `pid`, which received everything up to `since` (a
    /// message's wire id: `<n>`, or `<epoch>:<n>` for a logged one).
    Resume { pid: Sid, since: Since },
    /// A `pid` or `offset` we never sent (logged; a new session).
    Malformed(&'static str),
}

/// Reads `{pid, offset}` from a CONNECT payload. A client that received no
/// `message` since its session began sends no `offset`: nothing tells what
/// it has seen, so it starts a new session (as socket.io's own server does).
pub(super) fn claim(auth: &Value) -> Claim {
    let Some(pid) = auth.get("pid") else {
        return Claim::Fresh;
    };
    let Some(pid) = pid.as_str().and_then(Sid::parse) else {
        return Claim::Malformed("pid is not a session id");
    };
    match auth.get("offset").map(|offset| offset.as_str()) {
        None => Claim::Malformed("no offset: no message received yet"),
        Some(None) => Claim::Malformed("offset is not a string"),
        Some(Some(offset)) => match Since::parse(offset) {
            Some(since) => Claim::Resume { pid, since },
            // e.g. the last argument of a `hello` (its room): the client's
            // last event was not a message.
            None => Claim::Malformed("offset is not a message id"),
        },
    }
}

/// The CONNECT answer on `/`: `{sid, pid}`.
pub(super) fn answer(sid: &Sid, pid: &Sid) -> Frame {
    let data = serde_json::json!({ "sid": sid.as_str(), "pid": pid.as_str() });
    Packet::new(Kind::Connect, "/", Some(data)).to_frame()
}

/// A recovery awaited on another task, as the connection sees it.
#[derive(Default)]
pub(super) struct Pending(Mutex<Stage>);

#[derive(Default)]
enum Stage {
    #[default]
    Waiting,
    Done(Settled),
    /// The connection ended first: the task cleans up after itself.
    Closed,
}

/// What the connection takes in: its socket id and `pid` on `/`, and the
/// rooms the hub has it in (those of the recovered session, or none).
pub(super) struct Settled {
    pub sid: Sid,
    pub pid: Sid,
    pub rooms: Vec<String>,
}

impl Pending {
    fn stage(&self) -> std::sync::MutexGuard<'_, Stage> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The outcome, once the task handed it over.
    pub(super) fn settled(&self) -> Option<Settled> {
        let mut stage = self.stage();
        match std::mem::take(&mut *stage) {
            Stage::Done(settled) => Some(settled),
            other => {
                *stage = other;
                None
            }
        }
    }

    /// The connection ended while the task runs.
    pub(super) fn close(&self) {
        *self.stage() = Stage::Closed;
    }

    /// Hands the outcome over; `Err` (with it back) if the connection ended.
    fn finish(&self, settled: Settled) -> Result<(), Settled> {
        let mut stage = self.stage();
        match *stage {
            Stage::Closed => Err(settled),
            _ => {
                *stage = Stage::Done(settled);
                Ok(())
            }
        }
    }
}

/// A recovering CONNECT on `/`, answered from another task: the session's
/// lookup, its rooms' checks with who the client is now, their resume (from
/// the log for an offset with an epoch, else from this node's history), the
/// CONNECT answer, then what the handler emitted on connect.
pub(super) struct Later {
    pub hub: Arc<Hub>,
    pub member: Member,
    pub security: Arc<Security>,
    pub transport: &'static str,
    pub identity: Identity,
    pub recovery: Recovery,
    pub pid: Sid,
    pub since: Since,
    /// Frames queued after the answer.
    pub after: Vec<Frame>,
    /// The Engine.IO session id, for the log.
    pub sid: String,
}

impl Later {
    /// Runs once `lookup` found the session (or nothing).
    pub(super) async fn run(self, lookup: Lookup, pending: Arc<Pending>) {
        let recovered = match lookup.await {
            Some(session) => self.recover(&session).await.then_some(session),
            None => {
                tracing::info!(sid = self.sid, "session expired or unknown: new session");
                telemetry::socketio_recovery("expired");
                None
            }
        };
        let settled = match &recovered {
            Some(session) => Settled {
                sid: Sid::parse(&session.sid).unwrap_or_else(Sid::random),
                pid: self.pid,
                rooms: session.rooms.clone(),
            },
            None => Settled {
                sid: Sid::random(),
                pid: Sid::random(),
                rooms: Vec::new(),
            },
        };
        let (sid, pid) = (settled.sid, settled.pid);
        let session = Session {
            sid: sid.as_str().to_owned(),
            rooms: settled.rooms.clone(),
        };
        let store = &self.recovery.store;
        match pending.finish(settled) {
            Ok(()) => {
                store.live(pid.as_str(), &session);
                let outbox = &self.member.outbox;
                let _ = outbox.push(answer(&sid, &pid));
                for frame in self.after {
                    let _ = outbox.push(frame);
                }
            }
            Err(settled) => {
                // Gone before its answer: the client may try again.
                for room in &settled.rooms {
                    self.hub.leave(room, self.member.client);
                }
                if recovered.is_some() {
                    store.save(pid.as_str(), session, self.recovery.window);
                }
            }
        }
    }

    /// Puts the session's rooms back with what they missed; false (none
    /// joined) when a room is refused now or a gap cannot be filled.
    async fn recover(&self, session: &Session) -> bool {
        let joiner = Joiner {
            security: &self.security,
            transport: self.transport,
            identity: &self.identity,
        };
        if let Err(refused) = joiner.may_join(&[], &session.rooms) {
            rooms_refused(&self.sid, &refused);
            return false;
        }
        let (hub, member, rooms) = (self.hub.clone(), self.member.clone(), &session.rooms);
        let resumed = match self.since {
            Since::Log(id) if hub.log().is_some() => {
                connection::recover_from_log(hub, member, rooms, id).await
            }
            Since::Log(id) => connection::recover_from_history(hub, member, rooms, id.n).await,
            Since::Local(n) => connection::recover_from_history(hub, member, rooms, n).await,
        };
        match resumed {
            Ok(true) => {
                telemetry::socketio_recovery("recovered");
                true
            }
            Ok(false) => {
                tracing::info!(
                    sid = self.sid,
                    "missed messages no longer held: new session"
                );
                telemetry::socketio_recovery("gap");
                false
            }
            Err(refused) => {
                tracing::info!(sid = self.sid, code = refused.code, message = %refused.message, "session's rooms not resumed: new session");
                telemetry::socketio_recovery("gap");
                false
            }
        }
    }
}

/// A session's rooms are not open to who the client is now: logged and
/// counted; it gets a new session.
pub(super) fn rooms_refused(sid: &str, refused: &Refusal) {
    tracing::info!(
        sid,
        code = refused.code,
        "session's rooms refused: new session"
    );
    telemetry::socketio_recovery("refused");
}

/// Whether a connection that ended for `reason` leaves a session to come
/// back to: the transport was lost (or the server went away), not a
/// goodbye or a punishment.
pub(super) fn recoverable(reason: DisconnectReason) -> bool {
    match reason {
        DisconnectReason::ClientClosed
        | DisconnectReason::TransportError
        | DisconnectReason::PingTimeout
        | DisconnectReason::SlowConsumer
        | DisconnectReason::PollingBufferFull
        | DisconnectReason::ServerShutdown => true,
        DisconnectReason::BadInput
        | DisconnectReason::TransportReplaced
        | DisconnectReason::ServerDisconnect
        | DisconnectReason::ConnectTimeout
        | DisconnectReason::MessageRate
        | DisconnectReason::TooLarge => false,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn claims() {
        let pid = Sid::random();
        assert_eq!(claim(&json!({})), Claim::Fresh);
        assert_eq!(claim(&json!({"token": "t"})), Claim::Fresh);
        assert_eq!(
            claim(&json!({"pid": pid.as_str(), "offset": "42"})),
            Claim::Resume {
                pid,
                since: Since::Local(42)
            }
        );
        assert!(matches!(
            claim(&json!({"pid": pid.as_str(), "offset": "lh3k9q2w1c:42"})),
            Claim::Resume {
                since: Since::Log(_),
                ..
            }
        ));
        let malformed = [
            json!({"pid": 5, "offset": "1"}),
            json!({"pid": "short", "offset": "1"}),
            json!({"pid": "../../etc/passwd/xx.", "offset": "1"}),
            json!({"pid": pid.as_str()}),
            json!({"pid": pid.as_str(), "offset": 7}),
            json!({"pid": pid.as_str(), "offset": "room-1"}),
            json!({"pid": pid.as_str(), "offset": "-1"}),
            json!({"pid": pid.as_str(), "offset": "99999999999999999999999"}),
        ];
        for auth in malformed {
            assert!(matches!(claim(&auth), Claim::Malformed(_)), "{auth}");
        }
    }

    #[test]
    fn only_a_lost_transport_leaves_a_session() {
        assert!(recoverable(DisconnectReason::TransportError));
        assert!(recoverable(DisconnectReason::ServerShutdown));
        assert!(!recoverable(DisconnectReason::ServerDisconnect));
        assert!(!recoverable(DisconnectReason::BadInput));
    }
}
