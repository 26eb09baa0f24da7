//! Engine.IO packets (v3 and v4): the one-character type prefix of a text
//! frame, or the type byte of a v3 binary frame.
//!
//! Owns decoding what a client sends and encoding the control packets the
//! server writes itself. Never touches sockets or sessions; called by the
//! payload codec, the websocket task and the polling handlers.

use bytes::Bytes;

use crate::hub::Frame;

/// Engine.IO protocol revision, from the `EIO` query parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// socket.io-client 1.x and 2.x: the client pings, binary frames carry a
    /// type byte, polling payloads are length-prefixed.
    V3,
    /// socket.io-client 3.x and 4.x: the server pings, raw binary frames,
    /// polling payloads separated by `\x1e`.
    V4,
}

impl Version {
    /// Parses the `EIO` query value.
    pub fn from_query(value: &str) -> Option<Version> {
        match value {
            "3" => Some(Version::V3),
            "4" => Some(Version::V4),
            _ => None,
        }
    }
}

/// One Engine.IO packet. A message's text excludes the leading `4`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    Open(Bytes),
    Close,
    Ping(Bytes),
    Pong(Bytes),
    Message(Frame),
    Upgrade,
    Noop,
}

/// Why a packet could not be decoded. The connection that sent it is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    #[error("empty packet")]
    Empty,
    #[error("unknown packet type")]
    UnknownType,
    #[error("text packet is not valid UTF-8")]
    NotUtf8,
    #[error("binary payload is not valid base64")]
    BadBase64,
}

/// Type digits as they appear on the wire.
pub const OPEN: u8 = b'0';
pub const CLOSE: u8 = b'1';
pub const PING: u8 = b'2';
pub const PONG: u8 = b'3';
pub const MESSAGE: u8 = b'4';
pub const UPGRADE: u8 = b'5';
pub const NOOP: u8 = b'6';

impl Packet {
    /// Decodes a text frame (or one packet of a text payload). `text` must be
    /// valid UTF-8; the message data is a zero-copy slice of it.
    pub fn decode_text(text: Bytes) -> Result<Packet, PacketError> {
        let Some(&kind) = text.first() else {
            return Err(PacketError::Empty);
        };
        let data = text.slice(1..);
        Self::with_type(kind, data, false)
    }

    /// Decodes a websocket text frame or one packet of a text payload: as
    /// [`Packet::decode_text`], except that `b...` is a base64 binary message
    /// (what clients without binary support send, e.g. 1.x in Node).
    pub fn decode_text_frame(version: Version, text: Bytes) -> Result<Packet, PacketError> {
        match text.first() {
            Some(b'b') => Self::decode_base64(version, &text[1..]),
            _ => Self::decode_text(text),
        }
    }

    /// Decodes a binary websocket frame: v4 frames are raw message data; v3
    /// frames start with a type byte (0..=6, normally 4).
    pub fn decode_binary(version: Version, data: Bytes) -> Result<Packet, PacketError> {
        match version {
            Version::V4 => Ok(Packet::Message(Frame::Binary(data))),
            Version::V3 => {
                let Some(&kind) = data.first() else {
                    return Err(PacketError::Empty);
                };
                let rest = data.slice(1..);
                Self::with_type(kind.wrapping_add(b'0'), rest, true)
            }
        }
    }

    /// Decodes a base64 packet of a polling payload: v4 `b<base64>` (always a
    /// message), v3 `b<type><base64>`. `text` starts after the `b`.
    pub fn decode_base64(version: Version, text: &[u8]) -> Result<Packet, PacketError> {
        use base64::Engine as _;
        let (kind, encoded) = match version {
            Version::V4 => (MESSAGE, text),
            Version::V3 => match text.split_first() {
                Some((&kind, rest)) => (kind, rest),
                None => return Err(PacketError::Empty),
            },
        };
        let data = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|_| PacketError::BadBase64)?;
        Self::with_type(kind, Bytes::from(data), true)
    }

    fn with_type(kind: u8, data: Bytes, binary: bool) -> Result<Packet, PacketError> {
        Ok(match kind {
            OPEN => Packet::Open(data),
            CLOSE => Packet::Close,
            PING => Packet::Ping(data),
            PONG => Packet::Pong(data),
            MESSAGE if binary => Packet::Message(Frame::Binary(data)),
            MESSAGE => {
                if std::str::from_utf8(&data).is_err() {
                    return Err(PacketError::NotUtf8);
                }
                Packet::Message(Frame::Text(data))
            }
            UPGRADE => Packet::Upgrade,
            NOOP => Packet::Noop,
            _ => return Err(PacketError::UnknownType),
        })
    }

    /// Encodes the packet as it goes in the outbox or on a websocket: text
    /// frames carry the full packet (type digit included); binary frames are
    /// message data only (the v3 type byte is added by the writer).
    pub fn encode(&self) -> Frame {
        let text = |kind: u8, data: &[u8]| {
            let mut out = Vec::with_capacity(1 + data.len());
            out.push(kind);
            out.extend_from_slice(data);
            Frame::Text(Bytes::from(out))
        };
        match self {
            Packet::Open(data) => text(OPEN, data),
            Packet::Close => Frame::Text(Bytes::from_static(b"1")),
            Packet::Ping(data) => text(PING, data),
            Packet::Pong(data) => text(PONG, data),
            Packet::Message(Frame::Text(data)) => text(MESSAGE, data),
            Packet::Message(Frame::Binary(data)) => Frame::Binary(data.clone()),
            Packet::Upgrade => Frame::Text(Bytes::from_static(b"5")),
            Packet::Noop => Frame::Text(Bytes::from_static(b"6")),
        }
    }
}

