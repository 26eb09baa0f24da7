//! Events an application emits to rooms by name (the Socket.IO Redis
//! emitter's `io.to(room).emit(event, ...args)`), and its server-side
//! requests (`socketsJoin`, `socketsLeave`, `disconnectSockets`).
//!
//! Owns: [`AppEvent`] and [`Target`]; the registry of clients that take
//! room-less broadcasts (a transport registers the clients it wants reached
//! by "everyone": Socket.IO's sockets of `/`); the rooms joined on a
//! registered client's behalf, left again when it unregisters.
//!
//! Never: parses or writes a wire format (the `emitter` module decodes, each
//! `Format` encodes); encodes per member (one frame per format, as for
//! published messages); holds a shard lock while pushing.
//!
//! Called by `emitter` (emit and requests) and by the Socket.IO layer
//! (register, unregister).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;

use super::{ClientId, Event, FanOut, Hub, Member, fan_out, now_millis};

const SHARDS: usize = 32;

/// An event for rooms: a name and arguments, shared by every recipient.
#[derive(Debug, Clone)]
pub struct AppEvent {
    pub name: Box<str>,
    /// The arguments as one JSON array. A binary argument (at any depth) is
    /// the object `{"_placeholder":true,"num":N}` standing for `binary[N]`.
    pub args: Bytes,
    pub binary: Vec<Bytes>,
    /// The rooms it was sent to; empty when sent to everyone.
    pub rooms: Arc<[Arc<str>]>,
    /// From the same clock as published messages' ids.
    pub id: u64,
    pub ts: u64,
}

/// Who an event or request is for: the members of `rooms` (everyone
/// registered when empty), minus the members of `except`. A client in
/// several target rooms counts once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Target {
    pub rooms: Vec<Arc<str>>,
    pub except: Vec<Arc<str>>,
}

/// Registered clients, sharded by id.
#[derive(Debug)]
pub(super) struct Registry {
    shards: Box<[Mutex<Shard>]>,
}

#[derive(Debug, Default)]
struct Shard {
    /// Every registered client: one entry per Socket.IO connection, so
    /// nothing rarely used lives in it.
    members: HashMap<ClientId, Member>,
    /// Rooms joined by a request rather than by the client itself, for the
    /// few clients that have some; the transport does not know them, so
    /// unregistering leaves them.
    joined: HashMap<ClientId, Vec<Arc<str>>>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }
}

