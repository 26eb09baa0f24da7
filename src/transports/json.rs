//! The JSON message envelope shared by `/ws` and `/sse`:
//! `{"type":"message","channel":"c","data":<payload>,"id":"<id>","ts":<ms>}`.
//!
//! `data` is the published payload itself when it parses as JSON, else the
//! payload as a JSON string (invalid UTF-8 replaced by U+FFFD). Built once per
//! message by the hub's format encoders, never per recipient.

use std::io::Write;

use crate::hub::Message;

/// Writes the envelope of `message` as one JSON object.
pub fn message_envelope(message: &Message) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.payload.len() + message.room.len() + 64);
    out.extend_from_slice(br#"{"type":"message","channel":"#);
    write_json_string(&mut out, &message.room);
    out.extend_from_slice(br#","data":"#);
    write_payload(&mut out, &message.payload);
    // Writing to a Vec cannot fail.
    let _ = write!(out, r#","id":"{}","ts":{}}}"#, message.id, message.ts);
    out
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
}
