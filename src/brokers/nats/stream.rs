//! The room log's JetStream side (docs/RECOVERY.md, "NATS JetStream"):
//! the stream made or brought to this node's bounds when the connection is
//! (re)established and made again as soon as it is deleted, publishes
//! acknowledged once stored, a room's messages read after a sequence, and
//! republished messages handed to the sink with their position.
//!
//! Owned by the broker (`mod.rs`); the settings and rules are in `log.rs`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::context::{
    CreateStreamErrorKind, GetStreamError, GetStreamErrorKind, RequestError, RequestErrorKind,
};
use async_nats::jetstream::message::StreamMessage;
use async_nats::jetstream::stream::DirectGetErrorKind;
use bytes::Bytes;
use futures_util::StreamExt;

use super::log::{self, Entry, Read, Since};
use crate::backoff::Backoff;
use crate::brokers::{BrokerError, LogBounds, REORDER_WINDOW_MS, Sink};
use crate::shutdown::Shutdown;

/// Not known yet (not connected since start).
const UNKNOWN: u8 = 0;
/// The stream is there: logged publishes, republished subjects.
const ON: u8 = 1;
/// The server has no JetStream: plain core NATS.
const OFF: u8 = 2;

/// How long a JetStream request may take.
pub(super) const TIMEOUT: Duration = Duration::from_secs(5);

/// Looks at the stream at most this many times in one `ensure` while other
/// nodes are making it too.
const CONTENDED_TRIES: usize = 8;

pub struct Log {
    client: async_nats::Client,
    js: async_nats::jetstream::Context,
    prefix: String,
    bounds: LogBounds,
    state: AtomicU8,
    /// Republished messages that were not roomcast's (no position).
    malformed: AtomicU64,
}

impl Log {
    pub fn new(client: &async_nats::Client, prefix: &str, bounds: LogBounds) -> Log {
        let mut js = async_nats::jetstream::new(client.clone());
        js.set_timeout(TIMEOUT);
        Log {
            client: client.clone(),
            js,
            prefix: prefix.to_owned(),
            bounds,
            state: AtomicU8::new(UNKNOWN),
            malformed: AtomicU64::new(0),
        }
    }

    /// Whether the stream is this node's log (else: plain core NATS).
    pub fn is_on(&self) -> bool {
        self.state.load(Ordering::SeqCst) == ON
    }

    /// Whether the server turned out to have no JetStream.
    pub fn has_no_jetstream(&self) -> bool {
        self.state.load(Ordering::SeqCst) == OFF
    }

    /// Makes the stream, or brings an existing one to this node's bounds
    /// (keeping its epoch); a server without JetStream turns the log off
    /// (said once). Err: try again.
    ///
    /// Other nodes may create it between our look and our create (after a
    /// delete every node tries at once): theirs wins, ours answers "already
    /// in use" or, while the server still sets theirs up, "error creating
    /// store"; we look again after a jittered pause and take theirs.
    pub async fn ensure(&self) -> Result<(), String> {
        let name = log::stream_name(&self.prefix);
        let mut contended = Backoff::new(Duration::from_millis(50), Duration::from_secs(1));
        for _ in 0..CONTENDED_TRIES {
            match self.js.get_stream(&name).await {
                Ok(stream) => {
                    let have = &stream.cached_info().config;
                    let epoch = log::epoch_of(have, &self.prefix).ok_or_else(|| {
                        format!("stream {name} exists but is not roomcast's room log (no republish to _roomcast.{}.<epoch>.>)", self.prefix)
                    })?;
                    let want = log::stream_config(&self.prefix, self.bounds, epoch);
                    if log::differs(have, &want) {
                        tracing::warn!(stream = %name, "nats: the room log stream's limits differ from this node's --history-size/--history-ttl-s; updating it (the last node to start wins)");
                        self.js
                            .update_stream(&want)
                            .await
                            .map_err(|e| format!("updating stream {name}: {e}"))?;
                    }
                    self.on();
                    return Ok(());
                }
                Err(error) if matches!(error.kind(), GetStreamErrorKind::JetStream(e) if e.error_code() == ErrorCode::STREAM_NOT_FOUND) =>
                {
                    let epoch = now_micros();
                    let config = log::stream_config(&self.prefix, self.bounds, epoch);
                    match self.js.create_stream(config).await {
                        Ok(_) => {
                            tracing::info!(stream = %name, epoch, "nats: created the room log stream");
                            self.on();
                            return Ok(());
                        }
                        Err(error) if matches!(error.kind(), CreateStreamErrorKind::JetStream(e) if another_creates(e.error_code())) =>
                        {
                            tracing::debug!(stream = %name, %error, "nats: another node is making the room log stream; looking again");
                            tokio::time::sleep(contended.next_delay()).await;
                        }
                        Err(error) => return Err(format!("creating stream {name}: {error}")),
                    }
                }
                Err(error) if no_jetstream(&error, self.client.server_info().jetstream) => {
                    if self.state.swap(OFF, Ordering::SeqCst) != OFF {
                        tracing::warn!(
                            "nats: the server has no JetStream (nats-server -js): no room log; plain core NATS, node-local history, at-most-once"
                        );
                    }
                    return Ok(());
                }
                Err(error) => return Err(format!("looking up stream {name}: {error}")),
            }
        }
        Err(format!("stream {name} kept changing while being set up"))
    }

