//! The hub's port for interest-based subscriptions: the hub says when a room
//! gets its first member on this node and when it loses its last, and hands
//! a joiner a [`Ready`] that resolves once the broker has confirmed its
//! subscription to the room.
//!
//! Owns only the shape of that signal. The hub never imports a broker and
//! never awaits: `server` plugs a broker's interest tracker in through
//! [`RoomInterest`], and the transports await [`Ready`] (through
//! `transports::Connection::confirm`) before they acknowledge a join. Without a
//! plugged-in tracker (memory broker, Redis pattern mode) every join is
//! ready at once.

use std::future::Future;
use std::pin::Pin;

/// What the hub tells the broker side. `first_member` and `last_member_left`
/// run under the room's lock, so they arrive in the order membership changed;
/// they must not block or call back into the hub.
pub trait RoomInterest: Send + Sync + std::fmt::Debug {
    /// `room` got its first member on this node.
    fn first_member(&self, room: &str);
    /// `room` lost its last member on this node (the broker lingers before
    /// it unsubscribes).
    fn last_member_left(&self, room: &str);
    /// Resolves once this node's subscription to `room` is confirmed.
    fn ready(&self, room: &str) -> Ready;
}

use crate::refusal::Refusal;

/// Why a join cannot be confirmed is a [`Refusal`] (`room_not_served`,
/// `broker_unavailable`): the same code, status and message on every
/// transport, made once where the broker side decides it.
type Pending = Pin<Box<dyn Future<Output = Result<(), Refusal>> + Send>>;

/// A join's confirmation: already known, or a future to await.
pub enum Ready {
    Now(Result<(), Refusal>),
    Later(Pending),
}

impl Ready {
    pub fn now() -> Ready {
        Ready::Now(Ok(()))
    }

    pub fn refused(refusal: Refusal) -> Ready {
        Ready::Now(Err(refusal))
    }

    pub fn later(future: impl Future<Output = Result<(), Refusal>> + Send + 'static) -> Ready {
        Ready::Later(Box::pin(future))
    }
}

impl std::fmt::Debug for Ready {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ready::Now(result) => write!(f, "Ready::Now({result:?})"),
            Ready::Later(_) => f.write_str("Ready::Later"),
        }
    }
}
