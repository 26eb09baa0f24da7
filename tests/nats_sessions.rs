//! Socket.IO recovery's sessions in a real `nats-server -js`, shared by
//! nodes (`transports::sessions::SharedSessions` on NATS, a JetStream
//! key-value bucket): a live connection's session is written so another node can take
//! it (once) even if this node dies, renewed while it lives; a lost one
//! lasts the window and never overwrites a newer one; a goodbye deletes it.
//! A server without JetStream: sessions stay in the node.

mod support;

use std::sync::Arc;
use std::time::Duration;

use roomcast::brokers::interest::Interest;
use roomcast::brokers::nats::{self, NatsBroker, NatsOptions};
use roomcast::brokers::{Broker, LogBounds, Sink};
use roomcast::shutdown::Shutdown;
use roomcast::transports::sessions::{Session, SessionStore, SharedSessions};

use support::nats::NatsServer;
use support::{eventually, init_logs, wait_until};

const LIMIT: Duration = Duration::from_secs(10);
const PID: &str = "AAAAAAAAAAAAAAAAAAAA";
/// The bucket of the default prefix.
const BUCKET: &str = "roomcast_roomcast_sessions";

/// One node's store (its own broker, with the room log) keeping sessions
/// `window`; once its broker is ready (it knows whether JetStream is there).
async fn node(nats: &NatsServer, window: Duration, shutdown: &Shutdown) -> Arc<SharedSessions> {
    init_logs();
    let options = NatsOptions {
        urls: vec![nats.url()],
        prefix: "roomcast".into(),
        ca_file: None,
        log: Some(LogBounds {
            max_len: 100,
            ttl: Duration::from_secs(60),
        }),
    };
    let interest = Interest::new("nats", Duration::ZERO, nats::check_room, |_: &str| false);
    let sink = Sink::new(|_: &str, _| {});
    let broker: Arc<NatsBroker> = Arc::new(
        nats::start(options, interest, sink, shutdown)
            .await
            .unwrap(),
    );
    let ready = broker.clone();
    wait_until(LIMIT, "the NATS broker is ready", move || ready.is_ready()).await;
    SharedSessions::start(broker, window, shutdown)
}

fn session(rooms: &[&str]) -> Session {
    Session {
        sid: "BBBBBBBBBBBBBBBBBBBB".into(),
        rooms: rooms.iter().map(|room| room.to_string()).collect(),
    }
}

/// The stored session under `pid` (`None`: none, or deleted).
async fn stored_at(nats: &NatsServer, pid: &str) -> Option<Session> {
    let client = async_nats::connect(nats.url()).await.unwrap();
    let kv = async_nats::jetstream::new(client)
        .get_key_value(BUCKET)
        .await
        .ok()?;
    let value = kv.get(pid).await.unwrap()?;
    Some(serde_json::from_slice(&value).unwrap())
}

async fn stored(nats: &NatsServer) -> Option<Session> {
    stored_at(nats, PID).await
}

/// Waits until the stored session is `expected`.
async fn stored_is(nats: &NatsServer, expected: Option<Session>) {
    let found = eventually(LIMIT, || async {
        let now = stored(nats).await;
        (now == expected).then_some(())
    })
    .await;
    assert!(found.is_some(), "stored: {:?}", stored(nats).await);
}

#[tokio::test]
async fn a_live_session_is_taken_once_on_another_node_with_its_latest_rooms() {
    let nats = NatsServer::jetstream().await;
    let shutdown = Shutdown::new();
    let window = Duration::from_secs(60);
    let a = node(&nats, window, &shutdown).await;
    let b = node(&nats, window, &shutdown).await;

    a.live(PID, &session(&[]));
    a.live(PID, &session(&["x"]));
    a.live(PID, &session(&["x", "y"]));
    // Written in order: the last write is what is there.
    stored_is(&nats, Some(session(&["x", "y"]))).await;

    // Node A died (kill -9: it saves nothing more); B takes the session once.
    assert_eq!(b.take(PID).await, Some(session(&["x", "y"])));
    assert_eq!(b.take(PID).await, None, "taken once");
    assert_eq!(a.take(PID).await, None, "by no other node either");
}

#[tokio::test]
async fn a_lost_session_lasts_its_window_and_never_overwrites_a_newer_one() {
    let nats = NatsServer::jetstream().await;
    let shutdown = Shutdown::new();
    let window = Duration::from_secs(60);
    let a = node(&nats, window, &shutdown).await;
    let b = node(&nats, window, &shutdown).await;
    // A write that never happened (NATS was away): the loss writes it.
    a.save(PID, session(&["x"]), window);
    stored_is(&nats, Some(session(&["x"]))).await;

    // The client is back on B (which took the session and wrote its own)
    // before A noticed the loss: A's save must not put the old rooms back.
    assert!(b.take(PID).await.is_some());
    b.live(PID, &session(&["x", "z"]));
    stored_is(&nats, Some(session(&["x", "z"]))).await;
    a.save(PID, session(&["x"]), window);
    let later = "CCCCCCCCCCCCCCCCCCCC";
    a.live(later, &session(&[]));
    // A's writes are in order: once its later one is there, its save ran.
    let written = eventually(LIMIT, || async { stored_at(&nats, later).await.map(drop) }).await;
    assert!(written.is_some());
    assert_eq!(stored(&nats).await, Some(session(&["x", "z"])));

    // A short window (the bucket's max age, brought to it by this node):
    // the lost session is gone once it passed.
    let short = node(&nats, Duration::from_millis(500), &shutdown).await;
    assert!(short.take(PID).await.is_some());
    short.save(PID, session(&["x"]), Duration::from_millis(500));
    stored_is(&nats, Some(session(&["x"]))).await;
    stored_is(&nats, None).await;
    assert_eq!(short.take(PID).await, None, "expired");
}

#[tokio::test]
async fn a_live_session_is_renewed_while_it_lives_and_a_goodbye_deletes_it() {
    let nats = NatsServer::jetstream().await;
    let shutdown = Shutdown::new();
    // Renewed every second (a third of the window, at least 1 s).
    let window = Duration::from_millis(1500);
    let a = node(&nats, window, &shutdown).await;
    a.live(PID, &session(&["x"]));
    stored_is(&nats, Some(session(&["x"]))).await;
    // Three windows later it is still there.
    tokio::time::sleep(window * 3).await;
    assert_eq!(stored(&nats).await, Some(session(&["x"])));

    a.end(PID);
    stored_is(&nats, None).await;
}

#[tokio::test]
async fn without_jetstream_sessions_stay_in_the_node() {
    let nats = NatsServer::start().await;
    let shutdown = Shutdown::new();
    let window = Duration::from_secs(60);
    let a = node(&nats, window, &shutdown).await;
    let b = node(&nats, window, &shutdown).await;
    a.live(PID, &session(&["x"]));
    a.save(PID, session(&["x"]), window);
    assert_eq!(b.take(PID).await, None, "not shared");
    assert_eq!(a.take(PID).await, Some(session(&["x"])), "kept by its node");
    assert_eq!(a.take(PID).await, None, "taken once");
}