    /// Makes the stream again as soon as JetStream says it was deleted, so
    /// a plain NATS publish is stored and reaches every node without
    /// waiting for a roomcast publish or a reconnect to make it. Every node
    /// hears the advisory and tries at once: [`Log::ensure`] settles them on
    /// one stream, whose new epoch tells clients what was lost (a reset).
    pub fn remake_when_deleted(self: &Arc<Self>, shutdown: &Shutdown) {
        let (log, stop) = (self.clone(), shutdown.clone());
        shutdown.spawn(async move {
            let name = log::stream_name(&log.prefix);
            let subject = format!("$JS.EVENT.ADVISORY.STREAM.DELETED.{name}");
            let mut deleted = match log.client.subscribe(subject).await {
                Ok(deleted) => deleted,
                Err(error) => {
                    tracing::warn!(%error, "nats: cannot watch for the room log stream's deletion; a roomcast publish or a reconnect makes it again");
                    return;
                }
            };
            loop {
                tokio::select! {
                    _ = stop.requested() => return,
                    advisory = deleted.next() => if advisory.is_none() { return },
                }
                tracing::warn!(stream = %name, "nats: the room log stream was deleted; making it again (a new epoch: clients get a reset)");
                let mut backoff = Backoff::new(Duration::from_secs(2), Duration::from_secs(10));
                loop {
                    // 1-2 s, jittered, also the first time: nats-server
                    // (2.9) removes a deleted stream's files after it
                    // advised the delete, and a stream made again within
                    // that took the removal of its own new files (every
                    // store then failed, "error opening msg block file");
                    // and the nodes do not all create at the same instant.
                    tokio::select! {
                        _ = stop.requested() => return,
                        _ = tokio::time::sleep(backoff.next_delay()) => {}
                    }
                    match log.ensure().await {
                        Ok(()) => break,
                        Err(error) => tracing::warn!(%error, "nats: cannot make the room log stream again; retrying"),
                    }
                }
            }
        });
    }

    fn on(&self) {
        if self.state.swap(ON, Ordering::SeqCst) != ON {
            tracing::info!("nats: room log on (JetStream)");
        }
    }

    /// Publishes through JetStream: Ok once the stream stored it. A stream
    /// that is gone (deleted) is made again, and the publish tried once more.
    pub async fn publish(&self, subject: String, payload: Bytes) -> Result<(), BrokerError> {
        match self.publish_once(subject.clone(), payload.clone()).await {
            Err(Gone) => {
                self.ensure().await.map_err(BrokerError::Unavailable)?;
                self.publish_once(subject, payload).await.map_err(|Gone| {
                    BrokerError::Unavailable("the room log stream is gone".into())
                })?
            }
            Ok(result) => result,
        }
    }

