//! Why the Redis subscriber has its own parser: the cost of parsing one
//! `pmessage` (32-byte payload) with the redis crate's `ValueCodec` (what its
//! pub/sub connection runs, into owned values) against roomcast's in-place
//! `brokers::redis::resp::parse`, both fed 1,000,000 messages in 64 KiB reads.
//!
//! ```sh
//! cargo run --release --example subscriber-parse-cost
//! ```

// The parser is private to the broker; this measures the very file.
#[path = "../src/brokers/redis/resp.rs"]
#[allow(dead_code)]
mod resp;

use std::hint::black_box;
use std::time::Instant;

use tokio_util::codec::Decoder;

const MESSAGES: usize = 1_000_000;
const READ: usize = 64 * 1024;

fn main() {
    let one: &[u8] =
        b"*4\r\n$8\r\npmessage\r\n$1\r\n*\r\n$5\r\nnoisy\r\n$32\r\nxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\r\n";
    let wire: Vec<u8> = one
        .iter()
        .copied()
        .cycle()
        .take(one.len() * MESSAGES)
        .collect();
    for _ in 0..3 {
        let start = Instant::now();
        let mut buffer = bytes::BytesMut::with_capacity(2 * READ);
        let mut codec = redis::ValueCodec::default();
        let mut parsed = 0;
        for read in wire.chunks(READ) {
            buffer.extend_from_slice(read);
            while let Ok(Some(value)) = codec.decode(&mut buffer) {
                black_box(value);
                parsed += 1;
            }
        }
        let theirs = start.elapsed().as_nanos() as f64 / parsed as f64;

        let start = Instant::now();
        let (mut at, mut parsed) = (0, 0);
        while let Ok(Some((reply, used))) = resp::parse(&wire[at..]) {
            black_box(reply);
            at += used;
            parsed += 1;
        }
        let ours = start.elapsed().as_nanos() as f64 / parsed as f64;
        println!("per pmessage: redis::ValueCodec {theirs:.0} ns, resp::parse {ours:.0} ns");
    }
}
