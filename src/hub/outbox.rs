//! A client's bounded outgoing queue.
//!
//! The hub pushes shared, pre-encoded frames; the client's connection task pops
//! them and writes them to its socket. The queue allocates only when something
//! is queued, and is bounded in frames and bytes: when full, the client is a
//! slow consumer and the outbox closes itself with that reason, which wakes the
//! connection task so it can disconnect. Pushing never waits and never blocks
//! other clients.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::disconnect::DisconnectReason;
use crate::telemetry;

/// One frame as it goes on the wire: websocket text/binary message, or one
/// packet of a polling payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Text(Bytes),
    Binary(Bytes),
}

impl Frame {
    /// The frame's content, text or binary.
    pub fn bytes(&self) -> &Bytes {
        match self {
            Frame::Text(b) | Frame::Binary(b) => b,
        }
    }

    pub fn len(&self) -> usize {
        self.bytes().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Bounds of one outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxLimits {
    pub max_frames: usize,
    pub max_bytes: usize,
}

impl Default for OutboxLimits {
    fn default() -> Self {
        OutboxLimits {
            max_frames: 1024,
            max_bytes: 4 * 1024 * 1024,
        }
    }
}

/// The stricter bound of a polling session: a client that stopped polling
/// may hold at most `max_bytes`; one that keeps polling has the bounds of any
/// client, so a burst does not drop it between two polls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StallLimit {
    pub max_bytes: usize,
    /// How long queued frames may wait undrained before the client counts
    /// as stopped.
    pub after: Duration,
}

/// Why a push was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    /// This push overflowed the queue; the outbox is now closed with its
    /// overflow reason (`SlowConsumer`, or `PollingBufferFull` for a polling
    /// session's outbox).
    Full(DisconnectReason),
    /// The outbox was already closed (for the given reason).
    Closed(DisconnectReason),
}

/// Capacity above which an emptied queue gives its memory back, so a burst
/// does not leave an idle connection holding a large buffer.
const SHRINK_ABOVE: usize = 64;

#[derive(Debug)]
pub struct Outbox {
    state: Mutex<State>,
    wake: Notify,
}

#[derive(Debug)]
struct State {
    /// Each frame with the time it was queued (the fan-out's start for hub
    /// messages), for the delivery latency metric.
    frames: VecDeque<(Frame, Instant)>,
    bytes: usize,
    closed: Option<DisconnectReason>,
    /// Frames taken so far; every `LATENCY_SAMPLE`th one is timed.
    taken: u32,
    /// In the state, not beside it, so a polling session that upgrades to a
    /// websocket can take the websocket's bounds ([`Outbox::set_bounds`]).
    limits: OutboxLimits,
    /// A polling session's stall bound (`None` for every other client).
    stall: Option<StallLimit>,
    /// When the frames now queued began to wait: the last drain, or the push
    /// that found the queue empty.
    waiting_since: Instant,
}

/// One frame in this many has its queue latency recorded: a clock read and a
/// histogram update per frame would cost more than the delivery itself.
const LATENCY_SAMPLE: u32 = 64;

impl Outbox {
    pub fn new(limits: OutboxLimits) -> Self {
        Outbox::build(limits, None)
    }

    /// A polling session's outbox: besides `limits`, a client whose frames
    /// have waited longer than `stall.after` is dropped with
    /// `PollingBufferFull` once it holds more than `stall.max_bytes`.
    pub fn polling(limits: OutboxLimits, stall: StallLimit) -> Self {
        Outbox::build(limits, Some(stall))
    }

    fn build(limits: OutboxLimits, stall: Option<StallLimit>) -> Self {
        Outbox {
            state: Mutex::new(State {
                frames: VecDeque::new(),
                bytes: 0,
                closed: None,
                taken: 0,
                limits,
                stall,
                waiting_since: Instant::now(),
            }),
            wake: Notify::new(),
        }
    }

    /// Drops the stall bound: the session upgraded to a websocket, which
    /// drains continuously.
    pub fn end_polling(&self) {
        self.lock().stall = None;
    }

