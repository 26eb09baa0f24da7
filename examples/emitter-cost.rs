//! What Socket.IO emitter compatibility costs: the check every plain message
//! now pays (`Emitter::handle` on a channel that is not the emitter's), the
//! decoding of a typical `io.to(room).emit(...)`, and its whole delivery to a
//! room of 1,000 Socket.IO sockets beside a plain message's `Hub::deliver` to
//! the same room.
//!
//! ```sh
//! cargo run --release --example emitter-cost
//! ```

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use rmpv::Value;
use roomcast::emitter::{Emitter, decode};
use roomcast::hub::{Hub, Member, Outbox, OutboxLimits};
use roomcast::transports::socketio;

const MEMBERS: usize = 1_000;
const DELIVERIES: u32 = 2_000;

/// What `io.to("r").emit("price", {sym, bid, ask}, ts)` publishes.
fn emitted() -> Vec<u8> {
    let map = |entries: Vec<(&str, Value)>| {
        Value::Map(
            entries
                .into_iter()
                .map(|(k, v)| (Value::from(k), v))
                .collect(),
        )
    };
    let message = Value::Array(vec![
        Value::from("emitter"),
        map(vec![
            ("type", Value::from(2)),
            (
                "data",
                Value::Array(vec![
                    Value::from("price"),
                    map(vec![
                        ("sym", Value::from("ABC")),
                        ("bid", Value::F64(101.5)),
                        ("ask", Value::F64(101.7)),
                    ]),
                    Value::from(1_700_000_000_000u64),
                ]),
            ),
            ("nsp", Value::from("/")),
        ]),
        map(vec![
            ("rooms", Value::Array(vec![Value::from("r")])),
            ("flags", map(vec![])),
            ("except", Value::Array(vec![])),
        ]),
    ]);
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, &message).expect("writing to a Vec");
    out
}

fn per_call(start: Instant, calls: u32) -> f64 {
    start.elapsed().as_nanos() as f64 / f64::from(calls)
}

/// A hub whose room "r" has `MEMBERS` registered Socket.IO sockets.
fn hub() -> Arc<Hub> {
    let hub = Arc::new(Hub::new());
    let limits = OutboxLimits {
        max_frames: DELIVERIES as usize + 16,
        max_bytes: 1 << 30,
    };
    for _ in 0..MEMBERS {
        let member = Member {
            client: hub.client_id(),
            outbox: Arc::new(Outbox::new(limits)),
            format: &socketio::FORMAT,
        };
        hub.register(member.clone());
        hub.join("r", member);
    }
    hub
}

fn main() {
    let emitter = Emitter::new("socket.io", hub()).expect("a key");
    let message = emitted();

    let rounds = 5_000_000;
    let start = Instant::now();
    let mut taken = 0u32;
    for _ in 0..rounds {
        taken += u32::from(emitter.handle(black_box("device01"), black_box(b"21.5")));
    }
    println!(
        "plain message, emitter check: {:.1} ns per message ({taken} taken)",
        per_call(start, rounds)
    );

    let rounds = 200_000;
    let start = Instant::now();
    for _ in 0..rounds {
        black_box(decode::broadcast(black_box(&message)).is_ok());
    }
    println!(
        "decode io.to(room).emit(\"price\", {{sym, bid, ask}}, ts): {:.0} ns",
        per_call(start, rounds)
    );

    // Each on a fresh hub (empty queues), plain first then the event, twice.
    let payload = Bytes::from_static(br#"{"sym":"ABC","bid":101.5,"ask":101.7}"#);
    for _ in 0..2 {
        let plain = hub();
        let start = Instant::now();
        for _ in 0..DELIVERIES {
            plain.deliver("r", payload.clone());
        }
        let plain_ns = per_call(start, DELIVERIES);
        let emitter = Emitter::new("socket.io", hub()).expect("a key");
        let start = Instant::now();
        for _ in 0..DELIVERIES {
            emitter.handle("socket.io#/#r#", &message);
        }
        let event_ns = per_call(start, DELIVERIES);
        println!(
            "to {MEMBERS} sockets: plain message {:.1} µs, emitter event {:.1} µs per message",
            plain_ns / 1e3,
            event_ns / 1e3
        );
    }
}
