//! Engine.IO packet decoders (text frames, v3 binary frames, base64
//! packets), v3 and v4: never a panic, and what decodes re-encodes to a
//! frame that decodes to the same packet.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use roomcast::hub::Frame;
use roomcast::transports::socketio::engine::Version;
use roomcast::transports::socketio::engine::packet::Packet;

fn round_trip(version: Version, packet: &Packet) {
    let again = match packet.encode() {
        Frame::Text(text) => Packet::decode_text(text),
        // Binary frames carry message data only (the v3 type byte is the
        // writer's), which a v4 binary frame is.
        Frame::Binary(data) => Packet::decode_binary(Version::V4, data),
    };
    assert_eq!(again.as_ref(), Ok(packet), "{version:?}");
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let version = if selector & 1 == 0 {
        Version::V3
    } else {
        Version::V4
    };
    let bytes = Bytes::copy_from_slice(rest);
    if std::str::from_utf8(rest).is_ok() {
        if let Ok(packet) = Packet::decode_text_frame(version, bytes.clone()) {
            round_trip(version, &packet);
        }
        if let Ok(packet) = Packet::decode_text(bytes.clone()) {
            round_trip(version, &packet);
        }
    }
    if let Ok(packet) = Packet::decode_binary(version, bytes) {
        round_trip(version, &packet);
    }
    if let Ok(packet) = Packet::decode_base64(version, rest) {
        round_trip(version, &packet);
    }
});
