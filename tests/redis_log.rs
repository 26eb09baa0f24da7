//! The room log on a real `redis-server` (docs/RECOVERY.md): a message
//! published through `FCALL roomcast_publish` carries the log's id
//! (`<epoch>:<n>`) on every node, while a plain `PUBLISH` is delivered as
//! before; a client that comes back to *another* node with `since` (or
//! `Last-Event-ID`) gets exactly what it missed, in order, then live; an id
//! of another epoch, or from before a `FLUSHALL`, gets the reset signal.

mod support;

use std::time::Duration;

use futures_util::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use support::next_json;
use support::redis::RedisServer;
use support::resume::{data_and_id, subscribe, told_reset, ws};
use support::server::Server;

async fn node(redis: &RedisServer) -> Server {
    Server::start(&["--broker", "redis", "--redis-url", &redis.url()]).await
}

/// A node whose HTTP API takes the key `k`.
async fn keyed_node(redis: &RedisServer) -> Server {
    let url = redis.url();
    Server::start(&["--broker", "redis", "--redis-url", &url, "--api-key", "k"]).await
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
    support::resume::sse_resumes(&a, "room", &ids[1], &ids[2..4]).await;

    // An id of another epoch cannot be resumed: the client is told.
    let mut stranger = ws(&b).await;
    subscribe(&mut stranger, "room", Some(&format!("zz{epoch}:{n}"))).await;
    told_reset(&mut stranger, "room").await;
    // Nor one from before the log was flushed.
    let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();
    fcall(&mut conn, "room", "after flush").await;
    next_json(&mut watcher).await;
    let mut late = ws(&a).await;
    subscribe(&mut late, "room", Some(&ids[3])).await;
    told_reset(&mut late, "room").await;
    fcall(&mut conn, "room", "live").await;
    assert_eq!(data_and_id(&next_json(&mut late).await).0, "live");
}

/// The race between reading the log and live messages: a client resumes on
/// another node while a publisher keeps going; it must get every message
/// after its id exactly once, in order, across the switch from log to live.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_resume_during_a_flood_gets_each_message_once_in_order() {
    let redis = RedisServer::start().await;
    let (a, b) = (node(&redis).await, node(&redis).await);
    let mut watcher = ws(&a).await;
    subscribe(&mut watcher, "flood", None).await;
    let mut conn = redis.connection().await;
    fcall(&mut conn, "flood", "0").await;
    const COUNT: usize = 1500;
    let publisher = tokio::spawn(async move {
        for i in 1..COUNT {
            fcall(&mut conn, "flood", &i.to_string()).await;
            // About 2,000 a second: a flood, not a slow consumer's test.
            if i % 10 == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    });
    support::resume::a_resume_during_a_flood(watcher, &b, "flood", COUNT).await;
    publisher.await.unwrap();
}

/// A Redis without Functions (before 7.0; here 7.0 with `FCALL` and
/// `FUNCTION` renamed away): roomcast's publishes fall back to plain
/// `PUBLISH` (node-local ids, at-most-once) instead of refusing every one.
#[tokio::test]
async fn without_functions_publishes_are_plain_not_refused() {
    let redis = RedisServer::start_with(&[
        "--rename-command",
        "FCALL",
        "",
        "--rename-command",
        "FCALL_RO",
        "",
        "--rename-command",
        "FUNCTION",
        "",
    ])
    .await;
    let node = keyed_node(&redis).await;
    let mut client = ws(&node).await;
    subscribe(&mut client, "room", None).await;
    for data in ["one", "two"] {
        let body = json!({"channel": "room", "data": data}).to_string();
        let (status, reply) = node.json("POST", "/api/publish", Some("k"), &body).await;
        assert_eq!((status, &reply["ok"]), (200, &json!(true)), "{reply}");
        let (got, id) = data_and_id(&next_json(&mut client).await);
        assert_eq!(got, data);
        assert!(id.parse::<u64>().is_ok(), "a node-local id: {id}");
    }
}

