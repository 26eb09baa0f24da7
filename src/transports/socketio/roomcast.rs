//! roomcast's own Socket.IO events: `channel` joins rooms,
//! `leave` leaves them. A room is a string or an array of strings; an
//! invalid name gets a specific error (in the ack, or as an `error` event
//! when the client asked for none) and the connection stays up. Joining
//! makes the hub say `hello` to the room's other members.
//!
//! A join is checked and confirmed by the connection core
//! ([`Connection::may_join`], [`Connection::confirm`]) and acknowledged once
//! the broker confirmed the rooms' subscriptions: at once when they are (memory broker,
//! pattern mode, rooms already subscribed), else from a task spawned on the
//! server's `Shutdown` that answers through [`Socket::later`].
//!
//! Owns only this event vocabulary; joins and leaves go through [`Socket`]
//! and its [`Connection`].
//! Never closes a connection for bad input of its own events.

use futures_util::FutureExt;
use serde_json::{Value, json};

use super::socket::{AckId, Args, ConnectError, Handler, Handshake, Later, Socket};
use crate::refusal::Refusal;
use crate::shutdown::Shutdown;
#[cfg(doc)]
use crate::transports::Connection;

/// The product's handler (the seed system's `channel` event, and more):
/// authenticates on connect and checks every join against the rules (the
/// connection's security settings, `SocketIoConfig::security`).
#[derive(Clone, Default)]
pub struct RoomcastHandler {
    /// Where acks that wait for the broker run.
    tasks: Shutdown,
}

impl std::fmt::Debug for RoomcastHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoomcastHandler").finish_non_exhaustive()
    }
}

impl RoomcastHandler {
    pub fn new(shutdown: Shutdown) -> Self {
        RoomcastHandler { tasks: shutdown }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Join,
    Leave,
}

/// Error codes sent in `error` events.
const BAD_ROOM: &str = "bad_room";

/// The connection token: v5 `auth: {token}`, else the handshake query's
/// `token` (clients 1.x/2.x have no auth payload).
fn token<'a>(handshake: &'a Handshake<'_>) -> Option<&'a str> {
    handshake
        .auth
        .get("token")
        .and_then(Value::as_str)
        .or_else(|| {
            handshake
                .query
                .iter()
                .find(|(k, _)| k == "token")
                .map(|(_, v)| v.as_str())
        })
}

impl Handler for RoomcastHandler {
    fn on_connect(
        &self,
        socket: &mut Socket<'_>,
        handshake: &Handshake<'_>,
    ) -> Result<(), ConnectError> {
        let conn = socket.connection();
        match conn
            .security()
            .authenticate(conn.transport(), token(handshake))
        {
            Ok(identity) => {
                socket.set_identity(identity);
                Ok(())
            }
            // The message is the stable code (v4 clients see only it); the
            // data carries both for v5 clients.
            Err(refused) => Err(ConnectError {
                message: refused.code.to_owned(),
                data: Some(json!({"code": refused.code, "message": refused.message})),
            }),
        }
    }

    fn on_event(&self, socket: &mut Socket<'_>, event: &str, args: Args, ack: Option<AckId>) {
        let op = match event {
            "channel" => Op::Join,
            "leave" => Op::Leave,
            _ => {
                tracing::debug!(sid = socket.sid(), event, "ignoring unknown event");
                return;
            }
        };
        let conn = socket.connection();
        let outcome = rooms_of(args.values.first()).and_then(|rooms| {
            // Check everything first so a refused name joins nothing.
            match op {
                Op::Join => conn.may_join(&rooms)?,
                Op::Leave => {
                    for room in &rooms {
                        conn.security().check_room(conn.transport(), room)?;
                    }
                }
            }
            Ok(rooms)
        });
        let rooms = match outcome {
            Ok(rooms) => rooms,
            Err(refused) => {
                tracing::debug!(
                    sid = socket.sid(),
                    event,
                    code = refused.code,
                    "refused room request"
                );
                return answer_sync(socket, ack, Err(refused));
            }
        };
        if op == Op::Leave {
            for room in &rooms {
                socket.leave(room);
            }
            return answer_sync(socket, ack, Ok(()));
        }
        let joined: Vec<String> = rooms.into_iter().filter(|room| socket.join(room)).collect();
        let mut confirm = Box::pin(socket.connection().confirm(joined.clone()));
        match (&mut confirm).now_or_never() {
            Some(result) => {
                if result.is_err() {
                    // The hub let go of them; the connection forgets them too.
                    socket.forget(&joined);
                }
                answer_sync(socket, ack, result)
            }
            None => {
                let later = socket.later();
                self.tasks.spawn(async move {
                    answer(&later, ack, confirm.await);
                });
            }
        }
    }
}

/// The answer to a `channel`/`leave` request: the ack the client asked for
/// (`{ok:true}` or `{ok:false,error,code}`), or else an `error` event on failure.
fn answer_sync(socket: &mut Socket<'_>, ack: Option<AckId>, result: Result<(), Refusal>) {
    let _ = match (ack, reply(result)) {
        (Some(ack), (reply, _)) => socket.ack(ack, Args::new(vec![reply])),
        (None, (_, Some(error))) => socket.emit("error", Args::new(vec![error])),
        (None, (_, None)) => Ok(()),
    };
}

/// [`answer_sync`] from another task.
fn answer(later: &Later, ack: Option<AckId>, result: Result<(), Refusal>) {
    let _ = match (ack, reply(result)) {
        (Some(ack), (reply, _)) => later.ack(ack, Args::new(vec![reply])),
        (None, (_, Some(error))) => later.emit("error", Args::new(vec![error])),
        (None, (_, None)) => Ok(()),
    };
}

/// The ack's value, and the `error` event's when it failed.
fn reply(result: Result<(), Refusal>) -> (Value, Option<Value>) {
    match result {
        Ok(()) => (json!({"ok": true}), None),
        Err(Refusal { code, message, .. }) => (
            json!({"ok": false, "error": message, "code": code}),
            Some(json!({"code": code, "message": message})),
        ),
    }
}

/// The room names of a `channel`/`leave` argument.
fn rooms_of(arg: Option<&Value>) -> Result<Vec<String>, Refusal> {
    let bad = |message: &str| Refusal::new(http::StatusCode::BAD_REQUEST, BAD_ROOM, message);
    match arg {
        Some(Value::String(room)) => Ok(vec![room.clone()]),
        Some(Value::Array(items)) if items.is_empty() => Err(bad("room list is empty")),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                Value::String(room) => Ok(room.clone()),
                _ => Err(bad("room names must be strings")),
            })
            .collect(),
        Some(_) => Err(bad("room name must be a string or an array of strings")),
        None => Err(bad("room name missing")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_arguments() {
        assert_eq!(rooms_of(Some(&json!("a"))).unwrap(), vec!["a"]);
        assert_eq!(rooms_of(Some(&json!(["a", "b"]))).unwrap(), vec!["a", "b"]);
        assert!(rooms_of(Some(&json!(["a", 1]))).is_err());
        assert!(rooms_of(Some(&json!(5))).is_err());
        assert!(rooms_of(Some(&json!([]))).is_err());
        assert!(rooms_of(None).is_err());
    }
}
