//! Holes in a room's live logged messages, filled from the log
//! (docs/RECOVERY.md, "Holes in live delivery").
//!
//! Each logged message names the room's previous entry (`prev`). When one
//! arrives whose `prev` is newer than the newest logged message this node
//! keeps for the room, the node missed messages live (its subscription was
//! away: a reconnect, or on Redis Cluster a failover, where the new master
//! published before this node had subscribed there). The room's messages
//! are then queued here, in order, while the log is read after the newest
//! one kept; what the read finds is delivered first, then the queue. If the
//! log cannot fill the hole (trimmed, lost), the room's members get a reset.
//!
//! Owns: the rooms being filled and their queues. Never: awaits in the
//! delivery path (the read runs in its own task, bounded by the engine's
//! timeout), or fills a room this node keeps no history of (no member here
//! to miss anything).
//!
//! Called by the Redis engines' log sink in `server`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::hub::{Hub, LogId, LogPosition};
use crate::shutdown::Shutdown;

/// Queued while its room is filled.
struct Pending {
    payload: Bytes,
    id: u64,
    log: LogPosition,
}

/// The rooms whose live hole is being filled.
pub(super) struct Gaps {
    hub: Arc<Hub>,
    shutdown: Shutdown,
    filling: Mutex<HashMap<Arc<str>, Vec<Pending>>>,
}

impl Gaps {
    pub(super) fn new(hub: Arc<Hub>, shutdown: Shutdown) -> Arc<Gaps> {
        Arc::new(Gaps {
            hub,
            shutdown,
            filling: Mutex::new(HashMap::new()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Vec<Pending>>> {
        // Every update leaves the map consistent.
        self.filling
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Delivers a logged message of `room`, or queues it behind a fill.
    pub(super) fn deliver(self: &Arc<Self>, room: &str, payload: Bytes, id: u64, log: LogPosition) {
        let mut filling = self.lock();
        if let Some(queue) = filling.get_mut(room) {
            queue.push(Pending { payload, id, log });
            return;
        }
        let hole = self
            .hub
            .last_logged(room)
            .filter(|last| last.epoch == log.epoch && log.prev > last.n);
        let (Some(last), Some(_)) = (hole, self.hub.log()) else {
            self.hub.deliver_logged(room, payload, id, log);
            return;
        };
        let room: Arc<str> = Arc::from(room);
        filling.insert(room.clone(), vec![Pending { payload, id, log }]);
        drop(filling);
        tracing::info!(%room, after = last.n, "a hole in the room's live messages: filling it from the log");
        let gaps = self.clone();
        self.shutdown
            .spawn(async move { gaps.fill(room, last).await });
    }

    /// Reads `room`'s log after `last`, delivers what it finds, then what
    /// was queued meanwhile (each message once, in id order).
    async fn fill(&self, room: Arc<str>, last: LogId) {
        let read = match self.hub.log() {
            Some(log) => log.read(&room, last).await,
            None => Err("no log".to_string()),
        };
        let mut filling = self.lock();
        let queue = filling.remove(&room).unwrap_or_default();
        let mut up_to = last.n;
        match read {
            Ok(read) if !read.reset => {
                for message in read.missed {
                    if let Some(log) = message.log.filter(|_| message.id > up_to) {
                        up_to = message.id;
                        self.hub
                            .deliver_logged(&room, message.payload, message.id, log);
                    }
                }
            }
            outcome => {
                let why = outcome.err().unwrap_or_else(|| "the log lost it".into());
                tracing::warn!(%room, error = %why, "a hole in the room's live messages cannot be filled: its members are told to reset");
                self.hub.reset_members(&room);
                up_to = 0;
            }
        }
        for pending in queue.into_iter().filter(|p| p.id > up_to) {
            self.hub
                .deliver_logged(&room, pending.payload, pending.id, pending.log);
        }
    }
}
