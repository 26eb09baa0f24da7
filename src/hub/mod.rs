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
//! - A room's first member and its last leaving are told to the broker side
//!   through [`RoomInterest`] (`interest.rs`); a join's [`Ready`] says when
//!   the broker confirmed the room's subscription.
//! - Events an application emits to rooms (the Socket.IO emitter) and its
//!   requests go through `emit.rs`.
//! - Cached rooms (`cache = "last"` rules) keep their newest message for
//!   clients that join later (`latest.rs`).

mod emit;
mod history;
mod id;
mod interest;
mod latest;
mod outbox;
mod resume;
mod rooms;
#[cfg(test)]
pub(crate) mod testing;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::telemetry;

use emit::Registry;
pub use emit::{AppEvent, Target};
use history::History;
pub use id::{LogId, LogPosition, Since, WireId, parse_base36};
pub use interest::{Ready, RoomInterest};
pub use latest::CachePolicy;
use latest::Latest;
pub use outbox::{Frame, Outbox, OutboxLimits, PushError, StallLimit};
pub use resume::{Held, LogEntry, LogFuture, LogRead, RoomLog};
use rooms::Rooms;
pub use rooms::{
    RoomChars, RoomError, RoomInfo, RoomNamePolicy, validate_room_name, validate_room_name_with,
};

/// Identifies one client connection across all transports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(pub u64);

/// A published message as the hub fans it out.
#[derive(Debug, Clone)]
pub struct Message {
    pub room: Arc<str>,
    /// The payload exactly as published.
    pub payload: Bytes,
    /// Node-local, strictly increasing id; a logged message's id in its log.
    pub id: u64,
    /// Milliseconds since the Unix epoch when this node received it.
    pub ts: u64,
    /// Where a logged message sits in its room's log; `None` for a plain one.
    pub log: Option<LogPosition>,
}

impl Message {
    /// The id as every transport writes it: `<n>`, or `<epoch>:<n>`.
    pub fn wire_id(&self) -> WireId {
        WireId {
            n: self.id,
            epoch: self.log.map(|log| log.epoch),
        }
    }
}

/// What a format encodes: a published message, the seed's `hello` to the
/// other members when someone joins, an application's event, or its request
/// that a client disconnect.
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    Message(&'a Message),
    Joined {
        room: &'a str,
    },
    App(&'a AppEvent),
    Disconnect,
    /// A resuming client's gap in `room` cannot be filled: it should reload
    /// the room's state (docs/RECOVERY.md).
    Reset {
        room: &'a str,
    },
}

/// Number of distinct wire formats the hub can encode a message into.
pub const MAX_FORMATS: usize = 4;

/// A wire format: transports declare a `static` each (Socket.IO two: with
/// and without the recovery offset). `encode` returns
/// `None` for events the format does not carry (e.g. `hello` on SSE).
pub struct Format {
    /// Unique index below [`MAX_FORMATS`]: Socket.IO 0 (3 without
    /// recovery), SSE 1, `/ws` 2.
    pub id: usize,
    pub name: &'static str,
    pub encode: fn(&Event<'_>) -> Option<Frame>,
    /// The format sends an [`AppEvent`]'s binary arguments as frames of
    /// their own after the encoded one (Socket.IO's attachments); the others
    /// inline them.
    pub separate_attachments: bool,
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

/// The hub's settings.
#[derive(Debug, Clone, Copy)]
pub struct HubConfig {
    /// Recent messages kept per room for resuming clients (0: none).
    pub history_size: usize,
    /// How long a room's history outlives its last member.
    pub history_ttl: Duration,
    /// The seed's `hello` goes to the other members only while a room has
    /// fewer members than this: in a room of n, n joins would cost n²/2
    /// frames (50 million for 10,000 members). 0 turns `hello` off.
    pub hello_max_members: usize,
    /// How long a cached room's newest message is kept for joiners.
    pub cache_ttl: Duration,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            history_size: 100,
            history_ttl: Duration::from_secs(300),
            hello_max_members: 1000,
            cache_ttl: Duration::from_secs(86_400),
        }
    }
}

/// The hub. Share it as `Arc<Hub>`.
pub struct Hub {
    rooms: Rooms,
    history: History,
    latest: Latest,
    log: std::sync::OnceLock<Arc<dyn RoomLog>>,
    registry: Registry,
    hello_max_members: usize,
    next_client: AtomicU64,
    next_message: AtomicU64,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("rooms", &self.rooms)
            .field("history", &self.history)
            .field("log", &self.log.get().is_some())
            .finish_non_exhaustive()
    }
}

impl Default for Hub {
    fn default() -> Self {
        Hub::with_config(HubConfig::default())
    }
}

impl Hub {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_config(config: HubConfig) -> Self {
        Hub {
            rooms: Rooms::default(),
            history: History::new(config.history_size, config.history_ttl),
            latest: Latest::new(config.cache_ttl),
            log: std::sync::OnceLock::new(),
            registry: Registry::default(),
            hello_max_members: config.hello_max_members,
            next_client: AtomicU64::new(0),
            next_message: AtomicU64::new(0),
        }
    }

    /// A fresh id for a new connection.
    pub fn client_id(&self) -> ClientId {
        ClientId(self.next_client.fetch_add(1, Ordering::Relaxed) + 1)
    }

    /// Adds `member` to `room`. Returns false if it was already a member.
    /// The other members get the `Joined` event (the seed's `hello`); the
    /// joiner gets the room's newest message if the room is cached.
    pub fn join(&self, room: &str, member: Member) -> bool {
        self.enter(room, member, None).is_some()
    }

    /// Adds `member` to `room` and says hello to the others; false if it
    /// was a member already.
    fn add(&self, room: &str, member: Member) -> bool {
        let Some(others) = self.rooms.insert(room, member) else {
            return false;
        };
        if others.len() < self.hello_max_members {
            fan_out(&others, &Event::Joined { room });
        }
        true
    }

