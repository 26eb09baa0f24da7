//! Socket.IO packets, protocol v5 (clients 3.x/4.x over Engine.IO v4) and v4
//! (clients 1.x/2.x over Engine.IO v3):
//! `<type>[<attachments>-][<namespace>,][<ack id>][<JSON data>]`.
//!
//! Owns parsing and encoding one packet's text, including the validity rules
//! of each type (an EVENT is a non-empty array starting with a string, ...).
//! Binary attachments travel as separate Engine.IO messages; reassembling
//! them is the connection's job (`layer`). Never does I/O.

use bytes::Bytes;
use serde_json::Value;

use crate::hub::Frame;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Connect,
    Disconnect,
    Event,
    Ack,
    ConnectError,
    BinaryEvent,
    BinaryAck,
}

impl Kind {
    fn from_digit(d: u8) -> Option<Kind> {
        Some(match d {
            b'0' => Kind::Connect,
            b'1' => Kind::Disconnect,
            b'2' => Kind::Event,
            b'3' => Kind::Ack,
            b'4' => Kind::ConnectError,
            b'5' => Kind::BinaryEvent,
            b'6' => Kind::BinaryAck,
            _ => return None,
        })
    }

    fn digit(self) -> char {
        match self {
            Kind::Connect => '0',
            Kind::Disconnect => '1',
            Kind::Event => '2',
            Kind::Ack => '3',
            Kind::ConnectError => '4',
            Kind::BinaryEvent => '5',
            Kind::BinaryAck => '6',
        }
    }

    pub fn is_binary(self) -> bool {
        matches!(self, Kind::BinaryEvent | Kind::BinaryAck)
    }
}

/// Most attachments one packet may announce (bounds what a client can make
/// us hold while it reassembles).
pub const MAX_ATTACHMENTS: usize = 64;
/// Longest ack id, in digits.
const MAX_ID_DIGITS: usize = 15;

#[derive(Debug, Clone, PartialEq)]
pub struct Packet {
    pub kind: Kind,
    /// `/` for the default namespace.
    pub nsp: String,
    /// v4 CONNECT only: the query after `?` in the namespace.
    pub query: Option<String>,
    pub id: Option<u64>,
    pub attachments: usize,
    pub data: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("empty packet")]
    Empty,
    #[error("unknown packet type")]
    UnknownType,
    #[error("bad attachment count")]
    BadAttachments,
    #[error("bad ack id")]
    BadId,
    #[error("data is not valid JSON")]
    BadJson,
    /// Well-formed JSON but for a string escape that is not valid UTF-16
    /// (a lone surrogate, which JavaScript's `JSON.stringify` emits): the
    /// header is fine, so the sender can be told and the connection kept.
    #[error("a string in the data is not valid UTF-16 (lone surrogate)")]
    BadUtf16 { nsp: String, id: Option<u64> },
    #[error("data does not fit the packet type")]
    BadPayload,
}

impl Packet {
    pub fn new(kind: Kind, nsp: &str, data: Option<Value>) -> Packet {
        Packet {
            kind,
            nsp: nsp.to_owned(),
            query: None,
            id: None,
            attachments: 0,
            data,
        }
    }