/// Prefixes a Socket.IO (or application) text with the message type `4`.
pub fn message_text(text: &str) -> Frame {
    let mut out = String::with_capacity(1 + text.len());
    out.push('4');
    out.push_str(text);
    Frame::Text(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn decodes_every_text_type() {
        let cases: [(&str, Packet); 7] = [
            ("0{}", Packet::Open(Bytes::from_static(b"{}"))),
            ("1", Packet::Close),
            ("2probe", Packet::Ping(Bytes::from_static(b"probe"))),
            ("3", Packet::Pong(Bytes::new())),
            (
                "4héllo",
                Packet::Message(Frame::Text(Bytes::from("héllo".as_bytes()))),
            ),
            ("5", Packet::Upgrade),
            ("6", Packet::Noop),
        ];
        for (wire, packet) in cases {
            let decoded = Packet::decode_text(Bytes::from(wire.as_bytes())).unwrap();
            assert_eq!(decoded, packet);
            assert_eq!(decoded.encode(), Frame::Text(Bytes::from(wire.as_bytes())));
        }
    }

    #[test]
    fn refuses_garbage() {
        assert_eq!(Packet::decode_text(Bytes::new()), Err(PacketError::Empty));
        assert_eq!(
            Packet::decode_text(Bytes::from_static(b"abc")),
            Err(PacketError::UnknownType)
        );
        assert_eq!(
            Packet::decode_text(Bytes::from_static(b"7")),
            Err(PacketError::UnknownType)
        );
        assert_eq!(
            Packet::decode_base64(Version::V4, b"!!"),
            Err(PacketError::BadBase64)
        );
    }

    #[test]
    fn binary_frames_per_version() {
        let raw = Bytes::from_static(&[1, 2, 3]);
        assert_eq!(
            Packet::decode_binary(Version::V4, raw.clone()).unwrap(),
            Packet::Message(Frame::Binary(raw.clone()))
        );
        assert_eq!(
            Packet::decode_binary(Version::V3, Bytes::from_static(&[4, 1, 2, 3])).unwrap(),
            Packet::Message(Frame::Binary(raw.clone()))
        );
        assert_eq!(
            Packet::decode_base64(Version::V4, b"AQID").unwrap(),
            Packet::Message(Frame::Binary(raw.clone()))
        );
        assert_eq!(
            Packet::decode_base64(Version::V3, b"4AQID").unwrap(),
            Packet::Message(Frame::Binary(raw.clone()))
        );
        assert_eq!(
            Packet::decode_text_frame(Version::V3, Bytes::from_static(b"b4AQID")).unwrap(),
            Packet::Message(Frame::Binary(raw.clone()))
        );
        assert_eq!(
            Packet::decode_text_frame(Version::V4, Bytes::from_static(b"bAQID")).unwrap(),
            Packet::Message(Frame::Binary(raw))
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            let bytes = Bytes::from(data.clone());
            let _ = Packet::decode_binary(Version::V3, bytes.clone());
            let _ = Packet::decode_binary(Version::V4, bytes);
            let _ = Packet::decode_base64(Version::V3, &data);
            if let Ok(text) = String::from_utf8(data) {
                let _ = Packet::decode_text(Bytes::from(text));
            }
        }

        #[test]
        fn text_messages_round_trip(text in ".*") {
            let frame = message_text(&text);
            let Frame::Text(wire) = frame.clone() else { unreachable!() };
            let packet = Packet::decode_text(wire).unwrap();
            prop_assert_eq!(&packet, &Packet::Message(Frame::Text(Bytes::from(text))));
            prop_assert_eq!(packet.encode(), frame);
        }
    }
}
