//! Redis per-room mode (`--redis-subscribe rooms`, the default) against a real
//! `redis-server`: a node subscribes exactly the rooms its clients are in, so
//! a message to a room nobody is in reaches no node; a room is unsubscribed
//! after the linger (`--history-ttl-s`) once its last member left; after a
//! Redis restart every room is subscribed again and delivery resumes;
//! `--pattern` restricts the rooms that may be joined. That a publish right
//! after a join's acknowledgement is never missed (1,000 times on `/ws`, and
//! on Socket.IO and `/sse`) is the engine suite's, `tests/engines.rs`, run
//! on every engine.

mod support;

use std::time::Duration;

use futures_util::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

use support::http::http_get as get;
use support::redis::RedisServer;
use support::{ServerProcess, next_json};

type Ws = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// PUBLISH as `redis-cli` would; the number of subscribers Redis delivered to.
async fn publish(conn: &mut redis::aio::MultiplexedConnection, room: &str, data: &str) -> i64 {
    redis::cmd("PUBLISH")
        .arg(room)
        .arg(data)
        .query_async(conn)
        .await
        .unwrap()
}

/// `PUBSUB CHANNELS`, sorted.
async fn all_channels(conn: &mut redis::aio::MultiplexedConnection) -> Vec<String> {
    let mut channels: Vec<String> = redis::cmd("PUBSUB")
        .arg("CHANNELS")
        .query_async(conn)
        .await
        .unwrap();
    channels.sort();
    channels
}

/// The rooms subscribed: `PUBSUB CHANNELS` without the room logs' channels
/// (`roomcast:log:<room>`, subscribed with each room, docs/RECOVERY.md).
async fn channels(conn: &mut redis::aio::MultiplexedConnection) -> Vec<String> {
    let mut channels = all_channels(conn).await;
    channels.retain(|channel| !channel.starts_with("roomcast:log:"));
    channels
}

/// A series of a node's `/metrics` (0 when absent).
async fn metric(port: u16, series: &str) -> f64 {
    let (_, text) = get(port, "/metrics").await;
    text.lines()
        .find_map(|line| {
            line.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

async fn received(port: u16) -> f64 {
    metric(port, r#"roomcast_messages_received_total{broker="redis"}"#).await
}

const SUBSCRIPTIONS: &str = r#"roomcast_broker_subscriptions{broker="redis"}"#;

async fn wait_ready(port: u16) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while get(port, "/readyz").await.0 != 200 {
        assert!(tokio::time::Instant::now() < deadline, "not ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn ws(port: u16) -> Ws {
    connect_async(format!("ws://127.0.0.1:{port}/ws"))
        .await
        .expect("websocket handshake")
        .0
}

/// Sends `{"op", "channel", "id"}` and returns the reply.
async fn request(ws: &mut Ws, op: &str, room: &str, id: u64) -> serde_json::Value {
    let request = json!({"op": op, "channel": room, "id": id});
    ws.send(Message::text(request.to_string())).await.unwrap();
    next_json(ws).await
}

fn node(redis: &RedisServer, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = ["--redis-url", &redis.url(), "--history-ttl-s", "1"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

async fn start(redis: &RedisServer, extra: &[&str]) -> ServerProcess {
    let args = node(redis, extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = ServerProcess::start(env!("CARGO_BIN_EXE_roomcast").as_ref(), &args).await;
    wait_ready(server.port).await;
    server
}

#[tokio::test]
async fn nodes_receive_only_their_rooms_unsubscribe_after_the_linger_and_resubscribe_after_a_restart()
 {
    let mut redis = RedisServer::start().await;
    let (a, b) = (start(&redis, &[]).await, start(&redis, &[]).await);
    let mut conn = redis.connection().await;
    assert_eq!(
        channels(&mut conn).await,
        Vec::<String>::new(),
        "no room yet"
    );

    let mut client = ws(a.port).await;
    assert_eq!(
        request(&mut client, "subscribe", "x", 1).await,
        json!({"type": "ok", "id": 1})
    );
    assert_eq!(channels(&mut conn).await, vec!["x"], "only the joined room");
    assert_eq!(
        all_channels(&mut conn).await,
        vec!["roomcast:log:x", "x"],
        "and its log channel"
    );
    assert_eq!(metric(a.port, SUBSCRIPTIONS).await, 1.0);
    assert_eq!(metric(b.port, SUBSCRIPTIONS).await, 0.0);
    assert_eq!(
        metric(
            a.port,
            r#"roomcast_broker_subscribe_seconds_count{broker="redis"}"#
        )
        .await,
        1.0,
        "one subscription timed"
    );

    let before = (received(a.port).await, received(b.port).await);
    assert_eq!(
        publish(&mut conn, "y", "nobody").await,
        0,
        "no node subscribed y"
    );
    assert_eq!(publish(&mut conn, "x", "one").await, 1, "only node A has x");
    let message = next_json(&mut client).await;
    assert_eq!(
        (&message["channel"], &message["data"]),
        (&json!("x"), &json!("one"))
    );
    assert_eq!(
        (received(a.port).await, received(b.port).await),
        (before.0 + 1.0, before.1),
        "A received x's message only, B nothing"
    );

    // Redis restarts: the room is subscribed again before A is ready.
    redis.restart().await;
    support::wait_until(Duration::from_secs(20), "x subscribed again", || {
        std::process::Command::new("redis-cli")
            .args(["-p", &redis.port.to_string(), "PUBSUB", "CHANNELS"])
            .output()
            .is_ok_and(|out| {
                let listed = String::from_utf8_lossy(&out.stdout);
                listed.lines().any(|channel| channel == "x")
            })
    })
    .await;
    wait_ready(a.port).await;
    let mut conn = redis.connection().await;
    assert_eq!(publish(&mut conn, "x", "two").await, 1);
    let message = next_json(&mut client).await;
    assert_eq!(message["data"], json!("two"), "delivery resumed");

    // The last member leaves: still subscribed during the linger, then not.
    assert_eq!(
        request(&mut client, "unsubscribe", "x", 2).await,
        json!({"type": "ok", "id": 2})
    );
    let left = tokio::time::Instant::now();
    assert_eq!(channels(&mut conn).await, vec!["x"], "lingering");
    let mut gone = channels(&mut conn).await;
    while !gone.is_empty() {
        assert!(
            left.elapsed() < Duration::from_secs(10),
            "never unsubscribed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        gone = channels(&mut conn).await;
    }
    assert!(
        left.elapsed() >= Duration::from_millis(900),
        "unsubscribed before the 1 s linger: {:?}",
        left.elapsed()
    );
    assert_eq!(metric(a.port, SUBSCRIPTIONS).await, 0.0);
}

#[tokio::test]
async fn the_pattern_restricts_the_rooms_that_may_be_joined() {
    let redis = RedisServer::start().await;
    let node = start(&redis, &["--pattern", "device*"]).await;
    let mut client = ws(node.port).await;
    assert_eq!(
        request(&mut client, "subscribe", "device01", 1).await,
        json!({"type": "ok", "id": 1})
    );
    let refused = request(&mut client, "subscribe", "other", 2).await;
    assert_eq!(
        (&refused["type"], &refused["code"]),
        (&json!("error"), &json!("room_not_served")),
        "{refused}"
    );
    let mut conn = redis.connection().await;
    assert_eq!(channels(&mut conn).await, vec!["device01"]);
}