    /// Plugs in the broker side of interest-based subscriptions (once, before
    /// the first join; `server` does it). Returns false if one was set.
    pub fn set_interest(&self, interest: std::sync::Arc<dyn RoomInterest>) -> bool {
        self.rooms.interest.set(interest).is_ok()
    }

    /// Plugs in which rooms keep their newest message for joiners (once,
    /// before the first message; `server` does it from the `cache` rules).
    /// Returns false if a policy was set.
    ///
    /// With a per-room broker (a [`RoomInterest`] is plugged in) this node
    /// receives a room's messages only while the room has members here, so
    /// it keeps a room's value only while the room has members: a value
    /// kept across a time it was not subscribed could be stale. Otherwise
    /// (memory broker, Redis pattern mode) every message reaches every
    /// node and a value is kept for `cache_ttl`.
    pub fn set_cached_rooms(&self, policy: CachePolicy) -> bool {
        self.latest.set_policy(policy)
    }

    /// Whether this node receives a room's messages only while it has
    /// members here.
    fn per_room(&self) -> bool {
        self.rooms.interest.get().is_some()
    }

    /// The confirmation a join of `room` waits for before it is
    /// acknowledged: ready at once unless a broker tracks interest.
    pub fn ready(&self, room: &str) -> Ready {
        match self.rooms.interest.get() {
            Some(interest) => interest.ready(room),
            None => Ready::now(),
        }
    }

    /// Removes `client` from `room`. Returns false if it was not a member.
    /// The room's history stays live for its TTL from now (under the history
    /// lock, so no message slips between the leave and the refresh).
    pub fn leave(&self, room: &str, client: ClientId) -> bool {
        let mut history = self.history.enabled().then(|| self.history.lock(room));
        // Per-room broker: the last member's leaving ends the value (see
        // `set_cached_rooms`), under the lock a join takes.
        let mut latest = match self.per_room() {
            true => self.latest.lock_if_cached(room),
            false => None,
        };
        let left = self.rooms.remove(room, client);
        if let Some(shard) = history.as_mut()
            && left
        {
            self.history.touch(shard, room);
        }
        if let Some(shard) = latest.as_mut()
            && left
            && !self.rooms.contains(room)
        {
            self.latest.forget(shard, room);
        }
        left
    }

    /// Like [`Hub::join`], and first queues the room's recent messages newer
    /// than `since` to the member: every message reaches it exactly once,
    /// from history or live. Returns how many were replayed (the cached
    /// value included when it was newer than those).
    pub fn join_since(&self, room: &str, member: Member, since: u64) -> usize {
        self.enter(room, member, Some(since)).unwrap_or(0)
    }

    /// Every join: adds the member and queues what it should see first, the
    /// history after `since`, then the cached value if it is newer than
    /// what the member saw. Holds the history and cache locks that
    /// `deliver` holds while it records and snapshots members, so each
    /// message reaches the joiner once: queued here or live. `None` if it
    /// was a member already.
    fn enter(&self, room: &str, member: Member, since: Option<u64>) -> Option<usize> {
        let history = since.map(|_| self.history.lock(room));
        let latest = self.latest.lock_if_cached(room);
        let (outbox, format) = (member.outbox.clone(), member.format);
        if !self.add(room, member) {
            return None;
        }
        let missed = match (&history, since) {
            (Some(shard), Some(since)) => self.history.since(shard, room, since),
            _ => Vec::new(),
        };
        let seen = missed.last().map(|m| m.id).or(since);
        let cached = latest
            .as_ref()
            .and_then(|shard| self.latest.get(shard, room))
            .filter(|m| seen.is_none_or(|seen| m.id > seen));
        match replay(&outbox, format, missed.iter().chain(cached)) {
            Some(queued) => Some(queued),
            // Told instead, as a resume from the log is (`release`); live
            // messages follow.
            None => {
                if let Some(frame) = (format.encode)(&Event::Reset { room }) {
                    let _ = outbox.push(frame);
                }
                Some(0)
            }
        }
    }

    /// A whole session comes back (Socket.IO connection state recovery):
    /// joins `member` to every room of `rooms` and queues what each missed
    /// after `since`, merged in id order, exactly once with live messages
    /// (a cached room's value is the last of its history, not queued again).
    /// `since` is one position for all the rooms (the ids are one sequence).
    /// Returns how many were replayed, or `None`, joining nothing, when a
    /// room's history no longer holds everything after `since` (expired, or
    /// dropped a newer message to stay bounded): the gap cannot be filled.
    pub fn resume(&self, rooms: &[&str], member: &Member, since: u64) -> Option<usize> {
        let locked = self.history.lock_rooms(rooms);
        let covered = |room: &str| {
            locked
                .shard(room)
                .is_some_and(|shard| self.history.covers(shard, room, since))
        };
        if !rooms.iter().all(|room| covered(room)) {
            return None;
        }
        // The rooms it is not in yet, each once.
        let mut joining: Vec<&str> = Vec::new();
        for room in rooms {
            let member_already = self
                .rooms
                .members(room)
                .is_some_and(|members| members.iter().any(|m| m.client == member.client));
            if !member_already && !joining.contains(room) {
                joining.push(room);
            }
        }
        let mut missed = Vec::new();
        for room in &joining {
            if let Some(shard) = locked.shard(room) {
                missed.extend(self.history.since(shard, room, since));
            }
        }
        missed.sort_unstable_by_key(|message| message.id);
        // Checked before any room is joined: a replay larger than the queue
        // is a session that cannot be recovered, not a slow consumer.
        let frames = encode_all(member.format, &missed);
        if !fits(&member.outbox, &frames) {
            return None;
        }
        for room in joining {
            self.add(room, member.clone());
        }
        Some(queue_all(&member.outbox, frames))
    }

