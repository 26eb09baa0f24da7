//! Polling payloads: several Engine.IO packets in one HTTP body.
//!
//! - v4: packets separated by `\x1e`; a binary message is `b` + base64.
//! - v3 text: each packet as `<length>:<packet>`, the length counted in UTF-16
//!   code units (JavaScript string length); binary as `b<type>` + base64.
//! - v3 binary (XHR2 clients, `Content-Type: application/octet-stream`): each
//!   packet as a kind byte (0 text, 1 binary), the length as decimal digit
//!   bytes, `0xFF`, then the bytes (binary packets start with their type byte).
//!
//! Owns only the byte formats; never touches sessions. Called by the polling
//! handlers with whole bodies.

use base64::Engine as _;
use bytes::{BufMut, Bytes, BytesMut};

use super::packet::{MESSAGE, Packet, PacketError, Version};
use crate::hub::Frame;

/// Record separator between v4 packets.
const SEPARATOR: u8 = 0x1e;
/// Longest length prefix accepted, in digits: bodies are capped at
/// `max_payload` long before this matters.
const MAX_LENGTH_DIGITS: usize = 12;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("payload is not valid UTF-8")]
    NotUtf8,
    #[error("bad length prefix")]
    BadLength,
    #[error("payload ends inside a packet")]
    Truncated,
    #[error(transparent)]
    Packet(#[from] PacketError),
}

/// Decodes a POST body. `binary` is true when the request said
/// `application/octet-stream` (v3 only; the caller refuses it for v4).
pub fn decode(version: Version, body: Bytes, binary: bool) -> Result<Vec<Packet>, PayloadError> {
    match (version, binary) {
        (Version::V3, true) => decode_v3_binary(body),
        (Version::V3, false) => decode_v3_text(body),
        (Version::V4, _) => decode_v4(body),
    }
}

fn decode_v4(body: Bytes) -> Result<Vec<Packet>, PayloadError> {
    std::str::from_utf8(&body).map_err(|_| PayloadError::NotUtf8)?;
    let mut packets = Vec::new();
    let mut start = 0;
    for end in memchr_all(&body).chain(std::iter::once(body.len())) {
        let part = body.slice(start..end);
        start = end + 1;
        packets.push(decode_one_text(Version::V4, part)?);
    }
    Ok(packets)
}

fn memchr_all(body: &[u8]) -> impl Iterator<Item = usize> + '_ {
    body.iter()
        .enumerate()
        .filter(|(_, b)| **b == SEPARATOR)
        .map(|(i, _)| i)
}

/// One packet of a text payload: `b...` is base64 binary, anything else text.
fn decode_one_text(version: Version, part: Bytes) -> Result<Packet, PayloadError> {
    Ok(Packet::decode_text_frame(version, part)?)
}

fn decode_v3_text(body: Bytes) -> Result<Vec<Packet>, PayloadError> {
    let text = std::str::from_utf8(&body).map_err(|_| PayloadError::NotUtf8)?;
    let mut packets = Vec::new();
    let mut pos = 0;
    while pos < text.len() {
        let colon = text[pos..].find(':').ok_or(PayloadError::BadLength)? + pos;
        let digits = &text[pos..colon];
        if digits.is_empty()
            || digits.len() > MAX_LENGTH_DIGITS
            || !digits.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(PayloadError::BadLength);
        }
        let units: usize = digits.parse().map_err(|_| PayloadError::BadLength)?;
        let start = colon + 1;
        let end = start + utf16_prefix_len(&text[start..], units)?;
        // A zero-length packet is the v3 empty payload `0:`.
        if end > start {
            packets.push(decode_one_text(Version::V3, body.slice(start..end))?);
        }
        pos = end;
    }
    Ok(packets)
}

/// Byte length of the prefix of `text` that is `units` UTF-16 code units long.
fn utf16_prefix_len(text: &str, units: usize) -> Result<usize, PayloadError> {
    let mut counted = 0;
    for (index, ch) in text.char_indices() {
        if counted == units {
            return Ok(index);
        }
        counted += ch.len_utf16();
        if counted > units {
            // The length ends inside a surrogate pair.
            return Err(PayloadError::BadLength);
        }
    }
    if counted == units {
        Ok(text.len())
    } else {
        Err(PayloadError::Truncated)
    }
}

/// UTF-16 length of a string, as JavaScript counts it.
pub fn utf16_len(text: &str) -> usize {
    text.chars().map(char::len_utf16).sum()
}