/// Room names beginning with `roomcast:` are the log's channels and keys on
/// Redis: no client may join or publish one (a room `roomcast:log:x` would
/// receive room `x`'s log envelopes), on any transport; other rooms are
/// untouched.
#[tokio::test]
async fn room_names_under_roomcast_are_reserved_on_redis() {
    let redis = RedisServer::start().await;
    let node = keyed_node(&redis).await;
    let mut client = ws(&node).await;
    let request = json!({"op": "subscribe", "channel": "roomcast:log:x", "id": 1});
    client
        .send(Message::text(request.to_string()))
        .await
        .unwrap();
    let reply = next_json(&mut client).await;
    assert_eq!(
        (&reply["type"], &reply["code"], &reply["id"]),
        (&json!("error"), &json!("room_reserved"), &json!(1)),
        "{reply}"
    );
    assert!(
        reply["message"]
            .as_str()
            .unwrap_or_default()
            .contains("\"roomcast:\""),
        "{reply}"
    );
    // The client keeps its connection and joins other rooms.
    subscribe(&mut client, "x", None).await;

    let body = json!({"channel": "roomcast:last", "data": "d"}).to_string();
    let (status, reply) = node.json("POST", "/api/publish", Some("k"), &body).await;
    assert_eq!(
        (status, &reply["error"]),
        (400, &json!("room_reserved")),
        "{reply}"
    );

    let response = support::http::http(
        node.running.local_addr,
        "GET",
        "/sse?channel=roomcast:epoch",
        &[],
        b"",
    )
    .await;
    assert_eq!(response.status, 400, "{}", response.text());
    assert!(
        response.text().contains("room_reserved"),
        "{}",
        response.text()
    );

    // Nothing reached the room that was joined.
    let (status, _) = node
        .json(
            "POST",
            "/api/publish",
            Some("k"),
            &json!({"channel": "x", "data": "after"}).to_string(),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(data_and_id(&next_json(&mut client).await).0, "after");
}

/// A resume's replay goes into the client's queue in one go: one larger than
/// the queue would close it as a slow consumer, and the client, coming back
/// with the same id, would meet a still larger replay for as long as the log
/// holds its gap, never getting anything (found by tests/e2e/cluster.test.mjs
/// at 800 msg/s). A gap the queue holds is replayed; a larger one is a reset,
/// then live messages.
#[tokio::test]
async fn a_gap_larger_than_the_client_queue_is_a_reset_not_a_slow_consumer_loop() {
    let redis = RedisServer::start().await;
    let url = redis.url();
    let args = ["--broker", "redis", "--redis-url", &url];
    let server = Server::start(&[&args[..], &["--client-queue-messages", "50"]].concat()).await;
    let mut conn = redis.connection().await;
    let mut first = ws(&server).await;
    subscribe(&mut first, "room", None).await;
    fcall(&mut conn, "room", "seen").await;
    let (_, seen) = data_and_id(&next_json(&mut first).await);
    drop(first);

    for n in 0..40 {
        fcall(&mut conn, "room", &format!("a{n}")).await;
    }
    let mut back = ws(&server).await;
    subscribe(&mut back, "room", Some(&seen)).await;
    let mut last = String::new();
    for n in 0..40 {
        let (data, id) = data_and_id(&next_json(&mut back).await);
        assert_eq!(data, format!("a{n}"), "40 of a queue of 50: replayed");
        last = id;
    }
    drop(back);

    for n in 0..80 {
        fcall(&mut conn, "room", &format!("b{n}")).await;
    }
    let mut away = ws(&server).await;
    subscribe(&mut away, "room", Some(&last)).await;
    assert_eq!(
        next_json(&mut away).await,
        json!({"type": "reset", "channel": "room"}),
        "80 do not fit a queue of 50: told"
    );
    fcall(&mut conn, "room", "live").await;
    assert_eq!(data_and_id(&next_json(&mut away).await).0, "live");
}