    /// Delivers a published message to every member of room `channel`, and
    /// keeps it in the room's history (and as its value, if cached).
    pub fn deliver(&self, channel: &str, payload: Bytes) -> FanOut {
        self.deliver_with(channel, payload, None, false)
            .unwrap_or_default()
    }

    /// Delivers a logged message: its id `id` and `log` position come from
    /// the room's log, the same on every node.
    pub fn deliver_logged(
        &self,
        channel: &str,
        payload: Bytes,
        id: u64,
        log: LogPosition,
    ) -> FanOut {
        self.deliver_with(channel, payload, Some((id, log)), false)
            .unwrap_or_default()
    }

    /// Delivers `payload` like [`Hub::deliver`] only if the cached room
    /// `room` has no value yet (`None` otherwise, and for a room that is not
    /// cached): a value that was current somewhere else (an MQTT broker's
    /// retained message) and may be older than the room's own.
    pub fn offer_latest(&self, room: &str, payload: Bytes) -> Option<FanOut> {
        if !self.latest.caches(room) {
            return None;
        }
        self.deliver_with(room, payload, None, true)
    }

    fn deliver_with(
        &self,
        channel: &str,
        payload: Bytes,
        logged: Option<(u64, LogPosition)>,
        only_if_uncached: bool,
    ) -> Option<FanOut> {
        // A logged message also takes the lock when nothing is recorded: it
        // orders the delivery against a resuming join's release.
        let history =
            (self.history.enabled() || logged.is_some()).then(|| self.history.lock(channel));
        let mut latest = self.latest.lock_if_cached(channel);
        if only_if_uncached
            && latest
                .as_ref()
                .is_some_and(|shard| self.latest.get(shard, channel).is_some())
        {
            return None;
        }
        let members = self.rooms.members(channel);
        let keep = history
            .as_ref()
            .is_some_and(|shard| self.history.is_live(shard, channel));
        let cache = latest.is_some() && (members.is_some() || !self.per_room());
        if members.is_none() && !keep && !cache {
            return Some(FanOut::default());
        }
        let (id, log) = match logged {
            Some((id, log)) => (id, Some(log)),
            None => (self.message_id(), None),
        };
        let message = Message {
            room: Arc::from(channel),
            payload,
            id,
            ts: now_millis(),
            log,
        };
        let mut skip = None;
        if let Some(mut shard) = history {
            if self.history.enabled() {
                self.history.record(&mut shard, &message, members.is_some());
            }
            if log.is_some() {
                skip = self.history.skipping(&mut shard, channel, id);
            }
        }
        if let Some(shard) = latest.as_mut().filter(|_| cache) {
            self.latest.record(shard, &message);
        }
        // Members are snapshotted: a joiner (or a release) from here on
        // queues after this fan-out.
        drop(latest);
        Some(self.fan_out_skipping(members, &message, skip))
    }

    /// Fans `message` out to `members` but those in `skip` (held members,
    /// who get it from their log read).
    fn fan_out_skipping(
        &self,
        members: Option<Arc<Vec<Member>>>,
        message: &Message,
        skip: Option<Vec<ClientId>>,
    ) -> FanOut {
        let Some(members) = members else {
            return FanOut::default();
        };
        match skip {
            Some(skip) if !skip.is_empty() => {
                let kept: Vec<Member> = members
                    .iter()
                    .filter(|m| !skip.contains(&m.client))
                    .cloned()
                    .collect();
                fan_out(&kept, &Event::Message(message))
            }
            _ => fan_out(&members, &Event::Message(message)),
        }
    }

    /// The newest logged message of `room` this node keeps (with members,
    /// or lingering): where a hole in its live messages would start.
    pub fn last_logged(&self, room: &str) -> Option<LogId> {
        let shard = self.history.lock(room);
        let message = self.history.last_logged(&shard, room)?;
        Some(LogId {
            epoch: message.log?.epoch,
            n: message.id,
        })
    }

    /// Tells every member of `room` that what it missed cannot be given
    /// (`reset`): a hole in the room's live messages that the log could not
    /// fill. Under the history lock, ordered with deliveries.
    pub fn reset_members(&self, room: &str) -> FanOut {
        let _ordered = self.history.lock(room);
        match self.rooms.members(room) {
            Some(members) => fan_out(&members, &Event::Reset { room }),
            None => FanOut::default(),
        }
    }

    /// Plugs in the rooms' log (once, before the first join; `server` does
    /// it for an engine with a log). Returns false if one was set.
    pub fn set_log(&self, log: Arc<dyn RoomLog>) -> bool {
        self.log.set(log).is_ok()
    }

    /// The rooms' log, if the engine has one.
    pub fn log(&self) -> Option<&Arc<dyn RoomLog>> {
        self.log.get()
    }

    /// Joins `member` to `room` with its logged messages held back until the
    /// returned [`Held`] is released with what the log read after `since`
    /// found. `None` if it was a member already.
    pub fn hold(self: &Arc<Self>, room: &str, member: Member, since: LogId) -> Option<Held> {
        let room: Arc<str> = Arc::from(room);
        let mut shard = self.history.lock(&room);
        self.history
            .hold(&mut shard, &room, member.client, u64::MAX);
        // Not `enter`: the cached value would come before the log's replay;
        // what the client missed, that value included, comes from the log.
        if !self.add(&room, member.clone()) {
            self.history.unhold(&mut shard, &room, member.client);
            return None;
        }
        Some(Held {
            hub: self.clone(),
            room,
            member,
            since,
            released: false,
        })
    }

    fn unhold(&self, room: &str, client: ClientId) {
        let mut shard = self.history.lock(room);
        self.history.unhold(&mut shard, room, client);
    }

