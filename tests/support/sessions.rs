//! What a Socket.IO session store shared by nodes promises, whatever the
//! engine (`SharedSessions` on Redis: `tests/redis_sessions.rs`; on NATS
//! JetStream: `tests/nats_sessions.rs`): the scenarios each engine's file
//! runs with its nodes' stores and a look at what the engine holds
//! ([`Stored`]).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use roomcast::transports::sessions::{Session, SessionStore, SharedSessions};

use super::eventually;

pub const LIMIT: Duration = Duration::from_secs(10);
pub const PID: &str = "AAAAAAAAAAAAAAAAAAAA";
/// A session a node writes after another: once it is there, so is what
/// the node wrote before (one writer, in order).
pub const LATER: &str = "CCCCCCCCCCCCCCCCCCCC";

pub type Store = Arc<SharedSessions>;

pub fn session(rooms: &[&str]) -> Session {
    Session {
        sid: "BBBBBBBBBBBBBBBBBBBB".into(),
        rooms: rooms.iter().map(|room| room.to_string()).collect(),
    }
}

/// What the engine holds under a `pid`, read behind the store's back.
pub trait Stored {
    /// The session stored under `pid` (`None`: nothing, or deleted).
    fn stored(&self, pid: &str) -> impl Future<Output = Option<Session>>;
}

/// Waits until the session stored under [`PID`] is `expected`.
pub async fn stored_is(engine: &impl Stored, expected: Option<Session>) {
    let found = eventually(LIMIT, || async {
        let now = engine.stored(PID).await;
        (now == expected).then_some(())
    })
    .await;
    assert!(found.is_some(), "stored: {:?}", engine.stored(PID).await);
}

/// A live connection's session as its rooms change: the last write is
/// what is there.
pub async fn live_writes_land_in_order(engine: &impl Stored, a: &Store) {
    a.live(PID, &session(&[]));
    a.live(PID, &session(&["x"]));
    a.live(PID, &session(&["x", "y"]));
    stored_is(engine, Some(session(&["x", "y"]))).await;
}

/// Node A died (kill -9: it saves nothing more); B takes the session
/// [`live_writes_land_in_order`] left, once.
pub async fn taken_once_on_another_node(a: &Store, b: &Store) {
    assert_eq!(b.take(PID).await, Some(session(&["x", "y"])));
    assert_eq!(b.take(PID).await, None, "taken once");
    assert_eq!(a.take(PID).await, None, "by no other node either");
}

/// A lost session is written where a write never happened, but never over
/// the one the node the client came back to wrote since.
pub async fn a_loss_never_overwrites_a_newer_one(engine: &impl Stored, a: &Store, b: &Store) {
    let window = Duration::from_secs(60);
    // A write that never happened (the engine was away): the loss writes it.
    a.save(PID, session(&["x"]), window);
    stored_is(engine, Some(session(&["x"]))).await;

    // The client is back on B (which took the session and wrote its own)
    // before A noticed the loss: A's save must not put the old rooms back.
    assert!(b.take(PID).await.is_some());
    b.live(PID, &session(&["x", "z"]));
    stored_is(engine, Some(session(&["x", "z"]))).await;
    a.save(PID, session(&["x"]), window);
    a.live(LATER, &session(&[]));
    let later = eventually(LIMIT, || async { engine.stored(LATER).await.map(drop) }).await;
    assert!(later.is_some(), "A's later write");
    assert_eq!(engine.stored(PID).await, Some(session(&["x", "z"])));
}

/// With a node's short `window`, the lost session (left by
/// [`a_loss_never_overwrites_a_newer_one`]) is gone once it passed.
pub async fn a_lost_session_expires(engine: &impl Stored, short: &Store, window: Duration) {
    assert!(short.take(PID).await.is_some());
    short.save(PID, session(&["x"]), window);
    stored_is(engine, Some(session(&["x"]))).await;
    stored_is(engine, None).await;
    assert_eq!(short.take(PID).await, None, "expired");
}

/// A live session outlives its `window` (renewed every third of it, at
/// least every second) and a goodbye deletes it.
pub async fn renewed_while_live_then_ended(engine: &impl Stored, a: &Store, window: Duration) {
    a.live(PID, &session(&["x"]));
    stored_is(engine, Some(session(&["x"]))).await;
    // Three windows later it is still there.
    tokio::time::sleep(window * 3).await;
    assert_eq!(engine.stored(PID).await, Some(session(&["x"])));

    a.end(PID);
    stored_is(engine, None).await;
}
