//! The bounded queue between a broker's socket reader and the fan-out into
//! the hub, so that a slow fan-out never slows reading (Redis would cut a
//! subscriber that falls behind, losing everything in its buffer).
//!
//! Owns: received messages not yet handed to the [`Sink`], bounded in count
//! and bytes; what does not fit is dropped and counted
//! (`roomcast_broker_dropped_total`), never kept. Never: blocks the reader,
//! or holds its lock while delivering.
//!
//! Called by a broker's reader ([`Inbox::push`]) and by the one fan-out task
//! it spawns ([`Inbox::run`]).

use std::collections::VecDeque;
use std::sync::Mutex;

use bytes::Bytes;

use super::Sink;
use crate::telemetry;

/// A received message: the channel's bytes (checked UTF-8) then the payload,
/// in one allocation.
pub struct Received {
    bytes: Bytes,
    channel_len: usize,
}

impl Received {
    /// Copies `channel` and `payload` out of a read buffer.
    pub fn copy(channel: &str, payload: &[u8]) -> Received {
        let mut bytes = Vec::with_capacity(channel.len() + payload.len());
        bytes.extend_from_slice(channel.as_bytes());
        bytes.extend_from_slice(payload);
        Received {
            bytes: Bytes::from(bytes),
            channel_len: channel.len(),
        }
    }

    fn deliver(self, sink: &Sink) {
        // Checked UTF-8 when copied; a failure here cannot happen.
        if let Ok(channel) = std::str::from_utf8(&self.bytes[..self.channel_len]) {
            sink.deliver(channel, self.bytes.slice(self.channel_len..));
        }
    }
}

/// How much may wait for the fan-out.
#[derive(Debug, Clone, Copy)]
pub struct InboxLimits {
    pub messages: usize,
    pub bytes: usize,
}

impl Default for InboxLimits {
    fn default() -> Self {
        InboxLimits {
            messages: 100_000,
            bytes: 64 * 1024 * 1024,
        }
    }
}

pub struct Inbox {
    broker: &'static str,
    limits: InboxLimits,
    queue: Mutex<Queue>,
    ready: tokio::sync::Notify,
}

#[derive(Default)]
struct Queue {
    batches: VecDeque<Vec<Received>>,
    messages: usize,
    bytes: usize,
}

impl Inbox {
    pub fn new(broker: &'static str, limits: InboxLimits) -> Inbox {
        Inbox {
            broker,
            limits,
            queue: Mutex::new(Queue::default()),
            ready: tokio::sync::Notify::new(),
        }
    }

    /// Queues what fits of `batch` (in order) and drops the rest; returns
    /// how many were dropped.
    /// The engine's name, for the metrics of those who feed it.
    pub fn broker(&self) -> &'static str {
        self.broker
    }

    pub fn push(&self, mut batch: Vec<Received>) -> usize {
        if batch.is_empty() {
            return 0;
        }
        let dropped = {
            let mut queue = self.lock();
            let mut fits = 0;
            for received in &batch {
                let bytes = received.bytes.len();
                if queue.messages + 1 > self.limits.messages
                    || queue.bytes + bytes > self.limits.bytes
                {
                    break;
                }
                queue.messages += 1;
                queue.bytes += bytes;
                fits += 1;
            }
            let dropped = batch.len() - fits;
            batch.truncate(fits);
            if fits > 0 {
                queue.batches.push_back(batch);
            }
            dropped
        };
        if dropped > 0 {
            telemetry::broker_dropped(self.broker, dropped);
        }
        self.ready.notify_one();
        dropped
    }

    /// Hands every queued message to `sink`, in order, for ever (the caller
    /// ends it with the broker's shutdown).
    pub async fn run(&self, sink: &Sink) {
        loop {
            let batch = self.lock().batches.pop_front();
            let Some(batch) = batch else {
                self.ready.notified().await;
                continue;
            };
            {
                let mut queue = self.lock();
                queue.messages -= batch.len();
                queue.bytes -= batch.iter().map(|r| r.bytes.len()).sum::<usize>();
            }
            for received in batch {
                received.deliver(sink);
            }
            // Let the reader and the clients' tasks run between batches.
            tokio::task::yield_now().await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        // Every update is a few counters and one push/pop: consistent if poisoned.
        self.queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn batch(range: std::ops::Range<u32>) -> Vec<Received> {
        range
            .map(|i| Received::copy("room", i.to_string().as_bytes()))
            .collect()
    }

    #[tokio::test]
    async fn delivers_in_order_and_drops_what_does_not_fit() {
        let inbox = Arc::new(Inbox::new(
            "test",
            InboxLimits {
                messages: 5,
                bytes: 1 << 20,
            },
        ));
        assert_eq!(inbox.push(batch(0..3)), 0);
        assert_eq!(inbox.push(batch(3..8)), 3, "only two more fit");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let sink = Sink::new(move |channel: &str, payload: Bytes| {
            assert_eq!(channel, "room");
            let _ = tx.send(String::from_utf8(payload.to_vec()).unwrap());
        });
        let running = {
            let inbox = inbox.clone();
            tokio::spawn(async move { inbox.run(&sink).await })
        };
        let mut got = Vec::new();
        for _ in 0..5 {
            got.push(rx.recv().await.unwrap());
        }
        assert_eq!(got, ["0", "1", "2", "3", "4"]);
        // Drained: room again, and a later push still arrives.
        assert_eq!(inbox.push(batch(8..13)), 0);
        for expected in ["8", "9", "10", "11", "12"] {
            assert_eq!(rx.recv().await.unwrap(), expected);
        }
        running.abort();
    }

    #[test]
    fn the_byte_bound_holds_too() {
        let inbox = Inbox::new(
            "test",
            InboxLimits {
                messages: 100,
                bytes: 10,
            },
        );
        // "room" + 4 bytes = 8 per message: one fits in 10 bytes.
        assert_eq!(
            inbox.push(vec![
                Received::copy("room", b"abcd"),
                Received::copy("room", b"efgh"),
            ]),
            1
        );
    }
}
