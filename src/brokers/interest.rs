//! Which rooms this node's broker connection must be subscribed to, for the
//! engines that subscribe per room (Redis per-room mode, NATS).
//!
//! Owns: per room, whether it has members here, whether the subscription was
//! sent on the current connection, and its confirmation (a `watch` the joins
//! await); the linger (`--history-ttl-s`) after a room's last member left,
//! before it is unsubscribed, so a room that comes back, or whose history
//! still fills, does not churn; and the batches the engine sends.
//!
//! Never: talks to an engine or awaits (the engine's connection task asks for
//! [`Interest::batch`] when [`Interest::changed`] fires, sends it, and reports
//! confirmations and losses back); knows clients.
//!
//! Called by the hub through `server`'s `RoomInterest` adapter (first member, last member, ready), and by the engines.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, watch};

use crate::telemetry;

/// A room's subscription as [`Interest::ready`] sees it (`server` turns it
/// into the hub's `Ready`: brokers never import the hub).
pub enum Subscribed {
    /// Confirmed, or nothing to wait for.
    Now,
    /// This engine may not subscribe the room: why.
    Refused(String),
    /// Resolves once the subscription is confirmed or the room is dropped.
    Later(Pin<Box<dyn Future<Output = ()> + Send>>),
}

/// What the hub's adapter in `server` needs of a broker's room tracking:
/// one [`Interest`], or a Redis Cluster's trackers routed by slot.
pub trait Tracker: Send + Sync + std::fmt::Debug {
    /// `room` has a member here: subscribe it (unless it still is).
    fn want(&self, room: &str);
    /// `room` has no member here any more: unsubscribe it after the linger.
    fn unwant(&self, room: &str);
    /// The room's subscription, for a join to wait on.
    fn ready(&self, room: &str) -> Subscribed;
}

impl Tracker for Interest {
    fn want(&self, room: &str) {
        Interest::want(self, room)
    }

    fn unwant(&self, room: &str) {
        Interest::unwant(self, room)
    }

    fn ready(&self, room: &str) -> Subscribed {
        Interest::ready(self, room)
    }
}

/// A room's state on this node.
struct Room {
    /// It has members here.
    wanted: bool,
    /// The engine was asked to subscribe on the current connection (and not
    /// to unsubscribe since).
    sent: bool,
    /// True once the engine confirmed the subscription; joins wait for it.
    confirmed: watch::Sender<bool>,
    /// When the subscription was asked for, for the subscribe-time histogram.
    asked: Instant,
    /// When its last member left (`None` while it has members): the linger
    /// entry that matches this one is the live one.
    left_at: Option<Instant>,
}

#[derive(Default)]
struct Rooms {
    rooms: HashMap<Arc<str>, Room>,
    /// Rooms whose state changed since the last batch.
    dirty: Vec<Arc<str>>,
    /// Rooms whose last member left, oldest first (the linger is one
    /// duration, so this stays in time order).
    lingering: VecDeque<(Instant, Arc<str>)>,
}

/// Subscribe and unsubscribe commands to send, many rooms per command.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Batch {
    pub subscribe: Vec<Arc<str>>,
    pub unsubscribe: Vec<Arc<str>>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.subscribe.is_empty() && self.unsubscribe.is_empty()
    }
}

/// The tracker, shared by the hub's adapter and the engine (cheap clones).
#[derive(Clone)]
pub struct Interest {
    inner: Arc<Inner>,
}

struct Inner {
    rooms: Mutex<Rooms>,
    changed: Notify,
    linger: Duration,
    broker: &'static str,
    /// Only rooms this accepts may be subscribed (`--pattern` in Redis
    /// per-room mode, the subject rules of NATS): the reason otherwise.
    allowed: Box<Allowed>,
    /// Rooms another subscription of the connection already receives (the
    /// emitter's patterns): never subscribed on their own, or Redis would
    /// send their messages twice.
    covered: Box<dyn Fn(&str) -> bool + Send + Sync>,
}

type Allowed = dyn Fn(&str) -> Result<(), String> + Send + Sync;