    async fn publish_once(
        &self,
        subject: String,
        payload: Bytes,
    ) -> Result<Result<(), BrokerError>, Gone> {
        use async_nats::jetstream::context::PublishErrorKind;
        let unavailable =
            |e: &dyn std::fmt::Display| BrokerError::Unavailable(format!("JetStream publish: {e}"));
        let ack = match self.js.publish(subject, payload).await {
            Ok(ack) => ack,
            Err(error) if error.kind() == PublishErrorKind::StreamNotFound => return Err(Gone),
            Err(error) => return Ok(Err(unavailable(&error))),
        };
        match ack.await {
            Ok(_) => Ok(Ok(())),
            Err(error) if error.kind() == PublishErrorKind::StreamNotFound => Err(Gone),
            Err(error) if error.kind() == PublishErrorKind::MaxPayloadExceeded => Ok(Err(
                BrokerError::Refused(format!("JetStream publish: {error}")),
            )),
            Err(error) => Ok(Err(unavailable(&error))),
        }
    }

    /// Hands a republished message to the sink with its position; one that
    /// carries none (not from the stream) is counted and dropped.
    pub fn deliver(&self, sink: &Sink, message: async_nats::Message) {
        match log::republished_room(&self.prefix, &message.subject, message.headers.as_ref()) {
            Some((room, at)) => sink.deliver_logged(room, message.payload, at),
            None => {
                // Logged on the 1st, 2nd, 4th, 8th... not per message.
                let count = self.malformed.fetch_add(1, Ordering::Relaxed) + 1;
                if count.is_power_of_two() {
                    tracing::warn!(subject = %message.subject, count, "nats: dropped message(s) on the room log's republish subjects without a stream position (subjects under _roomcast. are roomcast's)");
                }
            }
        }
    }

    /// Reads `room`'s messages after sequence `after` (at most the
    /// per-subject limit: a subject holding more after `after` than that
    /// is a gap anyway), then what the gap rules need (log.rs, `is_gap`).
    pub async fn read(&self, room: &str, after: u64) -> Result<Read, String> {
        let name = log::stream_name(&self.prefix);
        let subject = format!("{}.{room}", self.prefix);
        let missing = |e: &GetStreamErrorKind| matches!(e, GetStreamErrorKind::JetStream(e) if e.error_code() == ErrorCode::STREAM_NOT_FOUND);
        let stream = match self.js.get_stream(&name).await {
            Ok(stream) => stream,
            Err(error) if missing(&error.kind()) => return Ok(Read::default()),
            Err(error) => return Err(format!("looking up stream {name}: {error}")),
        };
        // Message `after`: whether it is this room's, and when it was stored.
        let since = match after {
            0 => None,
            _ => match stream.direct_get(after).await {
                Ok(message) => Some(Since {
                    own: message.subject.as_str() == subject,
                    time_ms: time_ms(&message),
                }),
                Err(error) if error.kind() == DirectGetErrorKind::NotFound => None,
                Err(error) => return Err(format!("reading sequence {after}: {error}")),
            },
        };
        // Another room's: read from a window before it too (Read::missed).
        let start = match since {
            Some(Since {
                own: false,
                time_ms,
            }) => {
                let bound = time_ms.saturating_sub(REORDER_WINDOW_MS);
                stored_before(&stream, &self.prefix, after, bound).await?
            }
            _ => after,
        };
        let limit = self.bounds.max_len.max(1);
        let mut entries = Vec::new();
        let mut next = start.saturating_add(1);
        while entries.len() < limit {
            match stream
                .direct_get_next_for_subject(subject.as_str(), Some(next))
                .await
            {
                Ok(message) => {
                    next = message.sequence + 1;
                    entries.push(Entry {
                        seq: message.sequence,
                        time_ms: time_ms(&message),
                        payload: message.payload,
                    });
                }
                Err(error) if error.kind() == DirectGetErrorKind::NotFound => break,
                Err(error) => return Err(format!("reading {subject}: {error}")),
            }
        }
        // After the entries: what was dropped while they were read shows.
        let info_error = |error: &dyn std::fmt::Display| format!("stream {name} info: {error}");
        let mut subjects = stream
            .info_with_subjects(subject.as_str())
            .await
            .map_err(|e| info_error(&e))?;
        let info = subjects.info.clone();
        let mut count = 0;
        while let Some(item) = subjects.next().await {
            let (kept, messages) = item.map_err(|e| info_error(&e))?;
            if kept == subject {
                count = messages as u64;
                break;
            }
        }
        let oldest = match stream.direct_get_first_for_subject(subject.as_str()).await {
            Ok(message) => Some(message.sequence),
            Err(error) if error.kind() == DirectGetErrorKind::NotFound => None,
            Err(error) => return Err(format!("reading {subject}: {error}")),
        };
        let newest = match stream.direct_get_last_for_subject(subject.as_str()).await {
            Ok(message) => message.sequence,
            Err(error) if error.kind() == DirectGetErrorKind::NotFound => 0,
            Err(error) => return Err(format!("reading {subject}: {error}")),
        };
        Ok(Read {
            epoch: log::epoch_of(&info.config, &self.prefix),
            // Not positive: no per-subject limit.
            limit: u64::try_from(info.config.max_messages_per_subject)
                .ok()
                .filter(|&limit| limit > 0)
                .unwrap_or(u64::MAX),
            ages: !info.config.max_age.is_zero(),
            count,
            oldest,
            since,
            newest,
            entries,
        })
    }
}

