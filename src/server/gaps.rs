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
//! log cannot fill the hole (trimmed, lost, unreadable), or the queue
//! passes its cap before the read answers, the room's members get a reset,
//! then the queue: never a silent gap.
//!
//! Owns: the rooms being filled and their queues. Never: awaits in the
//! delivery path (the read runs in its own task, bounded by the engine's
//! timeout), holds more than [`MAX_QUEUED`] messages or
//! [`MAX_QUEUED_BYTES`] of payload for one room, or fills a room this node
//! keeps no history of (no member here to miss anything).
//!
//! Called by the log sinks of the Redis engines and NATS in `server`.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::hub::{Hub, LogId, LogPosition};
use crate::shutdown::Shutdown;
use crate::telemetry;

/// Messages one room may queue behind its fill: a room at 2,000 messages/s
/// during a read that takes the engine's whole 5 s timeout.
const MAX_QUEUED: usize = 10_000;

/// Payload bytes one room may queue behind its fill.
const MAX_QUEUED_BYTES: usize = 8 << 20;

/// Queued while its room is filled.
struct Pending {
    payload: Bytes,
    id: u64,
    log: LogPosition,
}

/// One room's fill in flight and what arrived meanwhile.
struct Filling {
    /// Which fill this is: a read that answers after its fill was given up
    /// (the queue's cap) must not take a later hole's queue.
    fill: u64,
    queue: Vec<Pending>,
    bytes: usize,
}

impl Filling {
    fn push(&mut self, pending: Pending) {
        self.bytes += pending.payload.len();
        self.queue.push(pending);
    }

    fn is_full(&self) -> bool {
        self.queue.len() > MAX_QUEUED || self.bytes > MAX_QUEUED_BYTES
    }
}

/// The fills in flight, and how many were begun (each fill's number).
#[derive(Default)]
struct Rooms {
    filling: HashMap<Arc<str>, Filling>,
    fills: u64,
}

/// The rooms whose live hole is being filled.
pub(super) struct Gaps {
    hub: Arc<Hub>,
    shutdown: Shutdown,
    rooms: Mutex<Rooms>,
}

impl Gaps {
    pub(super) fn new(hub: Arc<Hub>, shutdown: Shutdown) -> Arc<Gaps> {
        Arc::new(Gaps {
            hub,
            shutdown,
            rooms: Mutex::new(Rooms::default()),
        })
    }

    /// Deliveries of a room are made under this lock: what a fill releases
    /// is ordered with what arrives live.
    fn lock(&self) -> std::sync::MutexGuard<'_, Rooms> {
        // Every update leaves the map consistent.
        self.rooms
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Delivers a logged message of `room`, or queues it behind a fill.
    pub(super) fn deliver(self: &Arc<Self>, room: &str, payload: Bytes, id: u64, log: LogPosition) {
        let pending = Pending { payload, id, log };
        let mut rooms = self.lock();
        if let Some(filling) = rooms.filling.get_mut(room) {
            filling.push(pending);
            if filling.is_full() {
                let queued = filling.queue.len();
                let given_up = rooms.filling.remove(room).map(|f| f.queue);
                tracing::warn!(
                    room,
                    queued,
                    "a hole in the room's live messages: too much arrived while the log was read; its members are told to reset"
                );
                telemetry::live_gap("overflow");
                self.reset(room, given_up.unwrap_or_default());
            }
            return;
        }
        let hole = self
            .hub
            .last_logged(room)
            .filter(|last| last.epoch == log.epoch && log.prev > last.n);
        let (Some(last), Some(_)) = (hole, self.hub.log()) else {
            self.hub
                .deliver_logged(room, pending.payload, pending.id, pending.log);
            return;
        };
        rooms.fills += 1;
        let fill = rooms.fills;
        let room: Arc<str> = Arc::from(room);
        let mut filling = Filling {
            fill,
            queue: Vec::new(),
            bytes: 0,
        };
        filling.push(pending);
        rooms.filling.insert(room.clone(), filling);
        drop(rooms);
        tracing::info!(%room, after = last.n, "a hole in the room's live messages: filling it from the log");
        let gaps = self.clone();
        self.shutdown
            .spawn(async move { gaps.fill(room, fill, last).await });
    }