    /// [`Held::release`]: under the room's history lock, queues the reset or
    /// what the log missed, then the logged messages that arrived live after
    /// the read, and sets the member's floor to the last one queued.
    fn release(&self, room: &Arc<str>, member: &Member, since: LogId, read: LogRead) -> usize {
        let mut shard = self.history.lock(room);
        let mut reset = read.reset;
        let read_up_to = if reset || read.per_room {
            read.newest
        } else {
            read.newest.max(since.n)
        };
        let live = self
            .history
            .logged_after(&shard, room, read_up_to, read.epoch);
        // What arrived live must follow the read without a hole (the history
        // could have overflowed during the read): else the gap is unknown.
        if !reset
            && let Some(first) = live.first()
            && first.log.is_some_and(|log| log.prev > read_up_to)
        {
            reset = true;
        }
        let replay: Vec<&Message> = if reset {
            live.iter().collect()
        } else {
            read.missed.iter().chain(&live).collect()
        };
        let frames: Vec<Option<Frame>> = replay
            .iter()
            .map(|message| (member.format.encode)(&Event::Message(message)))
            .collect();
        let bytes = frames.iter().flatten().map(Frame::len).sum();
        // The replay goes into the queue in one go, before the connection
        // writes any of it: one larger than the queue's room would close it
        // as a slow consumer, and the client would come back with the same id
        // to a still larger replay, for as long as the log holds its gap. It
        // is told instead, and goes on live from here.
        let fits = member
            .outbox
            .has_room(frames.iter().flatten().count(), bytes);
        if (reset || !fits)
            && let Some(frame) = (member.format.encode)(&Event::Reset { room })
        {
            let _ = member.outbox.push(frame);
        }
        let mut queued = 0;
        let mut floor = read_up_to;
        for (message, frame) in replay.iter().zip(frames) {
            if fits {
                // Pushes from other rooms can still fill the queue meanwhile:
                // then this is a slow consumer.
                if frame.is_some_and(|frame| member.outbox.push(frame).is_err()) {
                    break;
                }
                queued += 1;
            }
            floor = floor.max(message.id);
        }
        self.history.hold(&mut shard, room, member.client, floor);
        queued
    }

    /// [`Held::release_all`]: the rooms' history locks taken together, each
    /// room's read and what came live after it checked, then everything
    /// queued merged in id order and each room's floor set; `None`, queuing
    /// nothing, at the first room that cannot be filled or when the whole
    /// replay does not fit the client's queue.
    fn release_all(&self, held: &mut [Held], reads: Vec<LogRead>) -> Option<usize> {
        let Some(member) = held.first().map(|one| one.member.clone()) else {
            return Some(0);
        };
        let names: Vec<Arc<str>> = held.iter().map(|one| one.room.clone()).collect();
        let rooms: Vec<&str> = names.iter().map(|room| &**room).collect();
        let mut locked = self.history.lock_rooms(&rooms);
        let mut missed = Vec::new();
        let mut floors = Vec::with_capacity(held.len());
        for (one, read) in held.iter().zip(reads) {
            if read.reset {
                return None;
            }
            let read_up_to = read.newest.max(one.since.n);
            let shard = locked.shard(&one.room)?;
            let live = self
                .history
                .logged_after(shard, &one.room, read_up_to, read.epoch);
            // As in `release`: what came live must follow the read.
            if live
                .first()
                .is_some_and(|first| first.log.is_some_and(|log| log.prev > read_up_to))
            {
                return None;
            }
            let newest = live.last().or(read.missed.last()).map(|m| m.id);
            floors.push(newest.map_or(read_up_to, |id| id.max(read_up_to)));
            missed.extend(read.missed);
            missed.extend(live);
        }
        missed.sort_unstable_by_key(|message| message.id);
        let queued = replay(&member.outbox, member.format, &missed)?;
        for (one, floor) in held.iter_mut().zip(floors) {
            if let Some(shard) = locked.shard_mut(&one.room) {
                self.history.hold(shard, &one.room, member.client, floor);
            }
            one.released = true;
        }
        Some(queued)
    }

    /// Whether a message to `room` would reach anyone or be kept: the room
    /// has members here, a live history, or is cached (and every message
    /// reaches this node). No allocation, two short locks:
    /// a broker asks before it copies a message, so a flood to rooms nobody
    /// here is in costs little.
    pub fn wants(&self, room: &str) -> bool {
        self.rooms.contains(room)
            || (!self.per_room() && self.latest.caches(room))
            || (self.history.enabled() && {
                let shard = self.history.lock(room);
                self.history.is_live(&shard, room)
            })
    }

    /// Strictly increasing ids that also increase across restarts: the
    /// current millisecond times 65,536 plus a counter, so a client's
    /// `Last-Event-ID` from before a restart is older than every new message.
    fn message_id(&self) -> u64 {
        let floor = now_millis() << 16;
        let previous = self
            .next_message
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| {
                Some(floor.max(last + 1))
            })
            .unwrap_or_else(|last| last);
        floor.max(previous + 1)
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

/// Queues `missed` to one resuming member, all or nothing: how many frames
/// were queued, or `None`, queuing none, when they do not fit the queue's
/// room. Queued in one go before the connection writes any, a larger replay
/// would close it as a slow consumer, and the client would come back with
/// the same position to a still larger one.
fn replay<'a>(
    outbox: &Outbox,
    format: &Format,
    missed: impl IntoIterator<Item = &'a Message>,
) -> Option<usize> {
    let frames = encode_all(format, missed);
    fits(outbox, &frames).then(|| queue_all(outbox, frames))
}

fn encode_all<'a>(format: &Format, messages: impl IntoIterator<Item = &'a Message>) -> Vec<Frame> {
    messages
        .into_iter()
        .filter_map(|message| (format.encode)(&Event::Message(message)))
        .collect()
}

fn fits(outbox: &Outbox, frames: &[Frame]) -> bool {
    outbox.has_room(frames.len(), frames.iter().map(Frame::len).sum())
}

/// Pushes `frames` in order; pushes from other rooms can still fill the
/// queue meanwhile, which makes it a slow consumer.
fn queue_all(outbox: &Outbox, frames: Vec<Frame>) -> usize {
    let mut queued = 0;
    for frame in frames {
        if outbox.push(frame).is_err() {
            break;
        }
        queued += 1;
    }
    queued
}

