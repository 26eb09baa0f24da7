//! What roomcast acknowledges it delivers, through Redis outages: a real
//! `redis-server` killed and restarted, or frozen (SIGSTOP) and resumed, while
//! the HTTP API is published to continuously and a raw `/ws` client listens.
//! Every publish answered 200 must reach the client (counted by payload id);
//! every other answer must be 503 `broker_unavailable`, and so must a `/ws`
//! publish while the node is not ready.
//!
//! And floods: `redis-benchmark` pipelining PUBLISH into a room nobody is in,
//! against a Redis that cuts pub/sub clients over a small output buffer: the
//! subscriber is back within a second of every cut, and once the flood stops
//! a quiet room's member gets every message.

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::sync::Mutex;
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::Message;

use support::redis::RedisServer;
use support::{Server, next_json};

const ROOM: &str = "outage";

/// The tests of this file run one at a time: each kills, freezes or floods
/// its own Redis on purpose and times recovery, and a flood beside an
/// outage starves the other's recovery on a 2-core machine (seen in CI).
static ONE_AT_A_TIME: Mutex<()> = Mutex::const_new(());
/// Publishers running at once: a publish can be in flight while the other
/// one sees the outage begin or end.
const PUBLISHERS: usize = 2;

/// What the publishers saw: ids answered 200, and how many other answers.
#[derive(Default)]
struct Publishes {
    acknowledged: BTreeSet<u64>,
    refused: u64,
}

/// Publishers that keep POSTing `{"channel":ROOM,"data":<id>}` until stopped.
struct Publishing {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    seen: Arc<Mutex<Publishes>>,
}

impl Publishing {
    fn start(server: &Arc<Server>) -> Publishing {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Publishes::default()));
        let next_id = Arc::new(AtomicU64::new(0));
        let tasks = (0..PUBLISHERS)
            .map(|_| {
                let (server, stop, seen, next_id) =
                    (server.clone(), stop.clone(), seen.clone(), next_id.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let id = next_id.fetch_add(1, Ordering::Relaxed);
                        let body = json!({"channel": ROOM, "data": id}).to_string();
                        let (status, reply) =
                            server.json("POST", "/api/publish", Some("k"), &body).await;
                        let mut seen = seen.lock().await;
                        if status == 200 {
                            seen.acknowledged.insert(id);
                        } else {
                            assert_eq!(
                                (status, reply["error"].as_str()),
                                (503, Some("broker_unavailable")),
                                "publish {id}: {reply}"
                            );
                            seen.refused += 1;
                        }
                        drop(seen);
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                })
            })
            .collect();
        Publishing { stop, tasks, seen }
    }

    async fn acknowledged_count(&self) -> usize {
        self.seen.lock().await.acknowledged.len()
    }

    async fn stop(self) -> Publishes {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.expect("publisher task");
        }
        Arc::try_unwrap(self.seen)
            .ok()
            .expect("publishers ended")
            .into_inner()
    }
}

/// A `/ws` client subscribed to `room`, collecting the ids it receives.
async fn listener(
    server: &Server,
    room: &str,
) -> (tokio::task::JoinHandle<()>, Arc<Mutex<BTreeSet<u64>>>) {
    let url = server.url("/ws").replace("http://", "ws://");
    let (mut ws, _) = connect_async(url).await.expect("websocket handshake");
    let subscribe = json!({"op": "subscribe", "channel": room, "id": 1});
    ws.send(Message::text(subscribe.to_string()))
        .await
        .expect("send");
    assert_eq!(next_json(&mut ws).await, json!({"type": "ok", "id": 1}));
    let received = Arc::new(Mutex::new(BTreeSet::new()));
    let collected = received.clone();
    let task = tokio::spawn(async move {
        while let Some(Ok(frame)) = ws.next().await {
            let Message::Text(text) = frame else { continue };
            let message: serde_json::Value = serde_json::from_str(text.as_str()).expect("JSON");
            if let Some(id) = message["data"].as_u64() {
                collected.lock().await.insert(id);
            }
        }
    });
    (task, received)
}