    /// Queues a frame. Overflow closes the outbox as a slow consumer and wakes
    /// the owner, which disconnects; nothing is silently dropped.
    pub fn push(&self, frame: Frame) -> Result<(), PushError> {
        self.push_at(frame, Instant::now())
    }

    /// [`Outbox::push`] for a frame that entered the server at `queued_at`
    /// (the hub passes its fan-out start, sparing a clock read per member).
    pub fn push_at(&self, frame: Frame, queued_at: Instant) -> Result<(), PushError> {
        let mut state = self.lock();
        if let Some(reason) = state.closed {
            return Err(PushError::Closed(reason));
        }
        if let Some(reason) = state.overflow(frame.len(), queued_at) {
            state.close(reason);
            drop(state);
            self.wake.notify_one();
            return Err(PushError::Full(reason));
        }
        if state.frames.is_empty() {
            state.waiting_since = queued_at;
        }
        state.bytes += frame.len();
        state.frames.push_back((frame, queued_at));
        let was_empty = state.frames.len() == 1;
        drop(state);
        if was_empty {
            self.wake.notify_one();
        }
        Ok(())
    }

    /// Whether `frames` more frames of `bytes` in all fit in the queue now. A
    /// resume checks its replay with it before queueing it in one go.
    pub fn has_room(&self, frames: usize, bytes: usize) -> bool {
        let state = self.lock();
        state.closed.is_none()
            && state.frames.len() + frames <= state.limits.max_frames
            && state.bytes + bytes <= state.limits.max_bytes
    }

    /// Takes the next frame, if any.
    pub fn pop(&self) -> Option<Frame> {
        let mut state = self.lock();
        let (frame, queued_at) = state.frames.pop_front()?;
        state.bytes -= frame.len();
        state.sample_latency(queued_at);
        if state.frames.is_empty() && state.frames.capacity() > SHRINK_ABOVE {
            state.frames = VecDeque::new();
        }
        Some(frame)
    }

    /// Moves up to `max` queued frames into `out`; returns how many.
    pub fn drain_into(&self, out: &mut Vec<Frame>, max: usize) -> usize {
        self.drain_up_to(out, max, usize::MAX)
    }

    /// Moves queued frames into `out` while they fit in `max_bytes` (at least
    /// one), at most `max_frames`; returns how many. A GET's batch.
    pub fn drain_up_to(&self, out: &mut Vec<Frame>, max_frames: usize, max_bytes: usize) -> usize {
        let mut state = self.lock();
        let mut n = 0;
        let mut bytes = 0;
        for (frame, _) in state.frames.iter().take(max_frames) {
            if n > 0 && bytes + frame.len() > max_bytes {
                break;
            }
            bytes += frame.len();
            n += 1;
        }
        if state.stall.is_some() {
            state.waiting_since = Instant::now();
        }
        let mut taken = std::mem::take(&mut state.frames);
        for (frame, queued_at) in taken.drain(..n) {
            state.sample_latency(queued_at);
            out.push(frame);
        }
        state.frames = taken;
        state.bytes -= bytes;
        if state.frames.is_empty() && state.frames.capacity() > SHRINK_ABOVE {
            state.frames = VecDeque::new();
        }
        n
    }

    /// Gives the queue's buffer back when nothing waits in it. The connection
    /// tasks call it on their heartbeat: an idle client keeps no buffer from
    /// its last frames (its handshake's, for most), and the delivery path
    /// allocates nothing more (a queue emptied per write would be allocated
    /// again by the next push).
    pub fn release_idle(&self) {
        let mut state = self.lock();
        if state.frames.is_empty() && state.frames.capacity() > 0 {
            state.frames = VecDeque::new();
        }
    }

    /// Closes the outbox: queued frames are dropped, later pushes refused, the
    /// owner woken. The first reason wins.
    pub fn close(&self, reason: DisconnectReason) {
        self.lock().close(reason);
        self.wake.notify_one();
    }

    /// The reason the outbox closed, if it has.
    pub fn closed(&self) -> Option<DisconnectReason> {
        self.lock().closed
    }

    pub fn is_empty(&self) -> bool {
        self.lock().frames.is_empty()
    }