/// Encodes `event` at most once per format and queues the shared frame to
/// every member.
fn fan_out(members: &[Member], event: &Event<'_>) -> FanOut {
    let started = tokio::time::Instant::now();
    let mut encoded: [Option<Option<Frame>>; MAX_FORMATS] = Default::default();
    let mut per_format = [(0usize, ""); MAX_FORMATS];
    let mut result = FanOut::default();
    for member in members {
        let format = member.format;
        let slot = &mut encoded[format.id];
        let Some(frame) = slot.get_or_insert_with(|| (format.encode)(event)) else {
            continue;
        };
        let pushed = member
            .outbox
            .push_at(frame.clone(), started)
            .and_then(|()| match event {
                Event::App(app) if format.separate_attachments => {
                    app.binary.iter().try_for_each(|data| {
                        member.outbox.push_at(Frame::Binary(data.clone()), started)
                    })
                }
                _ => Ok(()),
            });
        match pushed {
            Ok(()) => {
                result.delivered += 1;
                per_format[format.id] = (per_format[format.id].0 + 1, format.name);
            }
            Err(PushError::Full(_)) => result.slow_consumers += 1,
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
    use super::testing::{IDS, drain, entry, member, payload};
    use super::*;
    use crate::disconnect::DisconnectReason;

    fn encode_a(event: &Event<'_>) -> Option<Frame> {
        match event {
            Event::Message(m) => Some(Frame::Text(Bytes::from(format!("a:{}", m.id)))),
            Event::Joined { room } => Some(Frame::Text(Bytes::from(format!("hello:{room}")))),
            Event::App(_) | Event::Disconnect | Event::Reset { .. } => None,
        }
    }
    fn encode_b(event: &Event<'_>) -> Option<Frame> {
        match event {
            Event::Message(m) => Some(Frame::Text(m.payload.clone())),
            Event::Joined { .. } | Event::App(_) | Event::Disconnect | Event::Reset { .. } => None,
        }
    }
    static A: Format = Format {
        id: 0,
        name: "a",
        encode: encode_a,
        separate_attachments: false,
    };
    static B: Format = Format {
        id: 1,
        name: "b",
        encode: encode_b,
        separate_attachments: false,
    };

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
    fn hello_stops_in_large_rooms() {
        let hub = Hub::with_config(HubConfig {
            hello_max_members: 2,
            ..HubConfig::default()
        });
        let first = member(&hub, &A, Default::default());
        hub.join("r", first.clone());
        hub.join("r", member(&hub, &A, Default::default()));
        hub.join("r", member(&hub, &A, Default::default()));
        assert_eq!(payload(first.outbox.pop()), "hello:r", "room of 1: hello");
        assert_eq!(
            first.outbox.pop(),
            None,
            "room of 2 reached the cap: no hello"
        );
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
    fn a_resuming_member_gets_what_it_missed_once() {
        let hub = Hub::new();
        let keeper = member(&hub, &B, Default::default());
        hub.join("r", keeper.clone());
        for n in 0..5u8 {
            hub.deliver("r", Bytes::from(vec![b'0' + n]));
        }
        let ids: Vec<u64> = (0..5).map(|_| keeper.outbox.pop()).map(|_| 0).collect();
        assert_eq!(ids.len(), 5);
        // Resume after the 2nd message: history gives 3rd..5th, then live.
        let seen = hub.history.since(&hub.history.lock("r"), "r", 0);
        let late = member(&hub, &B, Default::default());
        assert_eq!(hub.join_since("r", late.clone(), seen[1].id), 3);
        hub.deliver("r", Bytes::from_static(b"5"));
        let got: Vec<Bytes> = std::iter::from_fn(|| late.outbox.pop())
            .map(|f| payload(Some(f)))
            .collect();
        assert_eq!(got, vec!["2", "3", "4", "5"]);
    }

    fn with_history(history_size: usize) -> Hub {
        Hub::with_config(HubConfig {
            history_size,
            ..HubConfig::default()
        })
    }

    fn ids_of(hub: &Hub, room: &str) -> Vec<u64> {
        let shard = hub.history.lock(room);
        hub.history
            .since(&shard, room, 0)
            .iter()
            .map(|m| m.id)
            .collect()
    }

    #[test]
    fn a_session_resumes_all_its_rooms_in_id_order() {
        let hub = Hub::new();
        let old = member(&hub, &B, Default::default());
        hub.join("a", old.clone());
        hub.join("b", old.clone());
        hub.deliver("a", Bytes::from_static(b"a0"));
        let seen = ids_of(&hub, "a")[0];
        hub.leave("a", old.client);
        hub.leave("b", old.client);
        // Quiet rooms: kept after the leave even though b never had a message.
        for text in ["b1", "a2", "b3"] {
            hub.deliver(&text[..1], Bytes::from(text));
        }
        let back = member(&hub, &B, Default::default());
        assert_eq!(hub.resume(&["a", "b"], &back, seen), Some(3));
        hub.deliver("b", Bytes::from_static(b"b4"));
        assert_eq!(texts(&back.outbox), vec!["b1", "a2", "b3", "b4"]);
        assert_eq!((hub.room_size("a"), hub.room_size("b")), (1, 1));
    }

    #[test]
    fn a_gap_the_history_cannot_fill_resumes_nothing() {
        let hub = with_history(2);
        let x = member(&hub, &B, Default::default());
        hub.join("a", x.clone());
        hub.join("b", x.clone());
        hub.deliver("a", Bytes::from_static(b"a0"));
        let seen = ids_of(&hub, "a")[0];
        for n in 0..3u8 {
            hub.deliver("b", Bytes::from(vec![n]));
        }
        let back = member(&hub, &B, Default::default());
        assert_eq!(hub.resume(&["a", "b"], &back, seen), None, "b dropped one");
        assert_eq!(hub.room_size("a"), 1, "joined nothing");
        assert_eq!(back.outbox.pop(), None);
        let newest = *ids_of(&hub, "b").first().unwrap();
        assert!(hub.resume(&["a", "b"], &back, newest).is_some());
        assert_eq!(
            hub.resume(&["never"], &back, seen),
            None,
            "no history: nothing tells what was missed"
        );
    }

    #[test]
    fn history_covers_the_gap_while_a_room_is_empty() {
        let hub = Hub::new();
        let x = member(&hub, &B, Default::default());
        hub.join("r", x.clone());
        hub.deliver("r", Bytes::from_static(b"before"));
        let seen = hub.history.since(&hub.history.lock("r"), "r", 0)[0].id;
        hub.leave("r", x.client);
        hub.deliver("r", Bytes::from_static(b"gap"));
        hub.deliver("never-joined", Bytes::from_static(b"x"));
        let back = member(&hub, &B, Default::default());
        assert_eq!(hub.join_since("r", back.clone(), seen), 1);
        assert_eq!(payload(back.outbox.pop()), "gap");
        assert!(
            !hub.history
                .is_live(&hub.history.lock("never-joined"), "never-joined")
        );
    }

    #[test]
    fn wants_exactly_rooms_with_members_or_a_live_history() {
        for history_size in [0, 10] {
            let hub = with_history(history_size);
            assert!(!hub.wants("r"), "nobody ever joined");
            let x = member(&hub, &B, Default::default());
            hub.join("r", x.clone());
            assert!(hub.wants("r"));
            hub.deliver("r", Bytes::from_static(b"kept"));
            hub.leave("r", x.client);
            // Left: only a history still wants the room's messages.
            assert_eq!(hub.wants("r"), history_size > 0, "history {history_size}");
            assert!(!hub.wants("other"));
        }
    }

    #[test]
    fn history_is_bounded_and_can_be_off() {
        let hub = with_history(2);
        let x = member(&hub, &B, Default::default());
        hub.join("r", x.clone());
        for n in 0..5u8 {
            hub.deliver("r", Bytes::from(vec![n]));
        }
        let late = member(&hub, &B, Default::default());
        assert_eq!(hub.join_since("r", late, 0), 2, "only the last 2 are kept");

        let hub = with_history(0);
        let x = member(&hub, &B, Default::default());
        hub.join("r", x);
        hub.deliver("r", Bytes::from_static(b"a"));
        let late = member(&hub, &B, Default::default());
        assert_eq!(hub.join_since("r", late, 0), 0);
    }

    /// A replay larger than the joiner's queue is queued not at all (it
    /// would close the client as a slow consumer, and the client would come
    /// back to a larger one): a join goes on live, a session is not recovered.
    #[test]
    fn a_replay_larger_than_the_queue_is_not_queued() {
        let hub = with_history(20);
        let x = member(&hub, &B, Default::default());
        hub.join("r", x.clone());
        for n in 0..10u8 {
            hub.deliver("r", Bytes::from(vec![b'0' + n]));
        }
        let small = OutboxLimits {
            max_frames: 5,
            max_bytes: 1 << 20,
        };
        let late = member(&hub, &B, small);
        assert_eq!(hub.join_since("r", late.clone(), 0), 0);
        assert!(late.outbox.is_empty());
        hub.deliver("r", Bytes::from_static(b"live"));
        assert_eq!(texts(&late.outbox), vec![Bytes::from_static(b"live")]);
        assert_eq!(late.outbox.closed(), None, "not a slow consumer");

        let session = member(&hub, &B, small);
        assert_eq!(hub.resume(&["r"], &session, 0), None);
        assert_eq!(hub.room_size("r"), 2, "the session joined nothing");
        let fits = member(&hub, &B, small);
        let last_ids = ids_of(&hub, "r");
        let since = last_ids[last_ids.len() - 4];
        assert_eq!(hub.resume(&["r", "r"], &fits, since), Some(3));
        assert_eq!(texts(&fits.outbox).len(), 3);
        assert_eq!(hub.room_size("r"), 3);
    }

    /// A hub whose rooms starting with `dev` are cached.
    fn caching_hub(config: HubConfig) -> Hub {
        let hub = Hub::with_config(config);
        assert!(hub.set_cached_rooms(Box::new(|room: &str| room.starts_with("dev"))));
        hub
    }

    fn texts(outbox: &Outbox) -> Vec<Bytes> {
        std::iter::from_fn(|| outbox.pop())
            .map(|f| payload(Some(f)))
            .collect()
    }

    #[test]
    fn a_joiner_gets_a_cached_room_s_newest_message_first() {
        let hub = caching_hub(HubConfig::default());
        hub.deliver("dev1", Bytes::from_static(b"old"));
        hub.deliver("dev1", Bytes::from_static(b"new"));
        hub.deliver("other", Bytes::from_static(b"not cached"));
        assert!(hub.wants("dev1") && !hub.wants("other"));
        let x = member(&hub, &B, Default::default());
        assert!(hub.join("dev1", x.clone()));
        assert!(!hub.join("dev1", x.clone()), "a member gets nothing again");
        hub.deliver("dev1", Bytes::from_static(b"live"));
        assert_eq!(texts(&x.outbox), vec!["new", "live"]);
        let y = member(&hub, &B, Default::default());
        hub.join("other", y.clone());
        assert_eq!(y.outbox.pop(), None, "other is not cached");
        let z = member(&hub, &B, Default::default());
        hub.join("dev1", z.clone());
        assert_eq!(texts(&z.outbox), vec!["live"], "the value follows live");
    }

    #[test]
    fn a_resuming_joiner_gets_the_cached_value_only_when_it_is_news() {
        let hub = caching_hub(HubConfig::default());
        let keeper = member(&hub, &B, Default::default());
        hub.join("dev1", keeper.clone());
        hub.deliver("dev1", Bytes::from_static(b"1"));
        hub.deliver("dev1", Bytes::from_static(b"2"));
        let ids: Vec<u64> = hub
            .history
            .since(&hub.history.lock("dev1"), "dev1", 0)
            .iter()
            .map(|m| m.id)
            .collect();
        // Missed "2": history replays it, and the value (also "2") is not repeated.
        let a = member(&hub, &B, Default::default());
        assert_eq!(hub.join_since("dev1", a.clone(), ids[0]), 1);
        assert_eq!(texts(&a.outbox), vec!["2"]);
        // Saw everything: nothing.
        let b = member(&hub, &B, Default::default());
        assert_eq!(hub.join_since("dev1", b.clone(), ids[1]), 0);
        assert_eq!(b.outbox.pop(), None);
        // Without history, a client that missed some gets the value.
        let hub = caching_hub(HubConfig {
            history_size: 0,
            ..HubConfig::default()
        });
        hub.deliver("dev1", Bytes::from_static(b"1"));
        hub.deliver("dev1", Bytes::from_static(b"2"));
        let c = member(&hub, &B, Default::default());
        assert_eq!(hub.join_since("dev1", c.clone(), 1), 1);
        assert_eq!(texts(&c.outbox), vec!["2"]);
    }

    #[test]
    fn joins_racing_deliveries_get_each_message_once_in_order() {
        let hub = Arc::new(caching_hub(HubConfig::default()));
        let publisher = {
            let hub = hub.clone();
            std::thread::spawn(move || {
                for n in 0..20_000u32 {
                    hub.deliver("dev1", Bytes::from(n.to_string()));
                }
            })
        };
        let mut joiners = Vec::new();
        while !publisher.is_finished() && joiners.len() < 50 {
            let joiner = member(
                &hub,
                &B,
                OutboxLimits {
                    max_frames: 1 << 20,
                    max_bytes: 1 << 30,
                },
            );
            hub.join("dev1", joiner.clone());
            joiners.push(joiner);
            std::thread::sleep(Duration::from_micros(200));
        }
        publisher.join().unwrap();
        assert!(joiners.len() > 1);
        for joiner in &joiners {
            let got: Vec<u32> = texts(&joiner.outbox)
                .iter()
                .map(|b| std::str::from_utf8(b).unwrap().parse().unwrap())
                .collect();
            // From the value it joined with (or the first live one) to the end, no gap, no repeat.
            let first = got.first().copied().expect("the value or a live message");
            assert_eq!(got, (first..20_000).collect::<Vec<_>>());
        }
    }

    #[derive(Debug)]
    struct PerRoom;
    impl RoomInterest for PerRoom {
        fn first_member(&self, _: &str) {}
        fn last_member_left(&self, _: &str) {}
        fn ready(&self, _: &str) -> Ready {
            Ready::now()
        }
    }

    #[test]
    fn a_per_room_broker_keeps_a_value_only_while_the_room_has_members() {
        let hub = caching_hub(HubConfig::default());
        assert!(hub.set_interest(Arc::new(PerRoom)));
        hub.deliver("dev1", Bytes::from_static(b"unheard"));
        assert!(!hub.wants("dev1"), "not subscribed for the cache alone");
        let x = member(&hub, &B, Default::default());
        hub.join("dev1", x.clone());
        assert_eq!(x.outbox.pop(), None, "nothing kept without members");
        hub.deliver("dev1", Bytes::from_static(b"v1"));
        let y = member(&hub, &B, Default::default());
        hub.join("dev1", y.clone());
        assert_eq!(texts(&y.outbox), vec!["v1"]);
        hub.leave("dev1", x.client);
        hub.leave("dev1", y.client);
        // Unsubscribed now: v2 may be published unseen, so v1 is forgotten.
        let z = member(&hub, &B, Default::default());
        hub.join("dev1", z.clone());
        assert_eq!(z.outbox.pop(), None);
    }

    #[test]
    fn an_offered_value_fills_only_an_empty_cache() {
        let hub = caching_hub(HubConfig::default());
        assert!(
            hub.offer_latest("other", Bytes::from_static(b"x"))
                .is_none()
        );
        let x = member(&hub, &B, Default::default());
        hub.join("dev1", x.clone());
        let fan_out = hub.offer_latest("dev1", Bytes::from_static(b"retained"));
        assert_eq!(fan_out.map(|f| f.delivered), Some(1), "news to the member");
        hub.deliver("dev1", Bytes::from_static(b"live"));
        assert!(
            hub.offer_latest("dev1", Bytes::from_static(b"stale"))
                .is_none()
        );
        let y = member(&hub, &B, Default::default());
        hub.join("dev1", y.clone());
        assert_eq!(texts(&x.outbox), vec!["retained", "live"]);
        assert_eq!(texts(&y.outbox), vec!["live"]);
    }

    #[test]
    fn a_cached_value_expires() {
        let hub = caching_hub(HubConfig {
            cache_ttl: Duration::from_millis(50),
            ..HubConfig::default()
        });
        hub.deliver("dev1", Bytes::from_static(b"soon old"));
        std::thread::sleep(Duration::from_millis(80));
        let x = member(&hub, &B, Default::default());
        hub.join("dev1", x.clone());
        assert_eq!(x.outbox.pop(), None);
    }

    #[test]
    fn message_ids_increase() {
        let hub = Hub::new();
        let x = member(&hub, &A, Default::default());
        hub.join("r", x.clone());
        hub.deliver("r", Bytes::new());
        hub.deliver("r", Bytes::new());
        let id = |frame: Option<Frame>| -> u64 {
            let text = payload(frame);
            std::str::from_utf8(&text).unwrap()[2..].parse().unwrap()
        };
        let (first, second) = (id(x.outbox.pop()), id(x.outbox.pop()));
        assert!(second > first, "{first} < {second}");
        assert!(
            first >> 16 >= now_millis() - 60_000,
            "ids start from the clock"
        );
        assert_eq!(
            hub.rooms(),
            vec![RoomInfo {
                name: "r".into(),
                members: 1
            }]
        );
    }

    /// Logged message `n` (previous in the room: `prev`), epoch 1.
    fn logged(hub: &Hub, n: u64, prev: u64) {
        hub.deliver_logged("r", Bytes::new(), n, LogPosition { epoch: 1, prev });
    }

    const SINCE: LogId = LogId { epoch: 1, n: 10 };

    #[test]
    fn a_held_member_gets_the_log_then_what_came_live_once() {
        let hub = Arc::new(Hub::new());
        let keeper = member(&hub, &IDS, Default::default());
        hub.join("r", keeper.clone());
        logged(&hub, 10, 0);
        logged(&hub, 20, 10);
        let back = member(&hub, &IDS, Default::default());
        let held = hub.hold("r", back.clone(), SINCE).unwrap();
        // Published after the log was read: arrives live while held.
        logged(&hub, 30, 20);
        assert!(drain(&back).is_empty(), "held: nothing live yet");
        let read = LogRead {
            missed: vec![entry(20, 10)],
            newest: 20,
            epoch: Some(1),
            per_room: false,
            ..LogRead::default()
        };
        assert_eq!(held.release(read), 2);
        logged(&hub, 40, 30);
        assert_eq!(drain(&back), ["1:20", "1:30", "1:40"]);
        assert_eq!(drain(&keeper), ["1:10", "1:20", "1:30", "1:40"]);
    }

    #[test]
    fn what_the_read_had_is_not_delivered_again_when_it_arrives_live() {
        let hub = Arc::new(Hub::new());
        let back = member(&hub, &IDS, Default::default());
        let held = hub.hold("r", back.clone(), SINCE).unwrap();
        // The read saw 20 and 30; their pub/sub copies arrive after.
        let read = LogRead {
            missed: vec![entry(20, 10), entry(30, 20)],
            newest: 30,
            epoch: Some(1),
            per_room: false,
            ..LogRead::default()
        };
        held.release(read);
        logged(&hub, 20, 10);
        logged(&hub, 30, 20);
        logged(&hub, 40, 30);
        hub.deliver("r", Bytes::new());
        let got = drain(&back);
        assert_eq!(got[..3], ["1:20", "1:30", "1:40"]);
        assert_eq!(got.len(), 4, "a plain message is never held: {got:?}");
        logged(&hub, 50, 40);
        assert_eq!(drain(&back), ["1:50"], "the floor is gone once passed");
    }

    #[test]
    fn a_hole_between_the_read_and_live_or_a_reset_read_says_reset() {
        let hub = Arc::new(Hub::with_config(HubConfig {
            history_size: 1,
            ..HubConfig::default()
        }));
        let back = member(&hub, &IDS, Default::default());
        let held = hub.hold("r", back.clone(), SINCE).unwrap();
        // Two arrive while held, the history keeps one: 30 is lost here.
        logged(&hub, 30, 20);
        logged(&hub, 40, 30);
        let read = LogRead {
            missed: vec![entry(20, 10)],
            newest: 20,
            epoch: Some(1),
            per_room: false,
            ..LogRead::default()
        };
        held.release(read);
        assert_eq!(drain(&back), ["reset:r", "1:40"]);

        let other = member(&hub, &IDS, Default::default());
        let held = hub.hold("r", other.clone(), SINCE).unwrap();
        held.release(LogRead::reset());
        logged(&hub, 50, 40);
        assert_eq!(drain(&other), ["reset:r", "1:40", "1:50"]);
    }

    fn entry_in(room: &str, n: u64, prev: u64) -> Message {
        Message {
            room: Arc::from(room),
            ..entry(n, prev)
        }
    }

    #[test]
    fn a_session_s_rooms_are_released_together_in_id_order_or_not_at_all() {
        let hub = Arc::new(Hub::new());
        let back = member(&hub, &IDS, Default::default());
        let hold = |room: &str| hub.hold(room, back.clone(), SINCE).unwrap();
        let read = |room: &str, ids: &[(u64, u64)]| LogRead {
            missed: ids.iter().map(|&(n, p)| entry_in(room, n, p)).collect(),
            newest: ids.last().map_or(0, |&(n, _)| n),
            epoch: Some(1),
            ..LogRead::default()
        };
        // Room r came live after its read (30); s's log had 20 and 40.
        let held = vec![hold("r"), hold("s")];
        logged(&hub, 30, 0);
        let reads = vec![read("r", &[]), read("s", &[(20, 10), (40, 20)])];
        assert_eq!(Held::release_all(held, reads), Some(3));
        assert_eq!(drain(&back), ["1:20", "1:30", "1:40"], "one id order");
        logged(&hub, 50, 30);
        assert_eq!(drain(&back), ["1:50"]);

        // One room that cannot be filled: nothing queued for any, holds let go.
        let other = member(&hub, &IDS, Default::default());
        let held = vec![
            hub.hold("t", other.clone(), SINCE).unwrap(),
            hub.hold("u", other.clone(), SINCE).unwrap(),
        ];
        let reads = vec![read("t", &[(20, 10)]), LogRead::reset()];
        assert_eq!(Held::release_all(held, reads), None);
        assert!(drain(&other).is_empty(), "nothing queued");
        hub.deliver_logged("t", Bytes::new(), 60, LogPosition { epoch: 1, prev: 20 });
        assert_eq!(drain(&other), ["1:60"], "no hold left behind");
    }

    #[test]
    fn an_unreleased_hold_lets_go_when_dropped() {
        let hub = Arc::new(Hub::new());
        let back = member(&hub, &IDS, Default::default());
        let held = hub.hold("r", back.clone(), SINCE).unwrap();
        assert!(
            hub.hold("r", back.clone(), SINCE).is_none(),
            "a member already"
        );
        drop(held);
        logged(&hub, 20, 10);
        assert_eq!(drain(&back), ["1:20"]);
    }
}
