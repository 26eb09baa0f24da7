//! The Socket.IO Redis emitter decoders (`emitter::decode::{broadcast,
//! request}`): never a panic on any bytes from Redis, and a decoded broadcast
//! keeps every argument (a JSON array as long as the event's arguments) and
//! takes attachments only from binary values.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rmpv::Value;
use roomcast::emitter::decode;

fuzz_target!(|data: &[u8]| {
    let _ = decode::request(data);
    let Ok(broadcast) = decode::broadcast(data) else {
        return;
    };
    let args: serde_json::Value =
        serde_json::from_slice(&broadcast.args).expect("the arguments are JSON");
    let args = args.as_array().expect("the arguments are a JSON array");
    // What decoded as a broadcast is [uid, {data: [name, ...args], ..}, opts].
    let message = rmpv::decode::read_value(&mut &data[..]).expect("it decoded once");
    let event = message[1]
        .as_map()
        .and_then(|packet| packet.iter().find(|(k, _)| k.as_str() == Some("data")))
        .and_then(|(_, data)| data.as_array())
        .expect("a broadcast has data");
    assert_eq!(args.len(), event.len() - 1, "arguments of {data:?}");
    // At most one attachment per binary value: a repeated map key keeps only
    // its last value, as in JavaScript.
    let binaries: usize = event[1..].iter().map(count_binary).sum();
    assert!(broadcast.binary.len() <= binaries, "attachments of {data:?}");
});

fn count_binary(value: &Value) -> usize {
    match value {
        Value::Binary(_) => 1,
        Value::Array(items) => items.iter().map(count_binary).sum(),
        Value::Map(pairs) => pairs.iter().map(|(_, v)| count_binary(v)).sum(),
        _ => 0,
    }
}
