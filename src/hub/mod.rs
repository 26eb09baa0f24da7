//! The hub: owns room membership and fans each published message out to the
//! members' outboxes.
//!
//! - Brokers call [`Hub::deliver`] for every message they receive; the hub
//!   never imports a broker.
//! - Transports call [`Hub::join`] / [`Hub::leave`] with a [`Member`] (their
//!   client's outbox plus its wire [`Format`]) and drain the outbox themselves.
//! - A message is encoded at most once per format, and every member of that
//!   format gets the same shared `Bytes`.
//! - The hub never awaits and never holds a room lock while pushing: fan-out
//!   iterates a copy-on-write snapshot of the member list.

mod outbox;
mod rooms;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::telemetry;

pub use outbox::{Frame, Outbox, OutboxLimits, PushError};
use rooms::Rooms;
pub use rooms::{RoomError, RoomInfo, validate_room_name};

/// Identifies one client connection across all transports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(pub u64);

/// A published message as the hub fans it out.
#[derive(Debug, Clone)]
pub struct Message {
    pub room: Arc<str>,
    /// The payload exactly as published.
    pub payload: Bytes,
    /// Node-local, strictly increasing id.
    pub id: u64,
    /// Milliseconds since the Unix epoch when this node received it.
    pub ts: u64,
}