    pub fn decode(text: &str) -> Result<Packet, ProtocolError> {
        let bytes = text.as_bytes();
        let kind = Kind::from_digit(*bytes.first().ok_or(ProtocolError::Empty)?)
            .ok_or(ProtocolError::UnknownType)?;
        let mut pos = 1;
        let mut attachments = 0;
        if kind.is_binary() {
            let dash = text[pos..].find('-').ok_or(ProtocolError::BadAttachments)? + pos;
            let digits = &text[pos..dash];
            if digits.is_empty() || digits.len() > 3 || !digits.bytes().all(|b| b.is_ascii_digit())
            {
                return Err(ProtocolError::BadAttachments);
            }
            attachments = digits.parse().map_err(|_| ProtocolError::BadAttachments)?;
            if attachments > MAX_ATTACHMENTS {
                return Err(ProtocolError::BadAttachments);
            }
            pos = dash + 1;
        }
        let mut nsp = "/";
        let mut query = None;
        if bytes.get(pos) == Some(&b'/') {
            let end = text[pos..].find(',').map_or(text.len(), |i| i + pos);
            let full = &text[pos..end];
            match full.split_once('?') {
                Some((name, q)) => {
                    nsp = name;
                    query = Some(q.to_owned());
                }
                None => nsp = full,
            }
            pos = (end + 1).min(text.len());
        }
        let id_end = text[pos..]
            .bytes()
            .position(|b| !b.is_ascii_digit())
            .map_or(text.len(), |i| i + pos);
        let id = if id_end > pos {
            if id_end - pos > MAX_ID_DIGITS {
                return Err(ProtocolError::BadId);
            }
            Some(
                text[pos..id_end]
                    .parse()
                    .map_err(|_| ProtocolError::BadId)?,
            )
        } else {
            None
        };
        let rest = &text[id_end..];
        let data = if rest.is_empty() {
            None
        } else {
            Some(serde_json::from_str::<Value>(rest).map_err(|_| {
                if has_lone_surrogate(rest) {
                    ProtocolError::BadUtf16 {
                        nsp: nsp.to_owned(),
                        id,
                    }
                } else {
                    ProtocolError::BadJson
                }
            })?)
        };
        let valid = match (kind, &data) {
            (Kind::Connect, None | Some(Value::Object(_))) => true,
            (Kind::Disconnect, None) => true,
            (Kind::Event | Kind::BinaryEvent, Some(Value::Array(items))) => {
                matches!(items.first(), Some(Value::String(_)))
            }
            (Kind::Ack | Kind::BinaryAck, Some(Value::Array(_))) => id.is_some(),
            (Kind::ConnectError, Some(Value::Object(_) | Value::String(_))) => true,
            _ => false,
        };
        if !valid {
            return Err(ProtocolError::BadPayload);
        }
        Ok(Packet {
            kind,
            nsp: nsp.to_owned(),
            query,
            id,
            attachments,
            data,
        })
    }

    /// The packet's text, without the Engine.IO message prefix.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        self.encode_into(&mut out);
        out
    }

    /// The packet as an Engine.IO message frame (`4` + packet).
    pub fn to_frame(&self) -> Frame {
        let mut out = String::from("4");
        self.encode_into(&mut out);
        Frame::Text(Bytes::from(out))
    }

    fn encode_into(&self, out: &mut String) {
        use std::fmt::Write as _;
        out.push(self.kind.digit());
        if self.kind.is_binary() {
            let _ = write!(out, "{}-", self.attachments);
        }
        // The default namespace is implied, unless a query must be written
        // (v4 CONNECT `0/?token=x,`): else the query would be lost.
        if self.nsp != "/" || self.query.is_some() {
            out.push_str(&self.nsp);
            if let Some(query) = &self.query {
                out.push('?');
                out.push_str(query);
            }
            out.push(',');
        }
        if let Some(id) = self.id {
            let _ = write!(out, "{id}");
        }
        if let Some(data) = &self.data {
            // Serializing a `Value` cannot fail.
            out.push_str(&serde_json::to_string(data).unwrap_or_default());
        }
    }
}