impl Interest {
    /// `allowed`: why a room may not be subscribed, if it may not;
    /// `covered`: rooms another subscription already receives.
    pub fn new(
        broker: &'static str,
        linger: Duration,
        allowed: impl Fn(&str) -> Result<(), String> + Send + Sync + 'static,
        covered: impl Fn(&str) -> bool + Send + Sync + 'static,
    ) -> Interest {
        Interest {
            inner: Arc::new(Inner {
                rooms: Mutex::new(Rooms::default()),
                changed: Notify::new(),
                linger,
                broker,
                allowed: Box::new(allowed),
                covered: Box::new(covered),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Rooms> {
        // Every update is small and leaves the map consistent.
        self.inner
            .rooms
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Why `room` cannot be subscribed, if it cannot.
    pub fn check(&self, room: &str) -> Result<(), String> {
        (self.inner.allowed)(room)
    }

    /// `room` has a member here: subscribe it (unless it still is).
    pub fn want(&self, room: &str) {
        if self.check(room).is_err() || (self.inner.covered)(room) {
            return;
        }
        let mut state = self.lock();
        let state = &mut *state;
        match state.rooms.get_mut(room) {
            Some(existing) => {
                existing.wanted = true;
                existing.left_at = None;
            }
            None => {
                let name: Arc<str> = Arc::from(room);
                state.rooms.insert(
                    name.clone(),
                    Room {
                        wanted: true,
                        sent: false,
                        confirmed: watch::Sender::new(false),
                        asked: Instant::now(),
                        left_at: None,
                    },
                );
                state.dirty.push(name);
                self.inner.changed.notify_one();
            }
        }
    }

    /// `room` has no member here any more: unsubscribe it after the linger.
    pub fn unwant(&self, room: &str) {
        let mut state = self.lock();
        let state = &mut *state;
        let Some(name) = state
            .rooms
            .get_key_value(room)
            .map(|(name, _)| name.clone())
        else {
            return;
        };
        if let Some(existing) = state.rooms.get_mut(room)
            && existing.wanted
        {
            let now = Instant::now();
            existing.wanted = false;
            existing.left_at = Some(now);
            state.lingering.push_back((now, name));
        }
    }

    /// Whether `room` is subscribed on a live connection: now, refused (a
    /// room this engine may not subscribe), or once confirmed. A room nobody
    /// here is in (its member left meanwhile) is ready: there is nothing to
    /// wait for.
    pub fn ready(&self, room: &str) -> Subscribed {
        if let Err(message) = self.check(room) {
            return Subscribed::Refused(message);
        }
        let mut confirmed = match self.lock().rooms.get(room) {
            Some(existing) => existing.confirmed.subscribe(),
            None => return Subscribed::Now,
        };
        if *confirmed.borrow_and_update() {
            return Subscribed::Now;
        }
        Subscribed::Later(Box::pin(async move {
            // Err: the room was dropped (its members left): nothing to wait for.
            let _ = confirmed.wait_for(|confirmed| *confirmed).await;
        }))
    }

    /// Fires when a batch may have something to send (a new room, or the
    /// linger of one ran out: see [`Interest::next_expiry`]).
    pub async fn changed(&self) {
        self.inner.changed.notified().await
    }

    /// When the oldest lingering room's linger runs out.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.lock()
            .lingering
            .front()
            .map(|(left, _)| *left + self.inner.linger)
    }

    /// What to send now: rooms wanted and not yet sent; rooms whose linger
    /// ran out while nobody came back. Marks them sent / forgets them.
    pub fn batch(&self) -> Batch {
        let now = Instant::now();
        let mut state = self.lock();
        let state = &mut *state;
        let mut batch = Batch::default();
        for name in std::mem::take(&mut state.dirty) {
            // Wanted, or lingering after a lost connection.
            if let Some(room) = state.rooms.get_mut(&name)
                && !room.sent
            {
                room.sent = true;
                room.asked = now;
                batch.subscribe.push(name);
            }
        }
        while let Some((left, _)) = state.lingering.front() {
            if now.duration_since(*left) < self.inner.linger {
                break;
            }
            let Some((left, name)) = state.lingering.pop_front() else {
                break;
            };
            // A room that came back (and maybe left again later) is not this entry's.
            let expired = state
                .rooms
                .get(&name)
                .is_some_and(|room| room.left_at == Some(left));
            if expired
                && let Some(room) = state.rooms.remove(&name)
                && room.sent
            {
                if *room.confirmed.borrow() {
                    telemetry::broker_subscriptions(self.inner.broker, -1.0);
                }
                batch.unsubscribe.push(name);
            }
        }
        batch
    }

    /// The engine confirmed the subscription of `room` (a channel name as
    /// the engine returned it).
    pub fn confirmed(&self, room: &[u8]) {
        let Ok(room) = std::str::from_utf8(room) else {
            return;
        };
        let state = self.lock();
        if let Some(existing) = state.rooms.get(room)
            && existing.sent
            && !*existing.confirmed.borrow()
        {
            existing.confirmed.send_replace(true);
            telemetry::broker_subscriptions(self.inner.broker, 1.0);
            telemetry::broker_subscribe_seconds(
                self.inner.broker,
                existing.asked.elapsed().as_secs_f64(),
            );
        }
    }

    /// The connection was lost: nothing is subscribed any more. Every room
    /// still wanted (or lingering) is sent again by the next [`Interest::batch`].
    pub fn lost(&self) {
        // Lingering rooms are subscribed again too: their history is still
        // filling; their linger goes on and ends as usual.
        self.dropped_where(|_| true);
        self.resend();
    }

    /// The engine ended (or refused) the subscriptions of the rooms `which`
    /// accepts: they wait, unconfirmed, until [`Interest::resend`] (once the
    /// engine knows where they belong now). Returns how many there were.
    pub fn dropped_where(&self, which: impl Fn(&str) -> bool) -> usize {
        let mut state = self.lock();
        let mut dropped = 0;
        for (name, room) in state.rooms.iter_mut() {
            if room.sent && which(name) {
                room.sent = false;
                dropped += 1;
                if room.confirmed.send_replace(false) {
                    telemetry::broker_subscriptions(self.inner.broker, -1.0);
                }
            }
        }
        dropped
    }

    /// Every room not subscribed now is sent by the next [`Interest::batch`].
    pub fn resend(&self) {
        let mut state = self.lock();
        let state = &mut *state;
        for (name, room) in state.rooms.iter() {
            if !room.sent {
                state.dirty.push(name.clone());
            }
        }
        self.inner.changed.notify_one();
    }

    /// True unless `room` has members here and is not confirmed: a message
    /// published now might not reach them.
    pub fn settled(&self, room: &str) -> bool {
        self.lock()
            .rooms
            .get(room)
            .is_none_or(|existing| *existing.confirmed.borrow())
    }

    /// Takes out the rooms `which` accepts, to be [`Interest::put`] into the
    /// tracker of another connection (a Redis Cluster slot changed master).
    /// Nothing is unsubscribed: the old connection lost them already.
    pub fn take_where(&self, which: impl Fn(&str) -> bool) -> Moving {
        let mut state = self.lock();
        let state = &mut *state;
        let names: Vec<Arc<str>> = state.rooms.keys().filter(|n| which(n)).cloned().collect();
        let mut moving = Vec::with_capacity(names.len());
        for name in names {
            if let Some(mut room) = state.rooms.remove(&name) {
                room.sent = false;
                if room.confirmed.send_replace(false) {
                    telemetry::broker_subscriptions(self.inner.broker, -1.0);
                }
                moving.push((name, room));
            }
        }
        let rooms = &state.rooms;
        state.dirty.retain(|name| rooms.contains_key(name));
        Moving(moving)
    }

    /// Adopts rooms taken from another tracker: each keeps its members'
    /// state, linger and confirmation watch (the joins waiting on it keep
    /// waiting), and is sent by the next [`Interest::batch`].
    pub fn put(&self, moving: Moving) {
        if moving.0.is_empty() {
            return;
        }
        let mut state = self.lock();
        let state = &mut *state;
        for (name, room) in moving.0 {
            if let Some(left) = room.left_at {
                let at = state.lingering.partition_point(|(other, _)| *other <= left);
                state.lingering.insert(at, (left, name.clone()));
            }
            state.dirty.push(name.clone());
            state.rooms.insert(name, room);
        }
        self.inner.changed.notify_one();
    }
}

/// Rooms on their way from one tracker to another ([`Interest::take_where`]).
pub struct Moving(Vec<(Arc<str>, Room)>);

impl Moving {
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Interest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Interest")
            .field("broker", &self.inner.broker)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracker(linger: Duration) -> Interest {
        Interest::new(
            "test",
            linger,
            |room: &str| {
                if room.starts_with("no") {
                    Err("not here".into())
                } else {
                    Ok(())
                }
            },
            |room: &str| room.starts_with("emitter#"),
        )
    }

    fn names(rooms: &[Arc<str>]) -> Vec<&str> {
        rooms.iter().map(|r| &**r).collect()
    }

    #[tokio::test]
    async fn joins_are_batched_and_ready_once_confirmed() {
        let interest = tracker(Duration::from_secs(60));
        for room in ["a", "b", "a", "no-way", "emitter#/#"] {
            interest.want(room);
        }
        let batch = interest.batch();
        assert_eq!(
            names(&batch.subscribe),
            ["a", "b"],
            "once each, allowed only"
        );
        assert!(interest.batch().is_empty(), "sent already");
        let Subscribed::Later(pending) = interest.ready("a") else {
            panic!("a is not confirmed yet");
        };
        assert!(matches!(interest.ready("emitter#/#"), Subscribed::Now));
        assert!(matches!(interest.ready("no-way"), Subscribed::Refused(_)));
        interest.confirmed(b"a");
        tokio::time::timeout(Duration::from_secs(1), pending)
            .await
            .expect("confirmed");
        assert!(matches!(interest.ready("a"), Subscribed::Now));
    }

    #[test]
    fn a_room_is_unsubscribed_after_the_linger_unless_it_comes_back() {
        let interest = tracker(Duration::from_millis(50));
        interest.want("a");
        interest.want("b");
        interest.batch();
        interest.unwant("a");
        interest.unwant("b");
        interest.want("b");
        assert!(interest.batch().is_empty(), "lingering");
        std::thread::sleep(Duration::from_millis(60));
        let batch = interest.batch();
        assert_eq!(names(&batch.unsubscribe), ["a"], "b came back");
        assert!(batch.subscribe.is_empty());
        assert!(interest.next_expiry().is_none());
    }

    #[test]
    fn after_a_lost_connection_every_room_is_sent_again() {
        let interest = tracker(Duration::from_secs(60));
        interest.want("a");
        interest.want("b");
        interest.batch();
        interest.confirmed(b"a");
        interest.unwant("b");
        interest.lost();
        assert!(
            matches!(interest.ready("a"), Subscribed::Later(_)),
            "a waits again"
        );
        let mut again = names(&interest.batch().subscribe)
            .into_iter()
            .map(str::to_owned)
            .collect::<Vec<_>>();
        again.sort();
        assert_eq!(again, ["a", "b"], "lingering b too");
    }
}
