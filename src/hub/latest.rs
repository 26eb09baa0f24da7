//! The newest message of each cached room (`cache = "last"` rules), sent to
//! a client as soon as it joins: the IoT dashboard that shows a device's
//! last reading at once instead of waiting for its next one.
//!
//! Which rooms are cached is a predicate `server` plugs in once (the
//! security rules; the hub never imports them). A shard's lock orders a
//! delivery against a join (see `Hub::deliver` and `Hub::join_since`): the
//! delivery records the message and snapshots the members under it, the
//! join adds the member and queues the cached message under it, so the
//! joiner gets each message once, as the cached value or live.
//!
//! Bounded: one message per room; a room whose value came in over
//! `ttl` ago is forgotten (swept as a shard grows, and never served).

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use super::Message;

const SHARDS: usize = 32;

/// A shard is swept of expired values when it holds twice as many rooms as
/// after its last sweep, and at least this many: amortized O(1) per record,
/// and never more than twice the live values (plus this) per shard.
const SWEEP_FLOOR: usize = 64;

/// Which rooms keep their newest message.
pub type CachePolicy = Box<dyn Fn(&str) -> bool + Send + Sync>;

pub(super) struct Latest {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    policy: OnceLock<CachePolicy>,
    ttl: Duration,
}

impl std::fmt::Debug for Latest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Latest")
            .field("policy", &self.policy.get().is_some())
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

pub(super) struct Shard {
    rooms: HashMap<Arc<str>, (Message, Instant)>,
    sweep_at: usize,
}

impl Default for Shard {
    fn default() -> Self {
        Shard {
            rooms: HashMap::new(),
            sweep_at: SWEEP_FLOOR,
        }
    }
}

impl Latest {
    pub(super) fn new(ttl: Duration) -> Self {
        Latest {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            hasher: RandomState::new(),
            policy: OnceLock::new(),
            ttl,
        }
    }

    /// Sets the policy (once). Returns false if one was set.
    pub(super) fn set_policy(&self, policy: CachePolicy) -> bool {
        self.policy.set(policy).is_ok()
    }

    /// Whether `room` keeps its newest message.
    pub(super) fn caches(&self, room: &str) -> bool {
        self.policy.get().is_some_and(|caches| caches(room))
    }

    /// The shard of `room`, locked, if the room is cached.
    pub(super) fn lock_if_cached(&self, room: &str) -> Option<MutexGuard<'_, Shard>> {
        if !self.caches(room) {
            return None;
        }
        let index = self.hasher.hash_one(room) as usize % SHARDS;
        Some(
            self.shards[index]
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        )
    }

    /// Makes `message` its room's value.
    pub(super) fn record(&self, shard: &mut Shard, message: &Message) {
        let now = Instant::now();
        if shard.rooms.len() >= shard.sweep_at {
            let ttl = self.ttl;
            shard
                .rooms
                .retain(|_, (_, at)| now.duration_since(*at) < ttl);
            shard.sweep_at = (shard.rooms.len() * 2).max(SWEEP_FLOOR);
        }
        shard
            .rooms
            .insert(message.room.clone(), (message.clone(), now));
    }

    /// The room's value, unless it expired.
    pub(super) fn get<'s>(&self, shard: &'s Shard, room: &str) -> Option<&'s Message> {
        shard
            .rooms
            .get(room)
            .filter(|(_, at)| at.elapsed() < self.ttl)
            .map(|(message, _)| message)
    }

    /// Forgets the room's value.
    pub(super) fn forget(&self, shard: &mut Shard, room: &str) {
        shard.rooms.remove(room);
    }
}
