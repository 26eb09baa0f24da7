//! The Socket.IO packet decoder (`protocol::Packet::decode`): never a
//! panic, and what decodes re-encodes to text that decodes to the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use roomcast::transports::socketio::protocol::Packet;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(packet) = Packet::decode(text) else {
        return;
    };
    let encoded = packet.encode();
    assert_eq!(
        Packet::decode(&encoded),
        Ok(packet.clone()),
        "{text:?} -> {encoded:?}"
    );
    assert!(packet.to_frame().bytes().starts_with(b"4"));
});
