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
use support::sessions::{LIMIT, PID, Stored, session};
use support::{init_logs, sessions, wait_until};

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

/// The bucket's value under `pid`, as JSON.
impl Stored for NatsServer {
    async fn stored(&self, pid: &str) -> Option<Session> {
        let client = async_nats::connect(self.url()).await.unwrap();
        let kv = async_nats::jetstream::new(client)
            .get_key_value(BUCKET)
            .await
            .ok()?;
        let value = kv.get(pid).await.unwrap()?;
        Some(serde_json::from_slice(&value).unwrap())
    }
}

#[tokio::test]
async fn a_live_session_is_taken_once_on_another_node_with_its_latest_rooms() {
    let nats = NatsServer::jetstream().await;
    let shutdown = Shutdown::new();
    let window = Duration::from_secs(60);
    let a = node(&nats, window, &shutdown).await;
    let b = node(&nats, window, &shutdown).await;
    sessions::live_writes_land_in_order(&nats, &a).await;
    sessions::taken_once_on_another_node(&a, &b).await;
}

#[tokio::test]
async fn a_lost_session_lasts_its_window_and_never_overwrites_a_newer_one() {
    let nats = NatsServer::jetstream().await;
    let shutdown = Shutdown::new();
    let window = Duration::from_secs(60);
    let a = node(&nats, window, &shutdown).await;
    let b = node(&nats, window, &shutdown).await;
    sessions::a_loss_never_overwrites_a_newer_one(&nats, &a, &b).await;

    // The bucket's max age, brought to this node's window by its first write.
    let short = Duration::from_millis(500);
    sessions::a_lost_session_expires(&nats, &node(&nats, short, &shutdown).await, short).await;
}

#[tokio::test]
async fn a_live_session_is_renewed_while_it_lives_and_a_goodbye_deletes_it() {
    let nats = NatsServer::jetstream().await;
    let shutdown = Shutdown::new();
    let window = Duration::from_millis(1500);
    let a = node(&nats, window, &shutdown).await;
    sessions::renewed_while_live_then_ended(&nats, &a, window).await;
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
