//! Socket.IO recovery sessions kept in an engine for every node: the ordered
//! changes a node sends ([`SessionOp`]) and what an engine that keeps them
//! does ([`SessionBackend`]). Each engine's file says how it keeps them
//! (Redis: `redis/sessions.rs`, one key with a TTL, on a cluster on its
//! slot's master, `redis/cluster/sessions.rs`; NATS: `nats/sessions.rs`, a
//! JetStream key-value bucket); `transports::sessions` decides what to write
//! and when, and knows no engine.

use std::time::Duration;

use super::{BoxFuture, BrokerError};

/// A change to the sessions, applied in order with the others of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionOp {
    /// Writes the session, over what was there (its connection is live here).
    Put { pid: Box<str>, value: Vec<u8> },
    /// Renews the session, writing it only if absent (its connection was
    /// lost here; the client may be back elsewhere already, with its own).
    Keep { pid: Box<str>, value: Vec<u8> },
    /// Renews the session if it exists (its connection still lives).
    Renew { pid: Box<str> },
    /// Deletes the session (its connection ended for good).
    Delete { pid: Box<str> },
}

impl SessionOp {
    /// The session it changes.
    pub fn pid(&self) -> &str {
        match self {
            SessionOp::Put { pid, .. }
            | SessionOp::Keep { pid, .. }
            | SessionOp::Renew { pid }
            | SessionOp::Delete { pid } => pid,
        }
    }
}

/// An engine that keeps sessions where every node reads them: a single
/// Redis (`RedisBroker`), a Redis Cluster (`ClusterBroker`), NATS JetStream
/// (`NatsBroker`).
pub trait SessionBackend: Send + Sync + 'static {
    /// The engine's name in log lines.
    fn engine(&self) -> &'static str;

    /// Whether the engine can keep sessions now; false (NATS without
    /// JetStream): the caller keeps them in its own process.
    fn keeps_sessions(&self) -> bool {
        true
    }

    /// Applies `ops` in order (the ops of one session in their order), each
    /// session kept for `ttl` from now.
    fn write_sessions<'a>(
        &'a self,
        ops: &'a [SessionOp],
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), BrokerError>>;

    /// Takes the session under `pid`: read and removed at once, so it is
    /// given out once; `None` if there is none.
    fn take_session<'a>(
        &'a self,
        pid: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, BrokerError>>;
}
