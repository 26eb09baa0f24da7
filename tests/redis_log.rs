//! The room log on a real `redis-server` (docs/RECOVERY.md): a message
//! published through `FCALL roomcast_publish` carries the log's id
//! (`<epoch>:<n>`) on every node, while a plain `PUBLISH` is delivered as
//! before; a client that comes back to *another* node with `since` (or
//! `Last-Event-ID`) gets exactly what it missed, in order, then live; an id
//! of another epoch, or from before a `FLUSHALL`, gets the reset signal.

mod support;

use std::time::Duration;

use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

use support::next_json;
use support::redis::RedisServer;
use support::server::Server;

type Ws = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

async fn node(redis: &RedisServer) -> Server {
    Server::start(&["--broker", "redis", "--redis-url", &redis.url()]).await
}

async fn ws(server: &Server) -> Ws {
    let port = server.running.local_addr.port();
    connect_async(format!("ws://127.0.0.1:{port}/ws"))
        .await
        .expect("websocket handshake")
        .0
}

/// Subscribes to `room` (after `since`, if given) and checks the `ok`.
async fn subscribe(ws: &mut Ws, room: &str, since: Option<&str>) {
    let mut request = json!({"op": "subscribe", "channel": room, "id": 1});
    if let Some(since) = since {
        request["since"] = json!(since);
    }
    ws.send(Message::text(request.to_string())).await.unwrap();
    assert_eq!(next_json(ws).await, json!({"type": "ok", "id": 1}));
}

/// What a back end runs: `FCALL roomcast_publish 1 <room> <payload>`. The
/// library is loaded by the nodes at start; wait for it.
async fn fcall(conn: &mut redis::aio::MultiplexedConnection, room: &str, data: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let result: redis::RedisResult<String> = redis::cmd("FCALL")
            .arg("roomcast_publish")
            .arg(1)
            .arg(room)
            .arg(data)
            .query_async(conn)
            .await;
        match result {
            Ok(_) => return,
            Err(error) if tokio::time::Instant::now() < deadline => {
                assert!(error.to_string().contains("Function not found"), "{error}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(error) => panic!("roomcast_publish: {error}"),
        }
    }
}

fn data_and_id(message: &Value) -> (String, String) {
    (
        message["data"].as_str().unwrap_or_default().to_string(),
        message["id"].as_str().unwrap_or_default().to_string(),
    )
}

#[tokio::test]
async fn logged_ids_are_the_logs_and_a_client_resumes_on_another_node() {
    let redis = RedisServer::start().await;
    let (a, b) = (node(&redis).await, node(&redis).await);
    let mut conn = redis.connection().await;

    let mut on_a = ws(&a).await;
    subscribe(&mut on_a, "room", None).await;
    let mut watcher = ws(&b).await;
    subscribe(&mut watcher, "room", None).await;
    fcall(&mut conn, "room", "one").await;
    let (data, seen) = data_and_id(&next_json(&mut on_a).await);
    assert_eq!(data, "one");
    let (epoch, n) = seen.split_once(':').expect("a logged id names its epoch");
    assert!(!epoch.is_empty() && n.parse::<u64>().is_ok(), "{seen}");
    assert_eq!(
        data_and_id(&next_json(&mut watcher).await),
        ("one".to_string(), seen.clone()),
        "the same id on every node"
    );

    // A plain PUBLISH is delivered as before: the payload as is, a plain id.
    let receivers: i64 = redis::cmd("PUBLISH")
        .arg("room")
        .arg("plain")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(receivers, 2);
    let (data, id) = data_and_id(&next_json(&mut on_a).await);
    assert_eq!(data, "plain");
    assert!(id.parse::<u64>().is_ok(), "a node-local id: {id}");
    next_json(&mut watcher).await;

    // The client goes away; three are published; it comes back to node B.
    drop(on_a);
    for data in ["two", "three", "four"] {
        fcall(&mut conn, "room", data).await;
    }
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(data_and_id(&next_json(&mut watcher).await).1);
    }
    let mut back = ws(&b).await;
    subscribe(&mut back, "room", Some(&seen)).await;
    fcall(&mut conn, "room", "five").await;
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(data_and_id(&next_json(&mut back).await));
    }
    let five = data_and_id(&next_json(&mut watcher).await).1;
    ids.push(five);
    assert_eq!(
        got,
        ["two", "three", "four", "five"]
            .iter()
            .zip(&ids)
            .map(|(d, id)| (d.to_string(), id.clone()))
            .collect::<Vec<_>>(),
        "what it missed from the log, then live, once each"
    );
    let quiet = tokio::time::timeout(Duration::from_millis(300), next_json(&mut back)).await;
    assert!(quiet.is_err(), "nothing twice: {quiet:?}");

    // SSE on node A resumes the same way from Last-Event-ID.
    let port = a.running.local_addr.port();
    let mut sse = support::sse::RawSse::open_with(port, "room", &ids[1]).await;
    sse.until(&format!("id: {}\n", ids[3])).await;
    assert!(
        sse.text().contains(&format!("id: {}\n", ids[2])),
        "{}",
        sse.text()
    );
    assert!(
        !sse.text().contains(&format!("id: {}\n", ids[1])),
        "{}",
        sse.text()
    );

    // An id of another epoch cannot be resumed: the client is told.
    let mut stranger = ws(&b).await;
    subscribe(&mut stranger, "room", Some(&format!("zz{epoch}:{n}"))).await;
    assert_eq!(
        next_json(&mut stranger).await,
        json!({"type": "reset", "channel": "room"})
    );
    // Nor one from before the log was flushed.
    let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();
    fcall(&mut conn, "room", "after flush").await;
    next_json(&mut watcher).await;
    let mut late = ws(&a).await;
    subscribe(&mut late, "room", Some(&ids[3])).await;
    assert_eq!(
        next_json(&mut late).await,
        json!({"type": "reset", "channel": "room"})
    );
    fcall(&mut conn, "room", "live").await;
    assert_eq!(data_and_id(&next_json(&mut late).await).0, "live");
}
