//! The hub format of Socket.IO: how a published message (or a join's
//! `hello`, an emitter's event, its disconnect request) looks on the wire,
//! encoded once per message and shared by every Socket.IO recipient.
//!
//! The frame is an Engine.IO message (`4`) holding a Socket.IO EVENT (`2`) on
//! the default namespace, identical for Engine.IO v3 and v4 over websocket;
//! polling framing is added when a GET drains the outbox. Never called per
//! recipient: the hub calls `encode` at most once per message.

use std::fmt::Write as _;

use bytes::Bytes;

use crate::hub::{AppEvent, Event, Format, Frame};

/// Socket.IO's hub format with connection state recovery on (id 0; SSE is
/// 1, `/ws` 2): each message ends with its offset.
pub static FORMAT: Format = Format {
    id: 0,
    name: "socketio",
    encode: encode_with_offset,
    separate_attachments: true,
};

/// Socket.IO's hub format with recovery off (`--recovery-window-s 0`, id 3):
/// the seed's `message` event, no offset. A server uses one of the two.
pub static FORMAT_WITHOUT_OFFSET: Format = Format {
    id: 3,
    name: "socketio",
    encode: encode_without_offset,
    separate_attachments: true,
};

/// `42["message",<payload>,{"room":..,"id":"<id>","ts":<ms>},"<id>"]` and
/// `42["hello",<room>,null]` (`42["hello",<room>]` without recovery). The payload is a JSON string: bytes that are not
/// valid UTF-8 are replaced (U+FFFD) for this format only; other transports
/// keep them byte-for-byte.
///
/// The last argument is the message's offset for connection state recovery
/// (socket.io-client keeps the last string argument of each event as the
/// position to resume from): the id, the same for every member, so the frame
/// is still encoded once. Every client gets it, recovering or not (as from
/// socket.io's own server); a listener `(payload, meta)` never sees it.
///
/// `hello` ends with `null` for the same reason: its last argument would
/// otherwise be the room's name, which the client would keep as its position
/// and a reconnect would then fail to recover. A `(room)` listener never
/// sees the `null`.
fn encode_with_offset(event: &Event<'_>) -> Option<Frame> {
    encode(event, true)
}

/// The same without the offset: a client of a server that recovers
/// nothing would only see it as an extra argument (`onAny`), and it costs
/// 0.5% of the instructions per delivery (docs/BENCHMARKS.md).
fn encode_without_offset(event: &Event<'_>) -> Option<Frame> {
    encode(event, false)
}

fn encode(event: &Event<'_>, offset: bool) -> Option<Frame> {
    let text = match event {
        Event::Message(message) => {
            let payload = String::from_utf8_lossy(&message.payload);
            let mut out = String::with_capacity(message.payload.len() + message.room.len() + 64);
            out.push_str(r#"42["message","#);
            push_json_string(&mut out, &payload);
            out.push_str(r#",{"room":"#);
            push_json_string(&mut out, &message.room);
            let id = message.wire_id();
            let _ = write!(out, r#","id":"{id}","ts":{}}}"#, message.ts);
            if offset {
                let _ = write!(out, r#","{id}""#);
            }
            out.push(']');
            out
        }
        Event::Joined { room } => {
            let mut out = String::with_capacity(room.len() + 24);
            out.push_str(r#"42["hello","#);
            push_json_string(&mut out, room);
            if offset {
                out.push_str(",null");
            }
            out.push(']');
            out
        }
        Event::App(event) => app_event(event),
        // Socket.IO tells a session it was not recovered its own way.
        Event::Reset { .. } => return None,
        // DISCONNECT on `/`: the client does not reconnect by itself.
        Event::Disconnect => "41".to_owned(),
    };
    Some(Frame::Text(Bytes::from(text)))
}

/// `42["name",args...]`, or with binary arguments `45<n>-["name",...]`
/// (BINARY_EVENT; the placeholders are already in `args` and the hub sends
/// the attachments after this frame), as a Node.js server sends them.
fn app_event(event: &AppEvent) -> String {
    let args = String::from_utf8_lossy(&event.args);
    let mut out = String::with_capacity(args.len() + event.name.len() + 16);
    match event.binary.len() {
        0 => out.push_str("42"),
        n => {
            let _ = write!(out, "45{n}-");
        }
    }
    out.push('[');
    push_json_string(&mut out, &event.name);
    // `args` is a JSON array: its elements follow the name.
    match args.trim().strip_prefix('[').map(str::trim_start) {
        Some(rest) if rest.starts_with(']') => out.push(']'),
        Some(rest) => {
            out.push(',');
            out.push_str(rest);
        }
        None => out.push(']'),
    }
    out
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
            log: None,
        };
        assert_eq!(
            text(encode_with_offset(&Event::Message(&message))),
            r#"42["message","he said \"hi\"\n",{"room":"device01","id":"7","ts":1700000000000},"7"]"#
        );
        assert_eq!(
            text(encode_without_offset(&Event::Message(&message))),
            r#"42["message","he said \"hi\"\n",{"room":"device01","id":"7","ts":1700000000000}]"#,
            "recovery off: the seed's event"
        );
        assert_eq!(
            text(encode_with_offset(&Event::Joined { room: "r\"1" })),
            r#"42["hello","r\"1",null]"#,
            "recovery on: a last argument that is not a string, so not an offset"
        );
        assert_eq!(
            text(encode_without_offset(&Event::Joined { room: "r\"1" })),
            r#"42["hello","r\"1"]"#
        );
    }

    #[test]
    fn app_events_as_node_sends_them() {
        let event = |args: &'static str, binary: usize| AppEvent {
            name: "price".into(),
            args: Bytes::from_static(args.as_bytes()),
            binary: vec![Bytes::from_static(b"x"); binary],
            rooms: Arc::from([]),
            id: 1,
            ts: 2,
        };
        let encoded = |e: AppEvent| text(encode_with_offset(&Event::App(&e)));
        assert_eq!(encoded(event("[]", 0)), r#"42["price"]"#);
        assert_eq!(encoded(event("[1,\"a\"]", 0)), r#"42["price",1,"a"]"#);
        assert_eq!(
            encoded(event(
                r#"[{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#,
                2
            )),
            r#"452-["price",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#
        );
        assert_eq!(text(encode_with_offset(&Event::Disconnect)), "41");
    }

    #[test]
    fn invalid_utf8_is_replaced() {
        let message = Message {
            room: Arc::from("r"),
            payload: Bytes::from_static(b"a\xffb"),
            id: 1,
            ts: 2,
            log: None,
        };
        let frame = text(encode_with_offset(&Event::Message(&message)));
        let value: serde_json::Value = serde_json::from_str(&frame[2..]).unwrap();
        assert_eq!(value[1], "a\u{fffd}b");
    }
}