/// What a format encodes: a published message, or the seed's `hello` to the
/// other members when someone joins.
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    Message(&'a Message),
    Joined { room: &'a str },
}

/// Number of distinct wire formats the hub can encode a message into.
pub const MAX_FORMATS: usize = 4;

/// A wire format: transports declare one `static` each. `encode` returns
/// `None` for events the format does not carry (e.g. `hello` on SSE).
pub struct Format {
    /// Unique index below [`MAX_FORMATS`]; see `transports::FORMAT_IDS`.
    pub id: usize,
    pub name: &'static str,
    pub encode: fn(&Event<'_>) -> Option<Frame>,
}

impl std::fmt::Debug for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

/// One client in one room.
#[derive(Debug, Clone)]
pub struct Member {
    pub client: ClientId,
    pub outbox: Arc<Outbox>,
    pub format: &'static Format,
}

/// What a fan-out did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FanOut {
    /// Frames queued.
    pub delivered: usize,
    /// Members whose outbox overflowed and who are now disconnecting.
    pub slow_consumers: usize,
}

/// The hub. Share it as `Arc<Hub>`.
#[derive(Debug, Default)]
pub struct Hub {
    rooms: Rooms,
    next_client: AtomicU64,
    next_message: AtomicU64,
}

impl Hub {
    pub fn new() -> Self {
        Self::default()
    }

    /// A fresh id for a new connection.
    pub fn client_id(&self) -> ClientId {
        ClientId(self.next_client.fetch_add(1, Ordering::Relaxed) + 1)
    }

    /// Adds `member` to `room`. Returns false if it was already a member.
    /// The other members get the `Joined` event (the seed's `hello`).
    pub fn join(&self, room: &str, member: Member) -> bool {
        let Some(others) = self.rooms.insert(room, member) else {
            return false;
        };
        fan_out(&others, &Event::Joined { room });
        true
    }

    /// Removes `client` from `room`. Returns false if it was not a member.
    pub fn leave(&self, room: &str, client: ClientId) -> bool {
        self.rooms.remove(room, client)
    }

    /// Delivers a published message to every member of room `channel`.
    pub fn deliver(&self, channel: &str, payload: Bytes) -> FanOut {
        let Some(members) = self.rooms.members(channel) else {
            return FanOut::default();
        };
        let message = Message {
            room: Arc::from(channel),
            payload,
            id: self.next_message.fetch_add(1, Ordering::Relaxed) + 1,
            ts: now_millis(),
        };
        fan_out(&members, &Event::Message(&message))
    }

    /// Number of members of `room` (0 if it does not exist).
    pub fn room_size(&self, room: &str) -> usize {
        self.rooms.members(room).map_or(0, |m| m.len())
    }

    /// Every room with at least one member, sorted by name.
    pub fn rooms(&self) -> Vec<RoomInfo> {
        self.rooms.list()
    }
}

/// Encodes `event` at most once per format and queues the shared frame to
/// every member.
fn fan_out(members: &[Member], event: &Event<'_>) -> FanOut {
    let started = std::time::Instant::now();
    let mut encoded: [Option<Option<Frame>>; MAX_FORMATS] = Default::default();
    let mut per_format = [(0usize, ""); MAX_FORMATS];
    let mut result = FanOut::default();
    for member in members {
        let format = member.format;
        let slot = &mut encoded[format.id];
        let Some(frame) = slot.get_or_insert_with(|| (format.encode)(event)) else {
            continue;
        };
        match member.outbox.push(frame.clone()) {
            Ok(()) => {
                result.delivered += 1;
                per_format[format.id] = (per_format[format.id].0 + 1, format.name);
            }
            Err(PushError::Full) => result.slow_consumers += 1,
            // Already closed: its connection task is on its way out.
            Err(PushError::Closed(_)) => {}
        }
    }
    for (count, name) in per_format {
        if count > 0 {
            telemetry::deliveries(name, count);
        }
    }
    if let Event::Message(_) = event {
        telemetry::fanout_duration(started.elapsed().as_secs_f64());
    }
    result
}

fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disconnect::DisconnectReason;

    fn encode_a(event: &Event<'_>) -> Option<Frame> {
        match event {
            Event::Message(m) => Some(Frame::Text(Bytes::from(format!("a:{}", m.id)))),
            Event::Joined { room } => Some(Frame::Text(Bytes::from(format!("hello:{room}")))),
        }
    }
    fn encode_b(event: &Event<'_>) -> Option<Frame> {
        match event {
            Event::Message(m) => Some(Frame::Text(m.payload.clone())),
            Event::Joined { .. } => None,
        }
    }
    static A: Format = Format {
        id: 0,
        name: "a",
        encode: encode_a,
    };
    static B: Format = Format {
        id: 1,
        name: "b",
        encode: encode_b,
    };

    fn member(hub: &Hub, format: &'static Format, limits: OutboxLimits) -> Member {
        Member {
            client: hub.client_id(),
            outbox: Arc::new(Outbox::new(limits)),
            format,
        }
    }

    fn payload(frame: Option<Frame>) -> Bytes {
        match frame {
            Some(Frame::Text(b)) => b,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }

    #[test]
    fn members_of_one_format_share_one_buffer() {
        let hub = Hub::new();
        let (x, y) = (
            member(&hub, &B, Default::default()),
            member(&hub, &B, Default::default()),
        );
        hub.join("r", x.clone());
        hub.join("r", y.clone());
        let out = hub.deliver("r", Bytes::from_static(b"payload"));
        assert_eq!(
            out,
            FanOut {
                delivered: 2,
                slow_consumers: 0
            }
        );
        let (fx, fy) = (payload(x.outbox.pop()), payload(y.outbox.pop()));
        assert_eq!(fx, "payload");
        assert_eq!(fx.as_ptr(), fy.as_ptr(), "one encoding, shared");
    }

    #[test]
    fn join_says_hello_to_the_others_only() {
        let hub = Hub::new();
        let (x, y, z) = (
            member(&hub, &A, Default::default()),
            member(&hub, &A, Default::default()),
            member(&hub, &B, Default::default()),
        );
        assert!(hub.join("r", z.clone()));
        assert!(hub.join("r", x.clone()));
        assert!(!hub.join("r", x.clone()), "joining twice is a no-op");
        assert!(hub.join("r", y.clone()));
        assert_eq!(payload(x.outbox.pop()), "hello:r");
        assert_eq!(
            x.outbox.pop(),
            None,
            "one hello for y; none for x's re-join"
        );
        assert_eq!(y.outbox.pop(), None, "the joiner gets no hello");
        assert_eq!(z.outbox.pop(), None, "format b does not carry hello");
    }

    #[test]
    fn no_leakage_between_rooms_and_leave_stops_delivery() {
        let hub = Hub::new();
        let x = member(&hub, &B, Default::default());
        hub.join("r1", x.clone());
        assert_eq!(hub.deliver("r2", Bytes::from_static(b"other")).delivered, 0);
        assert!(hub.leave("r1", x.client));
        assert!(!hub.leave("r1", x.client));
        assert_eq!(hub.deliver("r1", Bytes::from_static(b"late")).delivered, 0);
        assert_eq!(x.outbox.pop(), None);
        assert!(hub.rooms().is_empty(), "an empty room is removed");
    }

    #[test]
    fn a_slow_consumer_is_closed_and_others_keep_receiving() {
        let hub = Hub::new();
        let slow = member(
            &hub,
            &B,
            OutboxLimits {
                max_frames: 2,
                max_bytes: 1 << 20,
            },
        );
        let fast = member(&hub, &B, OutboxLimits::default());
        hub.join("r", slow.clone());
        hub.join("r", fast.clone());
        let mut slow_seen = 0;
        for i in 0..5u8 {
            slow_seen += hub.deliver("r", Bytes::from(vec![b'0' + i])).slow_consumers;
            assert_eq!(payload(fast.outbox.pop()), Bytes::from(vec![b'0' + i]));
        }
        assert_eq!(slow_seen, 1, "counted once, when it overflowed");
        assert_eq!(slow.outbox.closed(), Some(DisconnectReason::SlowConsumer));
    }

    #[test]
    fn message_ids_increase() {
        let hub = Hub::new();
        let x = member(&hub, &A, Default::default());
        hub.join("r", x.clone());
        hub.deliver("r", Bytes::new());
        hub.deliver("r", Bytes::new());
        assert_eq!(payload(x.outbox.pop()), "a:1");
        assert_eq!(payload(x.outbox.pop()), "a:2");
        assert_eq!(
            hub.rooms(),
            vec![RoomInfo {
                name: "r".into(),
                members: 1
            }]
        );
    }
}
