//! Brokers carry published messages between back-end applications and every
//! roomcast node.
//!
//! A broker publishes `(channel, payload)` and delivers every message it
//! receives to a [`Sink`] (the hub, wired by `server`). It knows nothing of
//! clients or rooms, never panics on a lost connection, and reports whether it
//! is connected for `/readyz`. One file per engine.

pub mod inbox;
pub mod interest;
pub mod memory;
pub mod nats;
pub mod redis;
pub mod sessions;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;

/// Where a broker hands each received message: `(channel, payload)`, and
/// whom it asks first whether a channel is wanted at all, so that a flood to
/// a room nobody here is in costs a lookup, not a copy and a queue slot.
#[derive(Clone)]
pub struct Sink {
    deliver: Arc<Deliver>,
    logged: Option<Arc<DeliverLogged>>,
    wants: Arc<Wants>,
}

type Deliver = dyn Fn(&str, Bytes) + Send + Sync;
type DeliverLogged = dyn Fn(&str, Bytes, Logged) + Send + Sync;
type Wants = dyn Fn(&str) -> bool + Send + Sync;

impl Sink {
    /// A sink that wants every channel.
    pub fn new(deliver: impl Fn(&str, Bytes) + Send + Sync + 'static) -> Sink {
        Sink {
            deliver: Arc::new(deliver),
            logged: None,
            wants: Arc::new(|_: &str| true),
        }
    }

    /// The same sink, wanting only the channels `wants` accepts. A false
    /// positive costs a delivery that finds nobody; a false negative loses.
    pub fn wanting(self, wants: impl Fn(&str) -> bool + Send + Sync + 'static) -> Sink {
        Sink {
            wants: Arc::new(wants),
            ..self
        }
    }

    /// The same sink, handing logged messages (an engine whose log numbers
    /// each message as it delivers it: JetStream) to `logged`.
    pub fn with_logged(self, logged: impl Fn(&str, Bytes, Logged) + Send + Sync + 'static) -> Sink {
        Sink {
            logged: Some(Arc::new(logged)),
            ..self
        }
    }

    pub fn deliver(&self, channel: &str, payload: Bytes) {
        (self.deliver)(channel, payload)
    }

    /// Delivers a logged message; a sink with no place for them delivers it
    /// as a plain one.
    pub fn deliver_logged(&self, channel: &str, payload: Bytes, at: Logged) {
        match &self.logged {
            Some(logged) => logged(channel, payload, at),
            None => (self.deliver)(channel, payload),
        }
    }

    pub fn wants(&self, channel: &str) -> bool {
        (self.wants)(channel)
    }
}

/// How long before or after a client's id an entry of another room cannot
/// be told received or not, where rooms reach a node on separate
/// connections or subscriptions (Redis Cluster: another master's clock and
/// connection; NATS: each room's own subscription task, which a loaded node
/// runs milliseconds apart): a room resumed from another room's id with an
/// entry this near is told reset (docs/RECOVERY.md, "The resume decision").
pub const REORDER_WINDOW_MS: u64 = 2_000;

/// How much of each room an engine's log keeps (`--history-size`,
/// `--history-ttl-s`).
#[derive(Debug, Clone, Copy)]
pub struct LogBounds {
    /// Entries per room (Redis `MAXLEN ~`, JetStream `max_msgs_per_subject`).
    pub max_len: usize,
    /// Redis: how long a room's stream outlives its last write; JetStream:
    /// how long each message is kept (`max_age`).
    pub ttl: std::time::Duration,
}

/// Where a logged message sits in its engine's log, as the broker read it
/// with the message: the hub gives it its id (docs/RECOVERY.md, "The id").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Logged {
    /// The life of the log.
    pub epoch: u64,
    /// The message's number in the log.
    pub n: u64,
    /// The number of the room's previous entry (0: none).
    pub prev: u64,
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a publish failed.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("broker is not connected: {0}")]
    Unavailable(String),
    #[error("broker refused the publish: {0}")]
    Refused(String),
    /// The broker's settings cannot work (e.g. a malformed URL); at start only.
    #[error("invalid broker configuration: {0}")]
    Config(String),
}

impl BrokerError {
    /// Stable code for error replies.
    pub fn code(&self) -> &'static str {
        match self {
            BrokerError::Unavailable(_) => "broker_unavailable",
            BrokerError::Refused(_) => "broker_refused",
            BrokerError::Config(_) => "broker_config",
        }
    }
}

pub trait Broker: Send + Sync + 'static {
    /// Publishes to every node subscribed to `channel` (this one included).
    fn publish<'a>(
        &'a self,
        channel: &'a str,
        payload: Bytes,
    ) -> BoxFuture<'a, Result<(), BrokerError>>;

    /// True while the broker can both receive and publish.
    fn is_ready(&self) -> bool;

    /// The engine's name, for logs and `/readyz`.
    fn name(&self) -> &'static str;

    /// The parts of the engine that fail on their own (a Redis Cluster's
    /// masters): each one's name and whether this node's path to it is up.
    /// Empty for an engine reached through one connection.
    fn shards(&self) -> Vec<(String, bool)> {
        Vec::new()
    }

    /// Whether [`Broker::hold_lease`] works on this engine; only then may
    /// it be called.
    fn keeps_leases(&self) -> bool {
        false
    }

    /// Takes the lease `name` for `holder`, or renews it if `holder` has it,
    /// for `ttl` from now: `Ok(true)` if `holder` holds it now, `Ok(false)`
    /// if another holder does. The lease lives in the engine, so every node
    /// sees the same holder; it lapses `ttl` after its last renewal. By
    /// default, for an engine that is one process (memory), always held.
    fn hold_lease<'a>(
        &'a self,
        _name: &'a str,
        _holder: &'a str,
        _ttl: std::time::Duration,
    ) -> BoxFuture<'a, Result<bool, BrokerError>> {
        Box::pin(std::future::ready(Ok(true)))
    }

    /// Gives the lease `name` up if `holder` has it, so another node need
    /// not wait for it to lapse.
    fn release_lease<'a>(
        &'a self,
        _name: &'a str,
        _holder: &'a str,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(std::future::ready(Ok(())))
    }
}
