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
    /// The reason an overflow closes with.
    overflow: DisconnectReason,
}

/// One frame in this many has its queue latency recorded: a clock read and a
/// histogram update per frame would cost more than the delivery itself.
const LATENCY_SAMPLE: u32 = 64;

impl Outbox {
    pub fn new(limits: OutboxLimits) -> Self {
        Outbox::with_overflow(limits, DisconnectReason::SlowConsumer)
    }

    /// An outbox whose overflow closes it with `overflow` rather than
    /// `SlowConsumer` (a polling session's buffer: `PollingBufferFull`).
    pub fn with_overflow(limits: OutboxLimits, overflow: DisconnectReason) -> Self {
        Outbox {
            state: Mutex::new(State {
                frames: VecDeque::new(),
                bytes: 0,
                closed: None,
                taken: 0,
                limits,
                overflow,
            }),
            wake: Notify::new(),
        }
    }

    /// Replaces the bounds and overflow reason for later pushes (what is
    /// queued stays). Used when a polling session upgrades to a websocket.
    pub fn set_bounds(&self, limits: OutboxLimits, overflow: DisconnectReason) {
        let mut state = self.lock();
        state.limits = limits;
        state.overflow = overflow;
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
        if state.frames.len() >= state.limits.max_frames
            || state.bytes + frame.len() > state.limits.max_bytes
        {
            let reason = state.overflow;
            state.close(reason);
            drop(state);
            self.wake.notify_one();
            return Err(PushError::Full(reason));
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
        let mut state = self.lock();
        let n = state.frames.len().min(max);
        let mut taken = std::mem::take(&mut state.frames);
        for (frame, queued_at) in taken.drain(..n) {
            state.sample_latency(queued_at);
            out.push(frame);
        }
        state.frames = taken;
        state.bytes = state.frames.iter().map(|(frame, _)| frame.len()).sum();
        if state.frames.is_empty() && state.frames.capacity() > SHRINK_ABOVE {
            state.frames = VecDeque::new();
        }
        n
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
    fn a_polling_buffer_overflows_with_its_own_reason_until_rebound() {
        let small = OutboxLimits {
            max_frames: 100,
            max_bytes: 5,
        };
        let outbox = Outbox::with_overflow(small, DisconnectReason::PollingBufferFull);
        assert_eq!(outbox.push(text("abc")), Ok(()));
        assert_eq!(
            outbox.push(text("def")),
            Err(PushError::Full(DisconnectReason::PollingBufferFull))
        );
        assert_eq!(outbox.closed(), Some(DisconnectReason::PollingBufferFull));

        // After an upgrade: the websocket's bounds and reason apply.
        let outbox = Outbox::with_overflow(small, DisconnectReason::PollingBufferFull);
        outbox.push(text("abc")).unwrap();
        outbox.set_bounds(OutboxLimits::default(), DisconnectReason::SlowConsumer);
        assert_eq!(outbox.push(text("def")), Ok(()), "the larger bound holds");
        let one = OutboxLimits {
            max_frames: 1,
            max_bytes: 100,
        };
        outbox.set_bounds(one, DisconnectReason::SlowConsumer);
        assert_eq!(
            outbox.push(text("g")),
            Err(PushError::Full(DisconnectReason::SlowConsumer))
        );
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
