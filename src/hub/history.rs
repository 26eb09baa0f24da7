//! Recent messages per room, so a client that reconnects with the last id it
//! saw (`Last-Event-ID` on SSE, `since` on `/ws`) gets what it missed.
//!
//! Bounded per room (`capacity` messages) and in time: a room's history is
//! kept while it has members and for `ttl` after the last one left, so a
//! client that was the room's only member still finds what it missed. The history lock also orders a
//! delivery against a resuming join (see `Hub::join_since`), so the joiner
//! gets every message exactly once: from history or live, never both.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::Message;

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
}

#[derive(Debug)]
struct RoomHistory {
    messages: VecDeque<Message>,
    /// When a message was last recorded while the room had members.
    member_seen: Instant,
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
        let index = self.hasher.hash_one(room) as usize % SHARDS;
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
            .or_insert_with(|| RoomHistory {
                messages: VecDeque::new(),
                member_seen: now,
            });
        if room.messages.len() == self.capacity {
            room.messages.pop_front();
        }
        room.messages.push_back(message.clone());
        if has_members {
            room.member_seen = now;
        }
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
}
