//! The JSON envelopes shared by `/ws` and `/sse`, for a published message:
//! `{"type":"message","channel":"c","data":<payload>,"id":"<id>","ts":<ms>}`,
//! and for an event from the Socket.IO emitter:
//! `{"type":"event","rooms":["r"],"event":"name","args":[...],"id":"<id>","ts":<ms>}`.
//!
//! `data` is the published payload itself when it parses as JSON, else the
//! payload as a JSON string (invalid UTF-8 replaced by U+FFFD). In `args`, a
//! binary argument is `{"$base64":"<standard base64>"}`. Built once per
//! message by the hub's format encoders, never per recipient.

use std::io::Write;

use base64::Engine as _;
use serde_json::Value;

use crate::hub::{AppEvent, Message};

/// Writes the envelope of `message` as one JSON object.
pub fn message_envelope(message: &Message) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.payload.len() + message.room.len() + 64);
    out.extend_from_slice(br#"{"type":"message","channel":"#);
    write_json_string(&mut out, &message.room);
    out.extend_from_slice(br#","data":"#);
    write_payload(&mut out, &message.payload);
    // Writing to a Vec cannot fail.
    let _ = write!(
        out,
        r#","id":"{}","ts":{}}}"#,
        message.wire_id(),
        message.ts
    );
    out
}

/// Writes `{"type":"reset","channel":"<room>"}`: a resuming client's gap in
/// `room` cannot be filled (docs/RECOVERY.md).
pub fn reset_envelope(room: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(room.len() + 32);
    out.extend_from_slice(br#"{"type":"reset","channel":"#);
    write_json_string(&mut out, room);
    out.push(b'}');
    out
}

/// Writes the envelope of an emitter's `event` as one JSON object.
pub fn event_envelope(event: &AppEvent) -> Vec<u8> {
    let mut out = Vec::with_capacity(event.args.len() + 96);
    out.extend_from_slice(br#"{"type":"event","rooms":["#);
    for (i, room) in event.rooms.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_json_string(&mut out, room);
    }
    out.extend_from_slice(br#"],"event":"#);
    write_json_string(&mut out, &event.name);
    out.extend_from_slice(br#","args":"#);
    if event.binary.is_empty() {
        out.extend_from_slice(&event.args);
    } else {
        // Rare (binary arguments): the placeholders become base64 inline.
        match serde_json::from_slice::<Value>(&event.args) {
            Ok(mut args) => {
                inline_binary(&mut args, &event.binary);
                let _ = serde_json::to_writer(&mut out, &args);
            }
            Err(_) => out.extend_from_slice(b"[]"),
        }
    }
    let _ = write!(out, r#","id":"{}","ts":{}}}"#, event.id, event.ts);
    out
}

/// Replaces every `{"_placeholder":true,"num":N}` by `{"$base64":".."}`.
fn inline_binary(value: &mut Value, binary: &[bytes::Bytes]) {
    match value {
        Value::Array(items) => items.iter_mut().for_each(|v| inline_binary(v, binary)),
        Value::Object(map) => {
            let num = (map.len() == 2 && map.get("_placeholder") == Some(&Value::Bool(true)))
                .then(|| map.get("num").and_then(Value::as_u64))
                .flatten()
                .and_then(|n| binary.get(n as usize));
            match num {
                Some(data) => {
                    let encoded = base64::engine::general_purpose::STANDARD.encode(data);
                    *value = serde_json::json!({ "$base64": encoded });
                }
                None => map.values_mut().for_each(|v| inline_binary(v, binary)),
            }
        }
        _ => {}
    }
}

/// The payload as JSON: verbatim if it is a JSON document, else a string.
fn write_payload(out: &mut Vec<u8>, payload: &[u8]) {
    if serde_json::from_slice::<serde::de::IgnoredAny>(payload).is_ok() {
        out.extend_from_slice(payload);
    } else {
        write_json_string(out, &String::from_utf8_lossy(payload));
    }
}

fn write_json_string(out: &mut Vec<u8>, s: &str) {
    // serde_json escapes exactly as JSON requires; a Vec writer cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::sync::Arc;

    fn message(payload: &'static [u8]) -> Message {
        Message {
            room: Arc::from("r\"1"),
            payload: Bytes::from_static(payload),
            id: 7,
            ts: 42,
            log: None,
        }
    }

    fn parse(bytes: Vec<u8>) -> serde_json::Value {
        serde_json::from_slice(&bytes).expect("the envelope is valid JSON")
    }

    #[test]
    fn json_payloads_are_embedded_and_text_is_a_string() {
        let v = parse(message_envelope(&message(br#"{"t": [1, 2.5]}"#)));
        assert_eq!(v["data"], serde_json::json!({"t": [1, 2.5]}));
        assert_eq!(v["channel"], "r\"1");
        assert_eq!(v["id"], "7");
        assert_eq!(v["ts"], 42);
        assert_eq!(v["type"], "message");
        let v = parse(message_envelope(&message(b"hello \"world\"\n")));
        assert_eq!(v["data"], "hello \"world\"\n");
        let v = parse(message_envelope(&message(b"12 34")));
        assert_eq!(v["data"], "12 34", "two JSON values are not one document");
        let v = parse(message_envelope(&message(b"\xff\xfeok")));
        assert_eq!(v["data"], "\u{fffd}\u{fffd}ok");
    }

    #[test]
    fn events_carry_rooms_name_and_args_with_binary_as_base64() {
        let event = AppEvent {
            name: "price".into(),
            args: Bytes::from_static(
                br#"[1,{"chart":{"_placeholder":true,"num":0}},{"_placeholder":true,"num":7}]"#,
            ),
            binary: vec![Bytes::from_static(b"\x01\x02\xff")],
            rooms: Arc::from([Arc::from("a"), Arc::from("b\"")]),
            id: 9,
            ts: 10,
        };
        let v = parse(event_envelope(&event));
        assert_eq!(
            v,
            serde_json::json!({
                "type": "event", "rooms": ["a", "b\""], "event": "price",
                "args": [1, {"chart": {"$base64": "AQL/"}}, {"_placeholder": true, "num": 7}],
                "id": "9", "ts": 10
            })
        );
        let plain = AppEvent {
            binary: Vec::new(),
            args: Bytes::from_static(b"[]"),
            rooms: Arc::from([]),
            ..event
        };
        assert_eq!(parse(event_envelope(&plain))["args"], serde_json::json!([]));
    }
}
