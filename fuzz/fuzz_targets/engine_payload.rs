//! Engine.IO polling payloads (v4 `\x1e`-separated, v3 length-prefixed
//! text, v3 binary): never a panic, and decoded packets encoded back as the
//! server frames them decode to the same packets.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use roomcast::hub::Frame;
use roomcast::transports::socketio::engine::Version;
use roomcast::transports::socketio::engine::payload::{self, Encoding};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let (version, binary) = match selector % 3 {
        0 => (Version::V4, false),
        1 => (Version::V3, false),
        _ => (Version::V3, true),
    };
    let Ok(packets) = payload::decode(version, Bytes::copy_from_slice(body), binary) else {
        return;
    };
    let frames: Vec<Frame> = packets.iter().map(|p| p.encode()).collect();
    // A control packet whose data came from base64 may not be text: the
    // server never sends one, so there is nothing to compare.
    let text_ok =
        |f: &Frame| matches!(f, Frame::Binary(_)) || std::str::from_utf8(f.bytes()).is_ok();
    if packets.is_empty() || !frames.iter().all(text_ok) {
        return;
    }
    let encoding = Encoding::choose(version, binary);
    let encoded = payload::encode(encoding, &frames);
    let again = payload::decode(version, encoded, binary);
    assert_eq!(again.as_ref(), Ok(&packets), "{encoding:?}");
});
