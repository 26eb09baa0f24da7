//! What roomcast acknowledges it delivers, through Redis outages: a real
//! `redis-server` killed and restarted, or frozen (SIGSTOP) and resumed, while
//! the HTTP API is published to continuously and a raw `/ws` client listens.
//! Every publish answered 200 must reach the client (counted by payload id);
//! every other answer must be 503 `broker_unavailable`.

mod common;
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

use common::RedisServer;
use support::{Server, next_json};

const ROOM: &str = "outage";
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

/// A `/ws` client subscribed to ROOM, collecting the ids it receives.
async fn listener(server: &Server) -> (tokio::task::JoinHandle<()>, Arc<Mutex<BTreeSet<u64>>>) {
    let url = server.url("/ws").replace("http://", "ws://");
    let (mut ws, _) = connect_async(url).await.expect("websocket handshake");
    let subscribe = json!({"op": "subscribe", "channel": ROOM, "id": 1});
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
async fn publish_through(outage: impl AsyncFnOnce(&mut RedisServer)) {
    common::init_logs();
    let mut redis = RedisServer::start().await;
    let server = Arc::new(Server::start(&["--api-key", "k", "--redis-url", &redis.url()]).await);
    wait_ready(&server, Duration::from_secs(20)).await;
    let (listening, received) = listener(&server).await;
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
    outage(&mut redis).await;
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
    // Every acknowledged id arrives; wait for the last ones in flight.
    let acknowledged = seen.acknowledged;
    let arrived = || async {
        let received = received.lock().await;
        acknowledged
            .difference(&received)
            .copied()
            .collect::<Vec<_>>()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut missing = arrived().await;
    while !missing.is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        missing = arrived().await;
    }
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged publishes never reached the subscriber (refused: {}): {missing:?}",
        missing.len(),
        acknowledged.len(),
        seen.refused
    );
    listening.abort();
}

#[tokio::test]
async fn redis_killed_and_restarted_every_acknowledged_publish_is_delivered() {
    publish_through(async |redis: &mut RedisServer| {
        redis.kill();
        // Down for a few seconds: the subscriber's backoff grows meanwhile.
        tokio::time::sleep(Duration::from_secs(4)).await;
        redis.restart().await;
    })
    .await;
}

#[tokio::test]
async fn redis_frozen_and_resumed_every_acknowledged_publish_is_delivered() {
    publish_through(async |redis: &mut RedisServer| {
        redis.freeze(true);
        // Frozen long enough for the health checks to give up on both
        // connections (ping interval + timeout: 10 s by default).
        tokio::time::sleep(Duration::from_secs(14)).await;
        redis.freeze(false);
    })
    .await;
}