/// A sequence at or before `before` whose messages up to it were all stored
/// before `bound_ms` (0: none is known to be): stepping back 1, 2, 4...
/// messages, since stored times grow with the sequence.
async fn stored_before(
    stream: &async_nats::jetstream::stream::Stream,
    prefix: &str,
    before: u64,
    bound_ms: u64,
) -> Result<u64, String> {
    let every_room = format!("{prefix}.>");
    let mut back = 1u64;
    while back < before {
        let probe = before - back;
        match stream
            .direct_get_next_for_subject(every_room.as_str(), Some(probe))
            .await
        {
            // The first kept at or after `probe`: nothing between them.
            Ok(message) if time_ms(&message) < bound_ms => return Ok(message.sequence),
            Ok(_) => back = back.saturating_mul(2),
            Err(error) if error.kind() == DirectGetErrorKind::NotFound => return Ok(0),
            Err(error) => return Err(format!("reading sequence {probe}: {error}")),
        }
    }
    Ok(0)
}

/// A stored message's time, ms since the Unix epoch.
fn time_ms(message: &StreamMessage) -> u64 {
    u64::try_from(message.time.unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
}

/// Nobody answers JetStream's API: the server runs without `-js`. One
/// server alone answers "no responders"; a cluster lets the request time
/// out, which only counts when the server said it has no JetStream (its
/// `INFO`): a JetStream cluster electing its leader times out too.
fn no_jetstream(error: &GetStreamError, server_has_jetstream: bool) -> bool {
    use std::error::Error as _;
    let kind = match error.source() {
        Some(source) if error.kind() == GetStreamErrorKind::Request => source
            .downcast_ref::<RequestError>()
            .map(|source| source.kind()),
        _ => None,
    };
    match kind {
        Some(RequestErrorKind::NoResponders) => true,
        Some(RequestErrorKind::TimedOut) => !server_has_jetstream,
        _ => false,
    }
}

/// A create that failed because another node's create of the same stream
/// won or is still being set up: look again.
fn another_creates(code: ErrorCode) -> bool {
    code == ErrorCode::STREAM_NAME_EXIST || code == ErrorCode::STREAM_CREATE
}

/// The stream is not there (deleted): make it again, then retry.
struct Gone;

fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}