    /// Wakes the owner again. For a second, passing waiter (a long-poll GET
    /// still waiting while its session upgrades to a websocket) that may have
    /// taken a wake-up meant for the new owner. A spare wake-up is harmless.
    pub fn wake_owner(&self) {
        self.wake.notify_one();
    }

    /// Resolves when a frame is queued or the outbox closes. Meant for one
    /// waiter (the connection task); a wake-up that arrives while nobody waits
    /// is kept, so none is lost. Cancel-safe.
    pub async fn ready(&self) {
        loop {
            {
                let state = self.lock();
                if !state.frames.is_empty() || state.closed.is_some() {
                    return;
                }
            }
            self.wake.notified().await;
        }
    }

    /// Resolves once the outbox is closed, with the reason. For the owner
    /// while it writes (when it is not waiting in [`Outbox::ready`]), so a
    /// writer blocked on a peer that stopped reading still sees the close.
    /// Cancel-safe; same single-waiter rule as `ready`.
    pub async fn wait_closed(&self) -> DisconnectReason {
        loop {
            if let Some(reason) = self.lock().closed {
                return reason;
            }
            self.wake.notified().await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the queue inconsistent
        // (every update is a single push/pop), so a poisoned lock is still usable.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl State {
    /// Why a frame of `len` bytes pushed at `now` overflows, if it does.
    fn overflow(&self, len: usize, now: Instant) -> Option<DisconnectReason> {
        if self.frames.len() >= self.limits.max_frames || self.bytes + len > self.limits.max_bytes {
            return Some(DisconnectReason::SlowConsumer);
        }
        let stall = self.stall?;
        let stalled = self.bytes + len > stall.max_bytes
            && !self.frames.is_empty()
            && now.saturating_duration_since(self.waiting_since) > stall.after;
        stalled.then_some(DisconnectReason::PollingBufferFull)
    }

    fn sample_latency(&mut self, queued_at: Instant) {
        self.taken = self.taken.wrapping_add(1);
        if self.taken % LATENCY_SAMPLE == 1 {
            telemetry::delivery_latency(queued_at.elapsed().as_secs_f64());
        }
    }

    fn close(&mut self, reason: DisconnectReason) {
        if self.closed.is_none() {
            self.closed = Some(reason);
        }
        self.frames = VecDeque::new();
        self.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &'static str) -> Frame {
        Frame::Text(Bytes::from_static(s.as_bytes()))
    }

    #[test]
    fn overflow_by_count_closes_as_slow_consumer() {
        let outbox = Outbox::new(OutboxLimits {
            max_frames: 2,
            max_bytes: 1000,
        });
        assert_eq!(outbox.push(text("a")), Ok(()));
        assert_eq!(outbox.push(text("b")), Ok(()));
        assert_eq!(
            outbox.push(text("c")),
            Err(PushError::Full(DisconnectReason::SlowConsumer))
        );
        assert_eq!(outbox.closed(), Some(DisconnectReason::SlowConsumer));
        assert_eq!(outbox.pop(), None, "a closed outbox drops what it held");
        assert_eq!(
            outbox.push(text("d")),
            Err(PushError::Closed(DisconnectReason::SlowConsumer))
        );
    }

    #[test]
    fn overflow_by_bytes_closes() {
        let outbox = Outbox::new(OutboxLimits {
            max_frames: 100,
            max_bytes: 5,
        });
        assert_eq!(outbox.push(text("abc")), Ok(()));
        assert_eq!(
            outbox.push(text("def")),
            Err(PushError::Full(DisconnectReason::SlowConsumer))
        );
    }

    #[test]
    fn a_polling_buffer_overflows_only_once_its_frames_have_waited() {
        let stall = StallLimit {
            max_bytes: 5,
            after: Duration::from_secs(5),
        };
        let outbox = Outbox::polling(OutboxLimits::default(), stall);
        let start = Instant::now();
        // Over the stall bound, but the frames are fresh: the client polls.
        assert_eq!(outbox.push_at(text("abc"), start), Ok(()));
        assert_eq!(outbox.push_at(text("def"), start), Ok(()));
        // A GET drains; new frames start a new wait.
        let mut out = Vec::new();
        assert_eq!(outbox.drain_up_to(&mut out, 100, 100), 2);
        let later = Instant::now();
        assert_eq!(outbox.push_at(text("abc"), later), Ok(()));
        assert_eq!(
            outbox.push_at(text("def"), later + Duration::from_secs(6)),
            Err(PushError::Full(DisconnectReason::PollingBufferFull)),
            "no poll for 6 s and over the bound"
        );

        // After an upgrade only the client bounds apply.
        let outbox = Outbox::polling(OutboxLimits::default(), stall);
        outbox.end_polling();
        outbox.push_at(text("abc"), start).unwrap();
        let late = start + Duration::from_secs(60);
        assert_eq!(outbox.push_at(text("def"), late), Ok(()));
    }

    #[test]
    fn a_batch_stops_at_its_byte_budget_but_takes_at_least_one_frame() {
        let outbox = Outbox::new(OutboxLimits::default());
        for frame in ["abcdef", "gh", "ij", "kl"] {
            outbox.push(Frame::Text(Bytes::from(frame))).unwrap();
        }
        let mut out = Vec::new();
        assert_eq!(outbox.drain_up_to(&mut out, 10, 4), 1, "one oversize frame");
        assert_eq!(outbox.drain_up_to(&mut out, 10, 4), 2);
        assert_eq!(outbox.drain_up_to(&mut out, 10, 4), 1);
        assert_eq!(out.len(), 4);
    }

    #[test]
    fn frames_come_out_in_order_and_bytes_are_released() {
        let outbox = Outbox::new(OutboxLimits {
            max_frames: 3,
            max_bytes: 6,
        });
        for _ in 0..10 {
            outbox.push(text("ab")).unwrap();
            outbox.push(text("cd")).unwrap();
            assert_eq!(outbox.pop(), Some(text("ab")));
            let mut out = Vec::new();
            assert_eq!(outbox.drain_into(&mut out, 10), 1);
            assert_eq!(out, vec![text("cd")]);
        }
        assert!(outbox.closed().is_none());
    }

    #[test]
    fn an_idle_queue_gives_its_buffer_back_and_a_busy_one_keeps_its_frames() {
        let outbox = Outbox::new(OutboxLimits::default());
        let capacity = |outbox: &Outbox| outbox.lock().frames.capacity();
        outbox.push(text("ab")).unwrap();
        outbox.release_idle();
        assert_eq!(outbox.pop(), Some(text("ab")), "a queued frame is kept");
        assert!(
            capacity(&outbox) > 0,
            "drained, the buffer stays for the next frame"
        );
        outbox.release_idle();
        assert_eq!(capacity(&outbox), 0);
        outbox.push(text("cd")).unwrap();
        assert_eq!(outbox.pop(), Some(text("cd")));
    }

    #[tokio::test]
    async fn ready_wakes_on_push_and_on_close() {
        let outbox = std::sync::Arc::new(Outbox::new(OutboxLimits::default()));
        let waiter = tokio::spawn({
            let outbox = outbox.clone();
            async move { outbox.ready().await }
        });
        tokio::task::yield_now().await;
        outbox.push(text("x")).unwrap();
        waiter.await.unwrap();

        outbox.pop();
        let waiter = tokio::spawn({
            let outbox = outbox.clone();
            async move { outbox.ready().await }
        });
        outbox.close(DisconnectReason::ServerShutdown);
        waiter.await.unwrap();
        assert_eq!(outbox.closed(), Some(DisconnectReason::ServerShutdown));
    }

    #[tokio::test]
    async fn wait_closed_ignores_pushes_and_wakes_on_close() {
        let outbox = std::sync::Arc::new(Outbox::new(OutboxLimits::default()));
        let waiter = tokio::spawn({
            let outbox = outbox.clone();
            async move { outbox.wait_closed().await }
        });
        tokio::task::yield_now().await;
        outbox.push(text("x")).unwrap();
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        outbox.close(DisconnectReason::SlowConsumer);
        assert_eq!(waiter.await.unwrap(), DisconnectReason::SlowConsumer);
    }
}