async fn ready(server: &Server) -> bool {
    server.json("GET", "/readyz", None, "").await.0 == 200
}

async fn wait_ready(server: &Server, limit: Duration) {
    let start = tokio::time::Instant::now();
    while !ready(server).await {
        assert!(start.elapsed() < limit, "not ready within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs `outage` against a ready server while publishing, then publishes on
/// for a while after readiness returns, and checks the accounting.
/// `subscribe` is `--redis-subscribe`: both modes keep the same guarantees.
async fn publish_through(subscribe: &str, outage: impl AsyncFnOnce(&mut RedisServer, &Server)) {
    let _alone = ONE_AT_A_TIME.lock().await;
    support::init_logs();
    let mut redis = RedisServer::start().await;
    let server = Arc::new(
        Server::start(&[
            "--api-key",
            "k",
            "--ws-publish",
            "--redis-url",
            &redis.url(),
            "--redis-subscribe",
            subscribe,
        ])
        .await,
    );
    wait_ready(&server, Duration::from_secs(20)).await;
    let (listening, received) = listener(&server, ROOM).await;
    let publishing = Publishing::start(&server);
    // Some traffic before the outage.
    let before = tokio::time::Instant::now();
    while publishing.acknowledged_count().await < 20 {
        assert!(
            before.elapsed() < Duration::from_secs(10),
            "no publish acknowledged"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    outage(&mut redis, &server).await;
    // Publishing goes on until this node is ready again, and a little after.
    wait_ready(&server, Duration::from_secs(30)).await;
    let recovered = publishing.acknowledged_count().await;
    let after = tokio::time::Instant::now();
    while publishing.acknowledged_count().await < recovered + 50 {
        assert!(
            after.elapsed() < Duration::from_secs(10),
            "publishing did not resume"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let seen = publishing.stop().await;
    assert!(
        seen.refused > 0,
        "the outage refused no publish: was it one?"
    );
    let missing = missing_after_a_while(&seen.acknowledged, &received).await;
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged publishes never reached the subscriber (refused: {}): {missing:?}",
        missing.len(),
        seen.acknowledged.len(),
        seen.refused
    );
    listening.abort();
}

/// The ids of `expected` that have not arrived within 10 s.
async fn missing_after_a_while(
    expected: &BTreeSet<u64>,
    received: &Mutex<BTreeSet<u64>>,
) -> Vec<u64> {
    let missing = || async {
        let received = received.lock().await;
        expected.difference(&received).copied().collect::<Vec<_>>()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut still = missing().await;
    while !still.is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        still = missing().await;
    }
    still
}

/// A `/ws` publish while this node is not ready is refused with the same code.
async fn ws_publish_is_refused(server: &Server) {
    let url = server.url("/ws").replace("http://", "ws://");
    let (mut ws, _) = connect_async(url).await.expect("websocket handshake");
    assert_refused(&ws_publish(&mut ws, 7).await, 7);
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Publishes on `/ws` as request `id` and returns the reply.
async fn ws_publish(ws: &mut Ws, id: u64) -> serde_json::Value {
    let publish = json!({"op": "publish", "channel": ROOM, "data": "x", "id": id});
    ws.send(Message::text(publish.to_string()))
        .await
        .expect("send");
    next_json(ws).await
}

fn assert_refused(reply: &serde_json::Value, id: u64) {
    assert_eq!(
        (&reply["type"], &reply["id"], &reply["code"]),
        (&json!("error"), &json!(id), &json!("broker_unavailable")),
        "{reply}"
    );
}

#[tokio::test]
async fn redis_killed_and_restarted_every_acknowledged_publish_is_delivered() {
    killed_and_restarted("rooms").await;
}

#[tokio::test]
async fn redis_killed_and_restarted_every_acknowledged_publish_is_delivered_pattern_mode() {
    killed_and_restarted("pattern").await;
}

async fn killed_and_restarted(subscribe: &str) {
    publish_through(
        subscribe,
        async |redis: &mut RedisServer, server: &Server| {
            redis.kill();
            let down = tokio::time::Instant::now();
            while ready(server).await {
                assert!(down.elapsed() < Duration::from_secs(5), "still ready");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            ws_publish_is_refused(server).await;
            // Down for a few seconds: the subscriber's backoff grows meanwhile.
            tokio::time::sleep(Duration::from_secs(4).saturating_sub(down.elapsed())).await;
            redis.restart().await;
        },
    )
    .await;
}

#[tokio::test]
async fn redis_frozen_and_resumed_every_acknowledged_publish_is_delivered() {
    frozen_and_resumed("rooms").await;
}

#[tokio::test]
async fn redis_frozen_and_resumed_every_acknowledged_publish_is_delivered_pattern_mode() {
    frozen_and_resumed("pattern").await;
}

async fn frozen_and_resumed(subscribe: &str) {
    publish_through(subscribe, async |redis: &mut RedisServer, _: &Server| {
        redis.freeze(true);
        // Frozen long enough for the health checks to give up on both
        // connections (ping interval + timeout: 10 s by default).
        tokio::time::sleep(Duration::from_secs(14)).await;
        redis.freeze(false);
    })
    .await;
}

const DISCONNECTS_CLOSED: &str =
    r#"roomcast_broker_disconnects_total{broker="redis",reason="closed"}"#;

/// Polls `/readyz` every 10 ms until `stop`; returns the longest stretch it
/// was not ready.
async fn longest_not_ready(server: Arc<Server>, stop: Arc<AtomicBool>) -> Duration {
    let mut longest = Duration::ZERO;
    let mut down_since = None;
    while !stop.load(Ordering::Relaxed) {
        let now = tokio::time::Instant::now();
        if ready(&server).await {
            if let Some(since) = down_since.take() {
                longest = longest.max(now - since);
            }
        } else {
            down_since.get_or_insert(now);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if let Some(since) = down_since {
        longest = longest.max(since.elapsed());
    }
    longest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_cut_by_redis_reconnects_at_once_and_a_quiet_room_loses_nothing_after() {
    let _alone = ONE_AT_A_TIME.lock().await;
    support::init_logs();
    let redis =
        RedisServer::start_with(&["--client-output-buffer-limit", "pubsub 256kb 128kb 1"]).await;
    // Pattern mode: the flood's room has no member, so per room it would
    // not even be read; the seed's PSUBSCRIBE * reads all of it.
    let server = Arc::new(
        Server::start(&[
            "--api-key",
            "k",
            "--redis-url",
            &redis.url(),
            "--redis-subscribe",
            "pattern",
        ])
        .await,
    );
    wait_ready(&server, Duration::from_secs(20)).await;
    let (listening, received) = listener(&server, "quiet").await;
    let cuts_before = server.metric(DISCONNECTS_CLOSED).await;
    let stop = Arc::new(AtomicBool::new(false));
    let watching = tokio::spawn(longest_not_ready(server.clone(), stop.clone()));

    // The flood: 4 connections pipelining 64 PUBLISHes of 2 KiB each, bounded
    // in count (and in time below).
    let payload = "x".repeat(2048);
    let mut flood = tokio::process::Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", &redis.port.to_string()])
        .args(["-c", "4", "-P", "64", "-n", "400000", "-q"])
        .args(["PUBLISH", "noisy", &payload])
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn redis-benchmark (package redis-tools)");
    // Whether or not the flood overruns the buffer here, Redis cuts the
    // subscriber twice during it, as it would one that fell behind.
    let admin = redis::Client::open(redis.url()).unwrap();
    let mut admin = admin.get_multiplexed_async_connection().await.unwrap();
    for cut in 1..=2 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        // The flood may have cut it an instant ago: retry while it reconnects.
        let trying = tokio::time::Instant::now();
        loop {
            let killed: i64 = redis::cmd("CLIENT")
                .arg("KILL")
                .arg("TYPE")
                .arg("pubsub")
                .query_async(&mut admin)
                .await
                .unwrap();
            if killed >= 1 {
                break;
            }
            assert!(
                trying.elapsed() < Duration::from_secs(2),
                "cut {cut}: no subscriber connected to cut for 2 s"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let started = tokio::time::Instant::now();
        while server.metric(DISCONNECTS_CLOSED).await < cuts_before + cut as f64 {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "cut {cut} not counted in {DISCONNECTS_CLOSED}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let flooded = tokio::time::timeout(Duration::from_secs(120), flood.wait()).await;
    assert!(
        matches!(flooded, Ok(Ok(status)) if status.success()),
        "redis-benchmark: {flooded:?}"
    );
    stop.store(true, Ordering::Relaxed);
    let longest = watching.await.expect("readiness watcher");
    let cuts = server.metric(DISCONNECTS_CLOSED).await - cuts_before;
    assert!(cuts >= 2.0, "{cuts} cuts counted");
    assert!(
        longest < Duration::from_secs(1),
        "after a cut the subscriber stayed away {longest:?} ({cuts} cuts)"
    );

    // The flood is over: every message to the quiet room arrives.
    wait_ready(&server, Duration::from_secs(10)).await;
    let mut sent = BTreeSet::new();
    let publishing = tokio::time::Instant::now();
    for id in 0..200u64 {
        // A refusal (the subscriber just cut) is retried; only a 200 counts.
        let body = json!({"channel": "quiet", "data": id}).to_string();
        loop {
            let (status, reply) = server.json("POST", "/api/publish", Some("k"), &body).await;
            if status == 200 {
                break;
            }
            assert_eq!(reply["error"], "broker_unavailable", "{reply}");
            assert!(
                publishing.elapsed() < Duration::from_secs(10),
                "publishes refused for 10 s"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        sent.insert(id);
    }
    let missing = missing_after_a_while(&sent, &received).await;
    assert!(missing.is_empty(), "quiet room lost {missing:?}");
    listening.abort();
}

/// A broker outage is not the client's fault: `/ws` requests refused with
/// `broker_unavailable` (503) do not count toward `--max-protocol-errors`,
/// so a client that keeps publishing through an outage keeps its connection
/// and publishes again once Redis is back.
#[tokio::test]
async fn ws_refusals_during_an_outage_do_not_close_the_client() {
    let _alone = ONE_AT_A_TIME.lock().await;
    support::init_logs();
    let mut redis = RedisServer::start().await;
    let server = Server::start(&[
        "--ws-publish",
        "--max-protocol-errors",
        "2",
        "--redis-url",
        &redis.url(),
    ])
    .await;
    wait_ready(&server, Duration::from_secs(20)).await;
    let url = server.url("/ws").replace("http://", "ws://");
    let (mut ws, _) = connect_async(url).await.expect("websocket handshake");
    redis.kill();
    let down = tokio::time::Instant::now();
    while ready(&server).await {
        assert!(down.elapsed() < Duration::from_secs(5), "still ready");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for id in 1..=5 {
        assert_refused(&ws_publish(&mut ws, id).await, id);
    }
    redis.restart().await;
    wait_ready(&server, Duration::from_secs(20)).await;
    // Ready can come a moment before the publishing connection has noticed
    // the old one died (its first command answers "broken pipe", refused):
    // as in the test above, a refusal is retried; the same client, never
    // closed by its refusals, gets its `ok`.
    let back = tokio::time::Instant::now();
    for id in 6.. {
        let reply = ws_publish(&mut ws, id).await;
        if reply["type"] == "ok" {
            assert_eq!(reply["id"], json!(id), "{reply}");
            break;
        }
        assert_refused(&reply, id);
        assert!(back.elapsed() < Duration::from_secs(10), "refused for 10 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