    /// Reads `room`'s log after `last`, delivers what it finds, then what
    /// was queued meanwhile (each message once, in id order). Nothing if
    /// the fill was given up meanwhile.
    async fn fill(&self, room: Arc<str>, fill: u64, last: LogId) {
        let read = match self.hub.log() {
            Some(log) => log.read(&room, last).await,
            None => Err("no log".to_string()),
        };
        let mut rooms = self.lock();
        let queue = match rooms.filling.entry(room.clone()) {
            Entry::Occupied(filling) if filling.get().fill == fill => filling.remove().queue,
            _ => return,
        };
        let read = match read {
            Ok(read) if !read.reset => read,
            outcome => {
                let (why, label) = match outcome {
                    Err(error) => (error, "read_error"),
                    Ok(_) => ("the log lost it".to_string(), "lost"),
                };
                tracing::warn!(%room, error = %why, "a hole in the room's live messages cannot be filled: its members are told to reset");
                telemetry::live_gap(label);
                self.reset(&room, queue);
                return;
            }
        };
        telemetry::live_gap("filled");
        let mut up_to = last.n;
        for message in read.missed {
            if let Some(log) = message.log.filter(|_| message.id > up_to) {
                up_to = message.id;
                self.hub
                    .deliver_logged(&room, message.payload, message.id, log);
            }
        }
        self.release(&room, queue, up_to);
    }

    /// Tells `room`'s members its hole cannot be filled, then delivers
    /// `queue`. Called under the lock.
    fn reset(&self, room: &str, queue: Vec<Pending>) {
        self.hub.reset_members(room);
        self.release(room, queue, 0);
    }

