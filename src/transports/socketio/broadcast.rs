//! The hub format of Socket.IO: how a published message (or a join's
//! `hello`) looks on the wire, encoded once per message and shared by every
//! Socket.IO recipient.
//!
//! The frame is an Engine.IO message (`4`) holding a Socket.IO EVENT (`2`) on
//! the default namespace, identical for Engine.IO v3 and v4 over websocket;
//! polling framing is added when a GET drains the outbox. Never called per
//! recipient: the hub calls `encode` at most once per message.

use std::fmt::Write as _;

use bytes::Bytes;

use crate::hub::{Event, Format, Frame};

/// Socket.IO's hub format (id 0, see `transports::FORMAT_IDS`).
pub static FORMAT: Format = Format {
    id: 0,
    name: "socket.io",
    encode,
};

/// `42["message",<payload>,{"room":..,"id":"<id>","ts":<ms>}]` and
/// `42["hello",<room>]`. The payload is a JSON string: bytes that are not
/// valid UTF-8 are replaced (U+FFFD) for this format only; other transports
/// keep them byte-for-byte.
fn encode(event: &Event<'_>) -> Option<Frame> {
    let text = match event {
        Event::Message(message) => {
            let payload = String::from_utf8_lossy(&message.payload);
            let mut out = String::with_capacity(message.payload.len() + message.room.len() + 64);
            out.push_str(r#"42["message","#);
            push_json_string(&mut out, &payload);
            out.push_str(r#",{"room":"#);
            push_json_string(&mut out, &message.room);
            let _ = write!(out, r#","id":"{}","ts":{}}}]"#, message.id, message.ts);
            out
        }
        Event::Joined { room } => {
            let mut out = String::with_capacity(room.len() + 16);
            out.push_str(r#"42["hello","#);
            push_json_string(&mut out, room);
            out.push(']');
            out
        }
    };
    Some(Frame::Text(Bytes::from(text)))
}

fn push_json_string(out: &mut String, text: &str) {
    // Serializing a &str cannot fail.
    out.push_str(&serde_json::to_string(text).unwrap_or_default());
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::hub::Message;

    fn text(frame: Option<Frame>) -> String {
        match frame {
            Some(Frame::Text(b)) => String::from_utf8(b.to_vec()).unwrap(),
            other => panic!("expected text, got {other:?}"),
        }
    }

    #[test]
    fn message_and_hello_frames() {
        let message = Message {
            room: Arc::from("device01"),
            payload: Bytes::from_static(b"he said \"hi\"\n"),
            id: 7,
            ts: 1700000000000,
        };
        assert_eq!(
            text(encode(&Event::Message(&message))),
            r#"42["message","he said \"hi\"\n",{"room":"device01","id":"7","ts":1700000000000}]"#
        );
        assert_eq!(
            text(encode(&Event::Joined { room: "r\"1" })),
            r#"42["hello","r\"1"]"#
        );
    }

    #[test]
    fn invalid_utf8_is_replaced() {
        let message = Message {
            room: Arc::from("r"),
            payload: Bytes::from_static(b"a\xffb"),
            id: 1,
            ts: 2,
        };
        let frame = text(encode(&Event::Message(&message)));
        let value: serde_json::Value = serde_json::from_str(&frame[2..]).unwrap();
        assert_eq!(value[1], "a\u{fffd}b");
    }
}
