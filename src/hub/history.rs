//! Recent messages per room, so a client that reconnects with the last id it
//! saw (`Last-Event-ID` on SSE, `since` on `/ws`) gets what it missed.
//!
//! Bounded per room (`capacity` messages) and in time: a room's history is
//! kept while it has members and for `ttl` after the last one left, so a
//! client that was the room's only member still finds what it missed. The history lock also orders a
//! delivery against a resuming join (see `Hub::join_since`), so the joiner
//! gets every message exactly once: from history or live, never both.
//!
//! A member leaving refreshes its room's history (so a room that was quiet
//! for longer than `ttl` still keeps what is published after its last member
//! left), and each room remembers the newest id it dropped for room, so a
//! resume can tell whether the history still holds everything after an id
//! (`covers`) instead of replaying a silent gap.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::{ClientId, Message};

const SHARDS: usize = 32;

/// Expired rooms are swept from a shard every this many records.
const SWEEP_EVERY: u32 = 1024;

#[derive(Debug)]
pub(super) struct History {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    capacity: usize,
    ttl: Duration,
}

#[derive(Debug, Default)]
pub(super) struct Shard {
    rooms: HashMap<Arc<str>, RoomHistory>,
    records: u32,
    /// Per room, the members whose logged messages up to a floor are not
    /// delivered live: held while their log is read (floor `u64::MAX`),
    /// then until live delivery passes what the read queued. Usually empty.
    holds: HashMap<Arc<str>, Vec<(ClientId, u64)>>,
}

#[derive(Debug)]
struct RoomHistory {
    messages: VecDeque<Message>,
    /// When a message was last recorded while the room had members, or a
    /// member last left.
    member_seen: Instant,
    /// The newest id dropped to keep `capacity` (0: none yet).
    evicted: u64,
}

impl History {
    pub(super) fn new(capacity: usize, ttl: Duration) -> Self {
        History {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            hasher: RandomState::new(),
            capacity,
            ttl,
        }
    }

    pub(super) fn enabled(&self) -> bool {
        self.capacity > 0
    }

