//! What the broker's no-member check costs: `Hub::wants` for a room nobody is
//! in, with 10,000 other rooms joined (the check every flood message to such
//! a room pays before it is dropped), and for a room with a member.
//!
//! ```sh
//! cargo run --release --example discard-cost
//! ```

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use roomcast::hub::{Hub, Member, Outbox};
use roomcast::transports::ws;

const ROUNDS: u32 = 5_000_000;

fn main() {
    let hub = Hub::new();
    for n in 0..10_000 {
        let member = Member {
            client: hub.client_id(),
            outbox: Arc::new(Outbox::new(Default::default())),
            format: &ws::FORMAT,
        };
        hub.join(&format!("room-{n}"), member);
    }
    for (what, room) in [("no member", "noisy"), ("a member", "room-42")] {
        let start = Instant::now();
        let mut wanted = 0u32;
        for _ in 0..ROUNDS {
            wanted += u32::from(hub.wants(black_box(room)));
        }
        let ns = start.elapsed().as_nanos() as f64 / f64::from(ROUNDS);
        println!("Hub::wants, room with {what}: {ns:.0} ns per call ({wanted} wanted)");
    }
}
