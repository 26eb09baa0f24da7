//! Resuming from a room's log (docs/RECOVERY.md, "Exactly once, from the
//! log or live"): the port through which the hub's users read a log
//! ([`RoomLog`], plugged in by `server` for an engine that has one), what a
//! read found ([`LogRead`]), and a client in a room whose logged messages
//! are held back while its log is read ([`Held`]).
//!
//! The hub never awaits: the transport's connection awaits the read and
//! hands the result to [`Held::release`], which queues, under the room's
//! history lock, what the client missed and what arrived live meanwhile.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use super::{Hub, LogId, LogPosition, Member, Message};

/// A log read in flight.
pub type LogFuture = Pin<Box<dyn Future<Output = Result<LogRead, String>> + Send>>;

/// The rooms' log, as a resuming join reads it.
pub trait RoomLog: Send + Sync {
    /// The entries of `room`'s log after `after`, or a reset when what
    /// came between cannot be known. `Err`: the log could not be read.
    fn read(&self, room: &str, after: LogId) -> LogFuture;
}

/// One entry of a room's log as an engine read it.
#[derive(Debug)]
pub struct LogEntry {
    pub id: u64,
    /// The id of the room's previous entry (0: none or unknown).
    pub prev: u64,
    /// When it was written, ms since the Unix epoch.
    pub ts: u64,
    pub payload: bytes::Bytes,
}

/// What a log read found after a client's id.
#[derive(Debug, Default)]
pub struct LogRead {
    /// The gap cannot be filled: the client is told, then goes on live.
    pub reset: bool,
    /// The entries after the client's id, oldest first (none on a reset).
    pub missed: Vec<Message>,
    /// The newest id the room's log held (0: none).
    pub newest: u64,
    /// The log's epoch, if it has one.
    pub epoch: Option<u64>,
    /// The log numbers each room on its own (Redis Cluster): a client's id
    /// of another room says nothing of this one's, whose live messages may
    /// come with smaller ids; what arrived live is taken after `newest`.
    pub per_room: bool,
}

impl LogRead {
    /// What an engine's read of `room` found in the log of `epoch`
    /// (`None`: there is no log): a reset when there is none or `gap` (the
    /// engine's rules), else `entries` as the room's missed messages.
    pub fn found(
        room: &Arc<str>,
        epoch: Option<u64>,
        gap: bool,
        newest: u64,
        entries: impl IntoIterator<Item = LogEntry>,
    ) -> LogRead {
        match epoch {
            Some(epoch) if !gap => LogRead {
                reset: false,
                missed: entries
                    .into_iter()
                    .map(|entry| Message {
                        room: room.clone(),
                        payload: entry.payload,
                        id: entry.id,
                        ts: entry.ts,
                        log: Some(LogPosition {
                            epoch,
                            prev: entry.prev,
                        }),
                    })
                    .collect(),
                newest,
                epoch: Some(epoch),
                per_room: false,
            },
            _ => LogRead {
                reset: true,
                missed: Vec::new(),
                newest,
                epoch,
                per_room: false,
            },
        }
    }

    /// A read that can only say "reset": no log here, or it was lost.
    pub fn reset() -> LogRead {
        LogRead {
            reset: true,
            ..LogRead::default()
        }
    }
}

/// A member that joined a room with its logged messages held back until
/// [`Held::release`]. Dropped unreleased (the join was refused, the read
/// failed), it lets go of the hold; the caller leaves the room.
pub struct Held {
    pub(super) hub: Arc<Hub>,
    pub(super) room: Arc<str>,
    pub(super) member: Member,
    pub(super) since: LogId,
    pub(super) released: bool,
}

impl Held {
    pub fn room(&self) -> &str {
        &self.room
    }

    /// The id the client resumes after.
    pub fn since(&self) -> LogId {
        self.since
    }

    /// Queues what `read` found, then what arrived live since, and lets
    /// live messages through from there. Returns how many messages were
    /// queued (not counting a reset).
    pub fn release(mut self, read: LogRead) -> usize {
        self.released = true;
        self.hub.release(&self.room, &self.member, self.since, read)
    }
}

impl Held {
    /// Releases the rooms one member holds as one step (a Socket.IO session
    /// coming back, whose one offset covers all its rooms): `reads[i]` is
    /// what `held[i]`'s log read found. Every room must be fillable (no
    /// reset, nothing lost between its read and what came live) and the
    /// whole replay must fit the client's queue, or nothing is queued and
    /// `None` is returned (the holds are let go when dropped;
    /// the caller leaves the rooms). Else what they missed and what came
    /// live since is queued merged in id order, so the offset of any
    /// message the client gets covers every room.
    pub fn release_all(mut held: Vec<Held>, reads: Vec<LogRead>) -> Option<usize> {
        let Some(first) = held.first() else {
            return Some(0);
        };
        let hub = first.hub.clone();
        hub.release_all(&mut held, reads)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if !self.released {
            self.hub.unhold(&self.room, self.member.client);
        }
    }
}