    /// Locks the shard of `room`. Callers hold it across recording and
    /// taking the member snapshot (deliver) or joining and replaying (resume).
    pub(super) fn lock(&self, room: &str) -> MutexGuard<'_, Shard> {
        self.lock_index(self.index(room))
    }

    /// Locks the shards of every room in `rooms`, each once and in index
    /// order (so two callers never wait on each other round a cycle), for a
    /// resume that checks and replays several rooms as one step.
    pub(super) fn lock_rooms(&self, rooms: &[&str]) -> Locked<'_> {
        let mut indexes: Vec<usize> = rooms.iter().map(|room| self.index(room)).collect();
        indexes.sort_unstable();
        indexes.dedup();
        let guards = indexes
            .into_iter()
            .map(|index| (index, self.lock_index(index)))
            .collect();
        Locked {
            history: self,
            guards,
        }
    }

    fn index(&self, room: &str) -> usize {
        self.hasher.hash_one(room) as usize % SHARDS
    }

    fn lock_index(&self, index: usize) -> MutexGuard<'_, Shard> {
        self.shards[index]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records `message`. A room without members is recorded only while its
    /// history is still live (its last member left less than `ttl` ago).
    pub(super) fn record(&self, shard: &mut Shard, message: &Message, has_members: bool) {
        let now = Instant::now();
        shard.records = shard.records.wrapping_add(1);
        if shard.records.is_multiple_of(SWEEP_EVERY) {
            let ttl = self.ttl;
            shard
                .rooms
                .retain(|_, room| now.duration_since(room.member_seen) < ttl);
        }
        if !has_members && !self.is_live(shard, &message.room) {
            return;
        }
        let room = shard
            .rooms
            .entry(message.room.clone())
            .or_insert_with(|| RoomHistory::new(now));
        if room.messages.len() == self.capacity
            && let Some(dropped) = room.messages.pop_front()
        {
            room.evicted = dropped.id;
        }
        room.messages.push_back(message.clone());
        if has_members {
            room.member_seen = now;
        }
    }

    /// A member of `room` leaves: its history stays live for `ttl` from now,
    /// so what is published while the room is empty is kept for a client
    /// that comes back.
    pub(super) fn touch(&self, shard: &mut Shard, room: &str) {
        let now = Instant::now();
        match shard.rooms.get_mut(room) {
            Some(history) => history.member_seen = now,
            None => {
                shard.rooms.insert(Arc::from(room), RoomHistory::new(now));
            }
        }
    }

    /// Whether the history of `room` still holds every message after
    /// `since`: it has not expired and dropped none newer than `since`.
    pub(super) fn covers(&self, shard: &Shard, room: &str, since: u64) -> bool {
        shard
            .rooms
            .get(room)
            .is_some_and(|h| h.member_seen.elapsed() < self.ttl && h.evicted <= since)
    }

    /// Whether `room` has a history that has not expired.
    pub(super) fn is_live(&self, shard: &Shard, room: &str) -> bool {
        shard
            .rooms
            .get(room)
            .is_some_and(|h| h.member_seen.elapsed() < self.ttl)
    }

    /// Messages of `room` newer than `since`, oldest first.
    pub(super) fn since(&self, shard: &Shard, room: &str, since: u64) -> Vec<Message> {
        match shard.rooms.get(room) {
            Some(history) if history.member_seen.elapsed() < self.ttl => history
                .messages
                .iter()
                .filter(|m| m.id > since)
                .cloned()
                .collect(),
            _ => Vec::new(),
        }
    }

    /// The newest logged message of `room`'s live history.
    pub(super) fn last_logged<'s>(&self, shard: &'s Shard, room: &str) -> Option<&'s Message> {
        let history = shard.rooms.get(room)?;
        if history.member_seen.elapsed() >= self.ttl {
            return None;
        }
        history.messages.iter().rev().find(|m| m.log.is_some())
    }

    /// Logged messages of `room` newer than `after` in `epoch` (any epoch if
    /// `None`), oldest first: what arrived live while a log was read.
    pub(super) fn logged_after(
        &self,
        shard: &Shard,
        room: &str,
        after: u64,
        epoch: Option<u64>,
    ) -> Vec<Message> {
        shard.rooms.get(room).map_or_else(Vec::new, |history| {
            history
                .messages
                .iter()
                .filter(|m| {
                    m.log
                        .is_some_and(|log| epoch.is_none_or(|e| e == log.epoch))
                        && m.id > after
                })
                .cloned()
                .collect()
        })
    }

    /// Sets `client`'s floor in `room`: its logged messages up to `floor`
    /// are not delivered live.
    pub(super) fn hold(&self, shard: &mut Shard, room: &Arc<str>, client: ClientId, floor: u64) {
        let holds = shard.holds.entry(room.clone()).or_default();
        match holds.iter_mut().find(|(held, _)| *held == client) {
            Some(hold) => hold.1 = floor,
            None => holds.push((client, floor)),
        }
    }

    /// Removes `client`'s floor in `room`.
    pub(super) fn unhold(&self, shard: &mut Shard, room: &str, client: ClientId) {
        if let Some(holds) = shard.holds.get_mut(room) {
            holds.retain(|(held, _)| *held != client);
            if holds.is_empty() {
                shard.holds.remove(room);
            }
        }
    }

    /// The members of `room` a logged message `id` must skip; floors it
    /// passes are dropped (deliveries come in id order, so none later can
    /// be at or below them). `None` when nobody is held (the usual case).
    pub(super) fn skipping(&self, shard: &mut Shard, room: &str, id: u64) -> Option<Vec<ClientId>> {
        let holds = shard.holds.get_mut(room)?;
        let skip: Vec<ClientId> = holds
            .iter()
            .filter(|(_, floor)| id <= *floor)
            .map(|(client, _)| *client)
            .collect();
        holds.retain(|(_, floor)| id <= *floor);
        if holds.is_empty() {
            shard.holds.remove(room);
        }
        Some(skip)
    }
}

impl RoomHistory {
    fn new(now: Instant) -> Self {
        RoomHistory {
            messages: VecDeque::new(),
            member_seen: now,
            evicted: 0,
        }
    }
}

/// The shards of several rooms, locked (see [`History::lock_rooms`]).
pub(super) struct Locked<'a> {
    history: &'a History,
    guards: Vec<(usize, MutexGuard<'a, Shard>)>,
}

impl Locked<'_> {
    /// The locked shard of `room` (one of the rooms it was locked for).
    pub(super) fn shard(&self, room: &str) -> Option<&Shard> {
        let index = self.history.index(room);
        self.guards
            .iter()
            .find(|(i, _)| *i == index)
            .map(|(_, guard)| &**guard)
    }

    pub(super) fn shard_mut(&mut self, room: &str) -> Option<&mut Shard> {
        let index = self.history.index(room);
        self.guards
            .iter_mut()
            .find(|(i, _)| *i == index)
            .map(|(_, guard)| &mut **guard)
    }
}