impl Registry {
    fn shard(&self, client: ClientId) -> MutexGuard<'_, Shard> {
        lock(&self.shards[client.0 as usize % SHARDS])
    }

    fn is_registered(&self, client: ClientId) -> bool {
        self.shard(client).members.contains_key(&client)
    }

    fn snapshot(&self) -> Vec<Member> {
        self.shards
            .iter()
            .flat_map(|shard| lock(shard).members.values().cloned().collect::<Vec<_>>())
            .collect()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every update is a single insert/remove/push; a poisoned shard is consistent.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Hub {
    /// Makes `member` one of "everyone" for room-less events and requests.
    pub fn register(&self, member: Member) {
        self.registry
            .shard(member.client)
            .members
            .insert(member.client, member);
    }

    /// Forgets `client` and leaves the rooms requests made it join.
    pub fn unregister(&self, client: ClientId) {
        let joined = {
            let mut shard = self.registry.shard(client);
            shard.members.remove(&client);
            shard.joined.remove(&client)
        };
        for room in joined.unwrap_or_default() {
            self.leave(&room, client);
        }
    }

    /// Sends an event to `target`; returns what the fan-out did.
    pub fn emit(&self, target: &Target, name: &str, args: Bytes, binary: Vec<Bytes>) -> FanOut {
        // The common case, one room and no except: the room's shared
        // snapshot, as `deliver` uses it (no copy of the member list).
        let (shared, picked);
        let members: &[Member] = match (target.rooms.as_slice(), target.except.is_empty()) {
            ([room], true) => {
                shared = self.rooms.members(room).unwrap_or_default();
                &shared
            }
            _ => {
                picked = self.targeted(target);
                &picked
            }
        };
        if members.is_empty() {
            return FanOut::default();
        }
        let event = AppEvent {
            name: name.into(),
            args,
            binary,
            rooms: target.rooms.iter().cloned().collect(),
            id: self.message_id(),
            ts: now_millis(),
        };
        fan_out(members, &Event::App(&event))
    }

    /// Makes the registered clients of `target` join `rooms`; returns how
    /// many clients were targeted.
    pub fn remote_join(&self, target: &Target, rooms: &[Arc<str>]) -> usize {
        let members = self.registered(target);
        for member in &members {
            for room in rooms {
                if self.join(room, member.clone()) {
                    let mut shard = self.registry.shard(member.client);
                    if shard.members.contains_key(&member.client) {
                        let joined = shard.joined.entry(member.client).or_default();
                        joined.push(room.clone());
                    } else {
                        // Unregistered meanwhile: its transport will not
                        // leave this room, so undo the join.
                        drop(shard);
                        self.leave(room, member.client);
                    }
                }
            }
        }
        members.len()
    }

    /// Makes the registered clients of `target` leave `rooms`.
    pub fn remote_leave(&self, target: &Target, rooms: &[Arc<str>]) -> usize {
        let members = self.registered(target);
        for member in &members {
            for room in rooms {
                self.leave(room, member.client);
            }
            let mut shard = self.registry.shard(member.client);
            if let Some(joined) = shard.joined.get_mut(&member.client) {
                joined.retain(|r| !rooms.contains(r));
                if joined.is_empty() {
                    shard.joined.remove(&member.client);
                }
            }
        }
        members.len()
    }

    /// Asks the registered clients of `target` to disconnect: each gets its
    /// format's encoding of [`Event::Disconnect`] (its client then closes
    /// the connection, and the transport cleans up as for any close).
    pub fn remote_disconnect(&self, target: &Target) -> usize {
        let members = self.registered(target);
        fan_out(&members, &Event::Disconnect).delivered
    }

    /// The members `target` designates, each once.
    fn targeted(&self, target: &Target) -> Vec<Member> {
        let excluded: HashSet<ClientId> = target
            .except
            .iter()
            .filter_map(|room| self.rooms.members(room))
            .flat_map(|members| members.iter().map(|m| m.client).collect::<Vec<_>>())
            .collect();
        let candidates: Vec<Member> = if target.rooms.is_empty() {
            self.registry.snapshot()
        } else if let [room] = target.rooms.as_slice() {
            self.rooms
                .members(room)
                .map(|members| members.to_vec())
                .unwrap_or_default()
        } else {
            let mut seen = HashSet::new();
            target
                .rooms
                .iter()
                .filter_map(|room| self.rooms.members(room))
                .flat_map(|members| members.to_vec())
                .filter(|m| seen.insert(m.client))
                .collect()
        };
        if excluded.is_empty() {
            return candidates;
        }
        candidates
            .into_iter()
            .filter(|m| !excluded.contains(&m.client))
            .collect()
    }

    /// Like `targeted`, restricted to registered clients (requests act on
    /// sockets, not on `/ws` or `/sse` subscribers).
    fn registered(&self, target: &Target) -> Vec<Member> {
        let mut members = self.targeted(target);
        if !target.rooms.is_empty() {
            members.retain(|m| self.registry.is_registered(m.client));
        }
        members
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Format, Frame, Outbox, OutboxLimits};
    use super::*;

    /// `name|args|attachments`, `bye` for a disconnect.
    fn encode(event: &Event<'_>) -> Option<Frame> {
        let text = match event {
            Event::App(e) => format!(
                "{}|{}|{}",
                e.name,
                String::from_utf8_lossy(&e.args),
                e.binary.len()
            ),
            Event::Disconnect => "bye".into(),
            _ => return None,
        };
        Some(Frame::Text(Bytes::from(text)))
    }
    static SOCKETS: Format = Format {
        id: 0,
        name: "sockets",
        encode,
        separate_attachments: true,
    };
    /// Like a `/ws` subscriber: in rooms, never registered.
    static SUBSCRIBERS: Format = Format {
        id: 1,
        name: "subscribers",
        encode,
        separate_attachments: false,
    };

    fn member(hub: &Hub, format: &'static Format) -> Member {
        Member {
            client: hub.client_id(),
            outbox: Arc::new(Outbox::new(OutboxLimits::default())),
            format,
        }
    }

    fn socket(hub: &Hub, rooms: &[&str]) -> Member {
        let m = member(hub, &SOCKETS);
        hub.register(m.clone());
        for room in rooms {
            hub.join(room, m.clone());
        }
        m
    }

    fn drain(member: &Member) -> Vec<String> {
        std::iter::from_fn(|| member.outbox.pop())
            .map(|f| String::from_utf8_lossy(f.bytes()).into_owned())
            .collect()
    }

    fn target(rooms: &[&str], except: &[&str]) -> Target {
        Target {
            rooms: rooms.iter().map(|r| Arc::from(*r)).collect(),
            except: except.iter().map(|r| Arc::from(*r)).collect(),
        }
    }

    fn emit(hub: &Hub, target: &Target) -> FanOut {
        hub.emit(target, "ev", Bytes::from_static(b"[1]"), Vec::new())
    }

    #[test]
    fn rooms_union_once_minus_except() {
        let hub = Hub::new();
        let (a, ab, c) = (
            socket(&hub, &["a"]),
            socket(&hub, &["a", "b"]),
            socket(&hub, &["c"]),
        );
        let subscriber = member(&hub, &SUBSCRIBERS);
        hub.join("b", subscriber.clone());
        for m in [&a, &ab, &c] {
            drain(m);
        }
        assert_eq!(emit(&hub, &target(&["a", "b"], &[])).delivered, 3);
        assert_eq!(drain(&a), ["ev|[1]|0"]);
        assert_eq!(drain(&ab), ["ev|[1]|0"], "in two target rooms, once");
        assert_eq!(drain(&subscriber), ["ev|[1]|0"]);
        assert!(drain(&c).is_empty());
        emit(&hub, &target(&["a"], &["b"]));
        assert_eq!(drain(&a), ["ev|[1]|0"]);
        assert!(drain(&ab).is_empty(), "excepted through room b");
    }

    #[test]
    fn everyone_means_registered_clients_and_binary_follows() {
        let hub = Hub::new();
        let (x, y) = (socket(&hub, &[]), socket(&hub, &["quiet"]));
        let subscriber = member(&hub, &SUBSCRIBERS);
        hub.join("r", subscriber.clone());
        let binary = vec![Bytes::from_static(b"\x01\x02")];
        let out = hub.emit(
            &target(&[], &["quiet"]),
            "all",
            Bytes::from_static(br#"[{"_placeholder":true,"num":0}]"#),
            binary,
        );
        assert_eq!(out.delivered, 1);
        assert_eq!(
            drain(&x),
            [r#"all|[{"_placeholder":true,"num":0}]|1"#, "\u{1}\u{2}"]
        );
        assert!(drain(&y).is_empty());
        assert!(
            drain(&subscriber).is_empty(),
            "not registered: not everyone"
        );
        hub.unregister(x.client);
        assert_eq!(emit(&hub, &target(&[], &[])).delivered, 1);
    }

    #[test]
    fn requests_join_leave_and_disconnect_registered_clients() {
        let hub = Hub::new();
        let (x, y) = (socket(&hub, &["a"]), socket(&hub, &["b"]));
        let subscriber = member(&hub, &SUBSCRIBERS);
        hub.join("a", subscriber.clone());
        let news: [Arc<str>; 1] = [Arc::from("news")];
        assert_eq!(hub.remote_join(&target(&["a"], &[]), &news), 1);
        assert_eq!(hub.room_size("news"), 1, "the subscriber is not a socket");
        assert_eq!(hub.remote_join(&target(&[], &["a"]), &news), 1);
        assert_eq!(hub.room_size("news"), 2);
        assert_eq!(hub.remote_leave(&target(&["b"], &[]), &news), 1);
        assert_eq!(hub.room_size("news"), 1);
        hub.unregister(x.client);
        assert_eq!(hub.room_size("news"), 0, "joined rooms are left");
        assert_eq!(hub.room_size("a"), 2, "its own rooms are its transport's");
        drain(&y);
        assert_eq!(hub.remote_disconnect(&target(&[], &[])), 1);
        assert_eq!(drain(&y), ["bye"]);
    }
}