fn decode_v3_binary(body: Bytes) -> Result<Vec<Packet>, PayloadError> {
    let mut packets = Vec::new();
    let mut pos = 0;
    while pos < body.len() {
        let kind = body[pos];
        if kind > 1 {
            return Err(PayloadError::BadLength);
        }
        pos += 1;
        let mut len: usize = 0;
        let mut digits = 0;
        loop {
            let Some(&b) = body.get(pos) else {
                return Err(PayloadError::Truncated);
            };
            pos += 1;
            if b == 0xff {
                break;
            }
            if b > 9 || digits == MAX_LENGTH_DIGITS {
                return Err(PayloadError::BadLength);
            }
            len = len * 10 + usize::from(b);
            digits += 1;
        }
        if digits == 0 {
            return Err(PayloadError::BadLength);
        }
        let end = pos.checked_add(len).ok_or(PayloadError::BadLength)?;
        if end > body.len() {
            return Err(PayloadError::Truncated);
        }
        let data = body.slice(pos..end);
        pos = end;
        packets.push(if kind == 0 {
            std::str::from_utf8(&data).map_err(|_| PayloadError::NotUtf8)?;
            Packet::decode_text(data)?
        } else {
            Packet::decode_binary(Version::V3, data)?
        });
    }
    Ok(packets)
}

/// How a GET response body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    V4,
    /// v3 length-prefixed text; binary as base64.
    V3Text,
    /// v3 binary payload (clients without `b64=1`).
    V3Binary,
}

impl Encoding {
    /// Chooses the framing for a response. v3 clients that did not ask for
    /// `b64=1` (XHR2 browsers, socket.io-client 1.x's browser build) get the
    /// binary format for every answer, as socket.io 1.x's server sent it:
    /// that client fails on a text answer; 2.x clients read either.
    pub fn choose(version: Version, client_accepts_binary: bool) -> Encoding {
        match version {
            Version::V4 => Encoding::V4,
            Version::V3 if client_accepts_binary => Encoding::V3Binary,
            Version::V3 => Encoding::V3Text,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Encoding::V3Binary => "application/octet-stream",
            _ => "text/plain; charset=UTF-8",
        }
    }
}

/// Encodes wire frames (text frames are whole packets, binary frames message
/// data) into one response body.
pub fn encode(encoding: Encoding, frames: &[Frame]) -> Bytes {
    let b64 = &base64::engine::general_purpose::STANDARD;
    let mut out = BytesMut::with_capacity(frames.iter().map(|f| f.len() + 8).sum());
    for (i, frame) in frames.iter().enumerate() {
        match (encoding, frame) {
            (Encoding::V4, Frame::Text(text)) => {
                if i > 0 {
                    out.put_u8(SEPARATOR);
                }
                out.put_slice(text);
            }
            (Encoding::V4, Frame::Binary(data)) => {
                if i > 0 {
                    out.put_u8(SEPARATOR);
                }
                out.put_u8(b'b');
                out.put_slice(b64.encode(data).as_bytes());
            }
            (Encoding::V3Text, Frame::Text(text)) => {
                // Text frames are valid UTF-8 by construction; the fallback
                // only keeps a broken frame from panicking.
                let units = std::str::from_utf8(text).map_or(text.len(), utf16_len);
                out.put_slice(units.to_string().as_bytes());
                out.put_u8(b':');
                out.put_slice(text);
            }
            (Encoding::V3Text, Frame::Binary(data)) => {
                let encoded = b64.encode(data);
                out.put_slice((encoded.len() + 2).to_string().as_bytes());
                out.put_slice(b":b4");
                out.put_slice(encoded.as_bytes());
            }
            (Encoding::V3Binary, Frame::Text(text)) => {
                put_binary_header(&mut out, 0, text.len());
                out.put_slice(text);
            }
            (Encoding::V3Binary, Frame::Binary(data)) => {
                put_binary_header(&mut out, 1, data.len() + 1);
                out.put_u8(MESSAGE - b'0');
                out.put_slice(data);
            }
        }
    }
    if encoding == Encoding::V3Text && frames.is_empty() {
        out.put_slice(b"0:");
    }
    out.freeze()
}

