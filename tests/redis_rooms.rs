//! Redis per-room mode (`--redis-subscribe rooms`, the default) against a real
//! `redis-server`: a node subscribes exactly the rooms its clients are in, so
//! a message to a room nobody is in reaches no node; a join is acknowledged
//! only once Redis confirmed the subscription, so a publish sent right after
//! the acknowledgement is never missed; a room is unsubscribed after the
//! linger (`--history-ttl-s`) once its last member left; after a Redis
//! restart every room is subscribed again and delivery resumes.

mod common;
mod support;

use std::time::Duration;

use futures_util::SinkExt;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

use common::{RedisServer, ServerProcess};
use support::{next_engine_text, next_json};

type Ws = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

async fn redis_conn(redis: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

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
async fn channels(conn: &mut redis::aio::MultiplexedConnection) -> Vec<String> {
    let mut channels: Vec<String> = redis::cmd("PUBSUB")
        .arg("CHANNELS")
        .query_async(conn)
        .await
        .unwrap();
    channels.sort();
    channels
}

async fn get(port: u16, path: &str) -> (u16, String) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<bytes::Bytes>>();
    let uri = format!("http://127.0.0.1:{port}{path}");
    let response = client.get(uri.parse().unwrap()).await.unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
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
    let mut conn = redis_conn(&redis).await;
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
    common::wait_until(Duration::from_secs(20), "x subscribed again", || {
        std::process::Command::new("redis-cli")
            .args(["-p", &redis.port.to_string(), "PUBSUB", "CHANNELS"])
            .output()
            .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "x")
    })
    .await;
    wait_ready(a.port).await;
    let mut conn = redis_conn(&redis).await;
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
async fn a_publish_right_after_the_join_ack_is_never_missed() {
    let redis = RedisServer::start().await;
    let node = start(&redis, &["--max-messages-per-s", "0"]).await;
    let mut conn = redis_conn(&redis).await;
    let mut client = ws(node.port).await;
    for i in 0..1000u64 {
        let room = format!("room-{i}");
        assert_eq!(
            request(&mut client, "subscribe", &room, i).await,
            json!({"type": "ok", "id": i})
        );
        assert_eq!(publish(&mut conn, &room, &i.to_string()).await, 1, "{room}");
        let message = next_json(&mut client).await;
        assert_eq!(
            (&message["channel"], &message["data"]),
            (&json!(room), &json!(i))
        );
        // Keep the node's room count small; the linger keeps them subscribed.
        assert_eq!(
            request(&mut client, "unsubscribe", &room, i).await["type"],
            json!("ok")
        );
    }
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
    let mut conn = redis_conn(&redis).await;
    assert_eq!(channels(&mut conn).await, vec!["device01"]);
}

/// A Socket.IO (EIO4 websocket) client's `channel` ack and the start of an
/// SSE stream come only once the room is subscribed, like `/ws`'s `ok`.
#[tokio::test]
async fn socketio_ack_and_sse_stream_start_wait_for_the_subscription() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let redis = RedisServer::start().await;
    let node = start(&redis, &["--max-messages-per-s", "0"]).await;
    let mut conn = redis_conn(&redis).await;

    let url = format!(
        "ws://127.0.0.1:{}/socket.io/?EIO=4&transport=websocket",
        node.port
    );
    let (mut sio, _) = connect_async(url).await.expect("connect");
    assert!(next_engine_text(&mut sio).await.starts_with('0'));
    sio.send(Message::text("40")).await.unwrap();
    assert!(next_engine_text(&mut sio).await.starts_with("40"));
    // At most 64 rooms per connection by default.
    for i in 0..60 {
        let room = format!("sio-{i}");
        let join = format!(r#"42{i}["channel","{room}"]"#);
        sio.send(Message::text(join)).await.unwrap();
        assert_eq!(
            next_engine_text(&mut sio).await,
            format!(r#"43{i}[{{"ok":true}}]"#)
        );
        assert_eq!(publish(&mut conn, &room, "hi").await, 1, "{room}");
        let message = next_engine_text(&mut sio).await;
        assert!(
            message.starts_with(&format!(r#"42["message","hi",{{"room":"{room}""#)),
            "{message}"
        );
    }

    for i in 0..100 {
        let room = format!("sse-{i}");
        let mut sse = tokio::net::TcpStream::connect(("127.0.0.1", node.port))
            .await
            .unwrap();
        let request = format!("GET /sse?channel={room} HTTP/1.1\r\nHost: x\r\n\r\n");
        sse.write_all(request.as_bytes()).await.unwrap();
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        // The head and the stream's first chunk: the join is confirmed.
        while !String::from_utf8_lossy(&seen).contains(": connected") {
            let n = tokio::time::timeout(Duration::from_secs(10), sse.read(&mut buf))
                .await
                .expect("stream start within 10 s")
                .unwrap();
            assert!(n > 0, "closed: {}", String::from_utf8_lossy(&seen));
            seen.extend_from_slice(&buf[..n]);
        }
        assert_eq!(publish(&mut conn, &room, "hi").await, 1, "{room}");
        while !String::from_utf8_lossy(&seen).contains("data: ") {
            let n = tokio::time::timeout(Duration::from_secs(10), sse.read(&mut buf))
                .await
                .expect("the message within 10 s")
                .unwrap();
            assert!(n > 0);
            seen.extend_from_slice(&buf[..n]);
        }
    }
}
