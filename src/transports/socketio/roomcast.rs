//! roomcast's own Socket.IO events (issue 3 §2): `channel` joins rooms,
//! `leave` leaves them. A room is a string or an array of strings; an
//! invalid name gets a specific error (in the ack, or as an `error` event
//! when the client asked for none) and the connection stays up. Joining
//! makes the hub say `hello` to the room's other members.
//!
//! Owns only this event vocabulary; joins and leaves go through [`Socket`].
//! Never closes a connection for bad input of its own events.

use serde_json::{Value, json};

use super::socket::{AckId, Args, Handler, Socket};
use crate::hub::validate_room_name;

/// The product's handler (the seed system's `channel` event, and more).
#[derive(Debug, Default, Clone, Copy)]
pub struct RoomcastHandler;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Join,
    Leave,
}

/// Error codes sent in `error` events.
const BAD_ROOM: &str = "bad_room";

impl Handler for RoomcastHandler {
    fn on_event(&self, socket: &mut Socket<'_>, event: &str, args: Args, ack: Option<AckId>) {
        let op = match event {
            "channel" => Op::Join,
            "leave" => Op::Leave,
            _ => {
                tracing::debug!(sid = socket.sid(), event, "ignoring unknown event");
                return;
            }
        };
        let outcome = rooms_of(args.values.first()).and_then(|rooms| {
            // Validate everything first so a bad name joins nothing.
            for room in &rooms {
                validate_room_name(room).map_err(|e| (e.code(), e.to_string()))?;
            }
            Ok(rooms)
        });
        let reply = match outcome {
            Ok(rooms) => {
                for room in rooms {
                    match op {
                        Op::Join => socket.join(&room),
                        Op::Leave => socket.leave(&room),
                    };
                }
                json!({"ok": true})
            }
            Err((code, message)) => {
                tracing::debug!(sid = socket.sid(), event, code, "refused room request");
                if ack.is_none() {
                    let _ = socket.emit(
                        "error",
                        Args::new(vec![json!({"code": code, "message": message})]),
                    );
                    return;
                }
                json!({"ok": false, "error": message})
            }
        };
        if let Some(ack) = ack {
            let _ = socket.ack(ack, Args::new(vec![reply]));
        }
    }
}

/// The room names of a `channel`/`leave` argument.
fn rooms_of(arg: Option<&Value>) -> Result<Vec<String>, (&'static str, String)> {
    let bad = |message: &str| (BAD_ROOM, message.to_owned());
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