    /// Delivers what was queued after `up_to`. Called under the lock.
    fn release(&self, room: &str, queue: Vec<Pending>, up_to: u64) {
        for pending in queue.into_iter().filter(|p| p.id > up_to) {
            self.hub
                .deliver_logged(room, pending.payload, pending.id, pending.log);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::testing::{IDS, drain, entry, member};
    use crate::hub::{LogFuture, LogRead, Member, Message, OutboxLimits, RoomLog};
    use std::time::Duration;
    use tokio::sync::oneshot;

    type Answer = Result<LogRead, String>;

    /// A log whose reads answer what the test sends, and say where they
    /// were asked to start.
    #[derive(Default)]
    struct TestLog {
        answers: Mutex<std::collections::VecDeque<oneshot::Receiver<Answer>>>,
        after: Mutex<Vec<u64>>,
    }

    impl RoomLog for TestLog {
        fn read(&self, _room: &str, after: LogId) -> LogFuture {
            self.after.lock().unwrap().push(after.n);
            let answer = self.answers.lock().unwrap().pop_front();
            Box::pin(async move {
                match answer {
                    Some(answer) => answer.await.unwrap_or_else(|_| Err("no answer".into())),
                    None => Err("an unexpected read".into()),
                }
            })
        }
    }

    struct Fixture {
        gaps: Arc<Gaps>,
        log: Arc<TestLog>,
        shutdown: Shutdown,
        client: Member,
    }

    /// A room "r" with one member who got logged message 10 (epoch 1).
    fn fixture() -> Fixture {
        let hub = Arc::new(Hub::new());
        let log = Arc::new(TestLog::default());
        hub.set_log(log.clone());
        let shutdown = Shutdown::new();
        let gaps = Gaps::new(hub.clone(), shutdown.clone());
        let limits = OutboxLimits {
            max_frames: 4 * MAX_QUEUED,
            max_bytes: 4 * MAX_QUEUED_BYTES,
        };
        let client = member(&hub, &IDS, limits);
        hub.join("r", client.clone());
        let fixture = Fixture {
            gaps,
            log,
            shutdown,
            client,
        };
        fixture.live(10, 0);
        assert_eq!(drain(&fixture.client), ["1:10"]);
        fixture
    }

    impl Fixture {
        /// Logged message `n` of "r" arrives live (its previous: `prev`).
        fn live(&self, n: u64, prev: u64) {
            self.live_sized(n, prev, 0);
        }

        fn live_sized(&self, n: u64, prev: u64, len: usize) {
            let position = LogPosition { epoch: 1, prev };
            self.gaps
                .deliver("r", Bytes::from(vec![b'x'; len]), n, position);
        }

        /// The next read's answer, to be sent (reads take them in turn).
        fn next_read(&self) -> oneshot::Sender<Answer> {
            let (answer, read) = oneshot::channel();
            self.log.answers.lock().unwrap().push_back(read);
            answer
        }

        /// Waits for the fills in flight to end.
        async fn settle(&self) {
            assert!(self.shutdown.wait(Duration::from_secs(10)).await);
        }
    }

    fn found(entries: Vec<Message>) -> Answer {
        Ok(LogRead {
            newest: entries.last().map_or(0, |e| e.id),
            missed: entries,
            epoch: Some(1),
            ..LogRead::default()
        })
    }

    #[tokio::test]
    async fn a_hole_is_filled_from_the_log_before_what_came_meanwhile() {
        let f = fixture();
        let answer = f.next_read();
        f.live(30, 20); // 20 was missed live
        f.live(40, 30);
        tokio::task::yield_now().await; // the fill's task reads
        assert!(drain(&f.client).is_empty(), "queued while the log is read");
        assert_eq!(
            *f.log.after.lock().unwrap(),
            [10],
            "read after the newest kept"
        );
        // The read also saw 30, which is queued: delivered once.
        let _ = answer.send(found(vec![entry(20, 10), entry(30, 20)]));
        f.settle().await;
        assert_eq!(drain(&f.client), ["1:20", "1:30", "1:40"]);
        f.live(50, 40);
        assert_eq!(drain(&f.client), ["1:50"], "live again");
    }

    #[tokio::test]
    async fn a_hole_the_log_cannot_fill_says_reset_then_goes_on() {
        for answer in [Ok(LogRead::reset()), Err("redis: timed out".to_string())] {
            let f = fixture();
            let reply = f.next_read();
            f.live(30, 20);
            f.live(40, 30);
            let _ = reply.send(answer);
            f.settle().await;
            assert_eq!(drain(&f.client), ["reset:r", "1:30", "1:40"]);
            f.live(50, 40);
            assert_eq!(drain(&f.client), ["1:50"]);
        }
    }

    #[tokio::test]
    async fn a_queue_past_its_cap_gives_up_the_fill_with_a_reset() {
        let f = fixture();
        let answer = f.next_read();
        let first = 30;
        let last = first + MAX_QUEUED as u64;
        f.live(first, 20);
        for n in first + 1..last {
            f.live(n, n - 1);
        }
        assert!(drain(&f.client).is_empty(), "{MAX_QUEUED} messages wait");
        f.live(last, last - 1);
        let got = drain(&f.client);
        assert_eq!(got[0], "reset:r", "told at once");
        let ids: Vec<String> = (first..=last).map(|n| format!("1:{n}")).collect();
        assert_eq!(got[1..], ids, "then every queued message, in order");
        // The given-up read's answer changes nothing.
        let _ = answer.send(found(vec![entry(20, 10)]));
        f.settle().await;
        assert!(drain(&f.client).is_empty());
        f.live(last + 1, last);
        assert_eq!(drain(&f.client), [format!("1:{}", last + 1)]);
    }

    #[tokio::test]
    async fn queued_bytes_past_their_cap_give_up_the_fill_too() {
        let f = fixture();
        let answer = f.next_read();
        f.live(30, 20);
        f.live_sized(40, 30, MAX_QUEUED_BYTES);
        assert!(drain(&f.client).is_empty(), "at the cap: still filling");
        f.live_sized(50, 40, 1);
        assert_eq!(drain(&f.client), ["reset:r", "1:30", "1:40", "1:50"]);
        let _ = answer.send(found(vec![entry(20, 10)]));
        f.settle().await;
        assert!(drain(&f.client).is_empty());
    }

    #[tokio::test]
    async fn a_new_hole_after_a_given_up_fill_is_filled_on_its_own() {
        let f = fixture();
        let stale = f.next_read();
        f.live(30, 20);
        f.live_sized(40, 30, MAX_QUEUED_BYTES + 1);
        assert_eq!(drain(&f.client), ["reset:r", "1:30", "1:40"]);
        tokio::task::yield_now().await; // the given-up fill reads
        let fresh = f.next_read();
        f.live(60, 50); // a second hole: 50
        // The given-up read answers first, and its answer is dropped: the
        // new fill's queue waits for the new read.
        let _ = stale.send(Ok(LogRead::reset()));
        tokio::task::yield_now().await;
        let _ = fresh.send(found(vec![entry(50, 40)]));
        f.settle().await;
        assert_eq!(drain(&f.client), ["1:50", "1:60"]);
    }
}