fn put_binary_header(out: &mut BytesMut, kind: u8, len: usize) {
    out.put_u8(kind);
    for digit in len.to_string().bytes() {
        out.put_u8(digit - b'0');
    }
    out.put_u8(0xff);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn text(s: &str) -> Frame {
        Frame::Text(Bytes::from(s.to_owned()))
    }

    fn as_frames(packets: Vec<Packet>) -> Vec<Frame> {
        packets.iter().map(Packet::encode).collect()
    }

    #[test]
    fn v4_matches_the_spec_examples() {
        let frames = vec![
            text("4hello"),
            Frame::Binary(Bytes::from_static(&[1, 2, 3, 4])),
        ];
        let body = encode(Encoding::V4, &frames);
        assert_eq!(&body[..], b"4hello\x1ebAQIDBA==");
        let packets = decode(Version::V4, body, false).unwrap();
        assert_eq!(as_frames(packets), frames);
        assert_eq!(
            decode(Version::V4, Bytes::from_static(b"4a\x1e\x1e4b"), false),
            Err(PayloadError::Packet(PacketError::Empty))
        );
    }

    #[test]
    fn v3_text_counts_utf16_units() {
        // "€" is one UTF-16 unit (3 UTF-8 bytes); "😀" is two (4 bytes).
        let frames = vec![text("4€"), text("4😀x"), text("2")];
        let body = encode(Encoding::V3Text, &frames);
        assert_eq!(std::str::from_utf8(&body).unwrap(), "2:4€4:4😀x1:2");
        assert_eq!(as_frames(decode(Version::V3, body, false).unwrap()), frames);
        // A length that splits a surrogate pair, and one past the end.
        assert!(decode(Version::V3, Bytes::from("2:4😀"), false).is_err());
        assert_eq!(
            decode(Version::V3, Bytes::from("9:4ab"), false),
            Err(PayloadError::Truncated)
        );
        assert_eq!(encode(Encoding::V3Text, &[]), Bytes::from_static(b"0:"));
        assert_eq!(
            decode(Version::V3, Bytes::from_static(b"0:"), false),
            Ok(vec![])
        );
    }

    #[test]
    fn v3_text_binary_is_b4_base64() {
        let frames = vec![Frame::Binary(Bytes::from_static(&[1, 2, 3]))];
        let body = encode(Encoding::V3Text, &frames);
        assert_eq!(&body[..], b"6:b4AQID");
        assert_eq!(as_frames(decode(Version::V3, body, false).unwrap()), frames);
    }

    #[test]
    fn v3_binary_payload() {
        let frames = vec![text("4hé"), Frame::Binary(Bytes::from_static(&[9, 8]))];
        assert_eq!(Encoding::choose(Version::V3, true), Encoding::V3Binary);
        assert_eq!(Encoding::choose(Version::V3, false), Encoding::V3Text);
        let body = encode(Encoding::V3Binary, &frames);
        assert_eq!(
            &body[..],
            &[0, 4, 0xff, b'4', b'h', 0xc3, 0xa9, 1, 3, 0xff, 4, 9, 8][..]
        );
        assert_eq!(as_frames(decode(Version::V3, body, true).unwrap()), frames);
        assert_eq!(
            decode(Version::V3, Bytes::from_static(&[0, 5, 0xff, b'4']), true),
            Err(PayloadError::Truncated)
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bodies_never_panic(data in proptest::collection::vec(any::<u8>(), 0..128)) {
            let body = Bytes::from(data);
            let _ = decode(Version::V3, body.clone(), true);
            let _ = decode(Version::V3, body.clone(), false);
            let _ = decode(Version::V4, body, false);
        }

        #[test]
        fn arbitrary_length_prefixed_text_never_panics(s in "[0-9:b4€😀a]{0,40}") {
            let _ = decode(Version::V3, Bytes::from(s), false);
        }

        #[test]
        fn frames_round_trip(
            items in proptest::collection::vec(
                prop_oneof![
                    "[^\u{1e}]*".prop_map(|s| text(&format!("4{s}"))),
                    proptest::collection::vec(any::<u8>(), 0..32)
                        .prop_map(|b| Frame::Binary(Bytes::from(b))),
                ],
                1..6,
            )
        ) {
            for (version, encoding) in [
                (Version::V4, Encoding::V4),
                (Version::V3, Encoding::V3Text),
                (Version::V3, Encoding::V3Binary),
            ] {
                let body = encode(encoding, &items);
                let decoded = decode(version, body, encoding == Encoding::V3Binary).unwrap();
                prop_assert_eq!(as_frames(decoded), items.clone());
            }
        }
    }
}
