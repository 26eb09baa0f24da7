//! Where a lost connection's session waits for its client to come back
//! (Socket.IO connection state recovery): the port the transports call,
//! [`SessionStore`], and the node-local store behind it, [`MemorySessions`].
//!
//! A session is what the client gets back when it reconnects within the
//! recovery window with the session's private id: its socket id and its
//! rooms. The messages it missed are not kept here: they come from the
//! rooms' history (the hub's, or the broker's log), read from the position
//! the client reports.
//!
//! Owns nothing of a wire protocol; `server` picks the store: the node-local
//! one, or [`SharedSessions`] in Redis, Redis Cluster or NATS JetStream,
//! which every node shares so a client recovers on any node (`shared`).

mod shared;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub use self::shared::SharedSessions;

/// What survives a lost connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// The socket id the client had (it keeps it when recovered).
    pub sid: String,
    /// The rooms it was in.
    pub rooms: Vec<String>,
}

/// A session lookup; ready at once for the node-local store.
pub type Lookup = Pin<Box<dyn Future<Output = Option<Session>> + Send>>;

/// Keeps sessions of lost connections for a while, by private id (`pid`).
pub trait SessionStore: Send + Sync + std::fmt::Debug + 'static {
    /// Whether the store keeps the sessions of live connections too
    /// ([`Self::live`]): a store shared by the nodes must, since a node
    /// killed at once saves nothing when its connections are lost.
    fn keeps_live(&self) -> bool {
        false
    }

    /// The connection of `pid` is live with `session`: it connected, or its
    /// rooms changed.
    fn live(&self, _pid: &str, _session: &Session) {}

    /// The connection of `pid` was lost: keeps `session` for `window`.
    fn save(&self, pid: &str, session: Session, window: Duration);

    /// The connection of `pid` ended for good (a goodbye, a server
    /// disconnect): nothing to come back to.
    fn end(&self, _pid: &str) {}

    /// Takes the session saved under `pid`, if its window has not passed:
    /// once (a second lookup finds nothing).
    fn take(&self, pid: &str) -> Lookup;
}

/// Expired sessions are swept every this many saves.
const SWEEP_EVERY: u32 = 256;

/// Sessions in this process: for a single node (and every engine until a
/// shared store is plugged in).
#[derive(Debug, Default)]
pub struct MemorySessions {
    inner: Mutex<Saved>,
}

#[derive(Debug, Default)]
struct Saved {
    sessions: HashMap<String, (Session, Instant)>,
    saves: u32,
}

impl MemorySessions {
    fn saved(&self) -> std::sync::MutexGuard<'_, Saved> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Sessions held, expired ones not swept yet included.
    pub fn len(&self) -> usize {
        self.saved().sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl SessionStore for MemorySessions {
    fn save(&self, pid: &str, session: Session, window: Duration) {
        let now = Instant::now();
        let mut saved = self.saved();
        saved.saves = saved.saves.wrapping_add(1);
        if saved.saves.is_multiple_of(SWEEP_EVERY) {
            saved.sessions.retain(|_, (_, until)| *until > now);
        }
        saved
            .sessions
            .insert(pid.to_owned(), (session, now + window));
    }

    fn take(&self, pid: &str) -> Lookup {
        let found = self
            .saved()
            .sessions
            .remove(pid)
            .and_then(|(session, until)| (until > Instant::now()).then_some(session));
        Box::pin(std::future::ready(found))
    }
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt;

    use super::*;

    fn session(sid: &str) -> Session {
        Session {
            sid: sid.into(),
            rooms: vec!["a".into(), "b".into()],
        }
    }

    fn take_now(store: &MemorySessions, pid: &str) -> Option<Session> {
        store.take(pid).now_or_never().flatten()
    }

    #[test]
    fn a_session_is_taken_once_within_its_window() {
        let store = MemorySessions::default();
        store.save("p1", session("s1"), Duration::from_secs(60));
        assert_eq!(take_now(&store, "unknown"), None);
        assert_eq!(take_now(&store, "p1"), Some(session("s1")));
        assert_eq!(take_now(&store, "p1"), None, "taken once");
    }

    #[test]
    fn an_expired_session_is_not_given_back_and_is_swept() {
        let store = MemorySessions::default();
        store.save("old", session("s"), Duration::ZERO);
        assert_eq!(take_now(&store, "old"), None);
        for n in 0..SWEEP_EVERY {
            store.save(&format!("gone{n}"), session("s"), Duration::ZERO);
        }
        assert!(store.len() < SWEEP_EVERY as usize, "swept: {}", store.len());
    }
}