/// Whether `json` holds a `\uXXXX` escape of a UTF-16 surrogate that is not
/// half of a high-low pair.
fn has_lone_surrogate(json: &str) -> bool {
    let bytes = json.as_bytes();
    let unit = |at: usize| -> Option<u16> {
        let hex = bytes.get(at..at + 6)?;
        if &hex[..2] != b"\\u" {
            return None;
        }
        u16::from_str_radix(std::str::from_utf8(&hex[2..]).ok()?, 16).ok()
    };
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            i += 1;
            continue;
        }
        match unit(i) {
            Some(0xD800..=0xDBFF) => match unit(i + 6) {
                Some(0xDC00..=0xDFFF) => i += 12,
                _ => return true,
            },
            Some(0xDC00..=0xDFFF) => return true,
            Some(_) => i += 6,
            // Any other escape: skip the escaped character.
            None => i += 2,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn round_trip(text: &str) -> Packet {
        let packet = Packet::decode(text).unwrap();
        assert_eq!(packet.encode(), text, "re-encodes to the same text");
        packet
    }

    #[test]
    fn a_lone_surrogate_is_told_apart_from_broken_json() {
        assert_eq!(
            Packet::decode(r#"2/chat,12["channel","\ud800"]"#),
            Err(ProtocolError::BadUtf16 {
                nsp: "/chat".into(),
                id: Some(12)
            })
        );
        assert!(matches!(
            Packet::decode(r#"2["channel","\udc00x"]"#),
            Err(ProtocolError::BadUtf16 { id: None, .. })
        ));
        // A valid pair, an escaped backslash before `u`, and broken JSON.
        assert!(Packet::decode(r#"2["channel","\ud83d\ude00"]"#).is_ok());
        assert!(Packet::decode(r#"2["channel","\\ud800"]"#).is_ok());
        assert_eq!(
            Packet::decode(r#"2["channel""#),
            Err(ProtocolError::BadJson)
        );
    }

    #[test]
    fn decodes_the_spec_examples() {
        let p = round_trip("0");
        assert_eq!((p.kind, p.nsp.as_str(), p.data), (Kind::Connect, "/", None));
        let p = round_trip(r#"0/admin,{"token":"123"}"#);
        assert_eq!(p.nsp, "/admin");
        assert_eq!(p.data, Some(json!({"token":"123"})));
        let p = round_trip(r#"2["hello",1]"#);
        assert_eq!(p.data, Some(json!(["hello", 1])));
        let p = round_trip(r#"2/admin,456["project:delete",123]"#);
        assert_eq!((p.nsp.as_str(), p.id), ("/admin", Some(456)));
        let p = round_trip(r#"3/admin,456[]"#);
        assert_eq!(p.kind, Kind::Ack);
        let p = round_trip(r#"51-["hello",{"_placeholder":true,"num":0}]"#);
        assert_eq!((p.kind, p.attachments), (Kind::BinaryEvent, 1));
        let p = round_trip(r#"61-/admin,456[{"_placeholder":true,"num":0}]"#);
        assert_eq!(
            (p.kind, p.id, p.attachments),
            (Kind::BinaryAck, Some(456), 1)
        );
        let p = round_trip(r#"4/random,{"message":"Invalid namespace"}"#);
        assert_eq!(p.kind, Kind::ConnectError);
        let p = round_trip("1/admin,");
        assert_eq!(p.kind, Kind::Disconnect);
    }

    #[test]
    fn a_query_on_the_default_namespace_survives_encoding() {
        // Found by the socketio_packet fuzz target: encode dropped the query.
        let p = round_trip(r#"0/?x=1s2{"to2/chat,"#);
        assert_eq!(
            (p.nsp.as_str(), p.query.as_deref()),
            ("/", Some(r#"x=1s2{"to2/chat"#))
        );
        let p = round_trip(r#"0/?token=abc,{"a":1}"#);
        assert_eq!(p.query.as_deref(), Some("token=abc"));
    }

    #[test]
    fn namespace_without_comma_and_v4_query() {
        let p = Packet::decode("0/custom").unwrap();
        assert_eq!(p.nsp, "/custom");
        let p = round_trip("0/custom?token=abc&x=1,");
        assert_eq!(p.query.as_deref(), Some("token=abc&x=1"));
    }

    #[test]
    fn refuses_what_the_reference_refuses() {
        for bad in [
            "",
            "abc",
            "7",
            "2{}",
            "2[]",
            "2[1]",
            r#"2abc["x"]"#,
            "1{}",
            "0[]",
            "3[]",
            "5[\"x\"]",
            "5a-[\"x\"]",
            "5999-[\"x\"]",
            "2[",
            r#"21234567890123456["x"]"#,
        ] {
            assert!(Packet::decode(bad).is_err(), "{bad:?} must be refused");
        }
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(text in ".{0,40}") {
            let _ = Packet::decode(&text);
        }

        #[test]
        fn arbitrary_prefixed_text_never_panics(text in "[0-6][0-9/,\\-\\[\\]\"a-z{}:]{0,30}") {
            let _ = Packet::decode(&text);
        }

        #[test]
        fn events_round_trip(
            nsp in "(/|/[a-z]{1,8})",
            id in proptest::option::of(0u64..1_000_000),
            name in "[a-z]{1,8}",
            arg in ".*",
        ) {
            let mut packet = Packet::new(Kind::Event, &nsp, Some(json!([name, arg])));
            packet.id = id;
            let text = packet.encode();
            prop_assert_eq!(Packet::decode(&text).unwrap(), packet);
        }
    }
}
