//! `--broker redis-cluster` against a real Redis Cluster of 3 masters and 3
//! replicas started here: rooms spread over every master deliver what back
//! ends `SPUBLISH` (`redis-cli -c`) and what the HTTP API publishes to `/ws`,
//! SSE and Socket.IO clients; a slot in use moved to another master
//! (`CLUSTER SETSLOT`) moves the subscription, and a publish to a moved room
//! that meets `MOVED` is sent again at the new master; a master killed with SIGKILL
//! makes `/readyz` 503 (and publishes to its rooms 503) until its replica took
//! over, and delivery to its rooms resumes without restarting roomcast; a room
//! whose last member left is unsubscribed from its master after the linger.

mod support;

use std::collections::HashSet;
use std::process::Command;
use std::time::Duration;

use futures_util::SinkExt;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use roomcast::brokers::redis::cluster::slot;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

use support::ServerProcess;
use support::http::http_get;
use support::redis::{RedisCluster, RedisServer};
use support::sse::RawSse;
use support::{next_engine_text, next_json};

type Ws = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

const KEY: &str = "k";

async fn get(port: u16, path: &str) -> (u16, serde_json::Value) {
    let (status, body) = http_get(port, path).await;
    (status, serde_json::from_str(&body).unwrap_or_default())
}

async fn http_publish(port: u16, room: &str, data: &str) -> u16 {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<bytes::Bytes>>();
    let body = json!({"channel": room, "data": data}).to_string();
    let request = hyper::Request::post(format!("http://127.0.0.1:{port}/api/publish"))
        .header("authorization", format!("Bearer {KEY}"))
        .header("content-type", "application/json")
        .body(Full::new(bytes::Bytes::from(body)))
        .unwrap();
    client.request(request).await.unwrap().status().as_u16()
}

/// `redis-cli -c -p PORT SPUBLISH room data`, as a back end would: the
/// number of subscribers reached, or None on an error (the cluster is down
/// for that slot).
fn spublish(via: &RedisServer, room: &str, data: &str) -> Option<i64> {
    let output = Command::new("redis-cli")
        .args(["-c", "-p", &via.port.to_string(), "SPUBLISH", room, data])
        .output()
        .expect("run redis-cli");
    String::from_utf8_lossy(&output.stdout).trim().parse().ok()
}

async fn ws(port: u16) -> Ws {
    connect_async(format!("ws://127.0.0.1:{port}/ws"))
        .await
        .expect("websocket handshake")
        .0
}

async fn subscribe(ws: &mut Ws, room: &str, id: u64) {
    let request = json!({"op": "subscribe", "channel": room, "id": id});
    ws.send(Message::text(request.to_string())).await.unwrap();
    assert_eq!(
        next_json(ws).await,
        json!({"type": "ok", "id": id}),
        "{room}"
    );
}

/// The next `/ws` message: (room, data).
async fn next_message(ws: &mut Ws) -> (String, String) {
    let message = next_json(ws).await;
    let text = |key: &str| message[key].as_str().unwrap_or_default().to_string();
    (text("channel"), text("data"))
}

async fn wait_for(limit: Duration, what: &str, mut condition: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Publishes `data` to `room` through a live node until `ws` receives it
/// (the cluster may refuse while a slot has no master).
async fn delivered_eventually(cluster: &RedisCluster, ws: &mut Ws, room: &str, data: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    for attempt in 0.. {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{room}: {data} never delivered"
        );
        let via = cluster.nodes.iter().find(|n| n.is_running()).unwrap();
        let sent = format!("{data}-{attempt}");
        if spublish(via, room, &sent).unwrap_or(0) > 0 {
            // Earlier attempts' copies may come first: the one sent now is due.
            while let Ok((got_room, got)) =
                tokio::time::timeout(Duration::from_millis(500), next_message(ws)).await
            {
                assert_eq!(got_room, room, "{got}");
                if got == sent {
                    return;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn sharded_rooms_deliver_and_follow_resharding_and_failover() {
    let mut cluster = RedisCluster::start(3, 1).await;
    let node = ServerProcess::start(
        env!("CARGO_BIN_EXE_roomcast").as_ref(),
        &[
            "--broker",
            "redis-cluster",
            "--redis-url",
            &cluster.urls(),
            "--api-key",
            KEY,
            "--max-messages-per-s",
            "0",
            "--history-ttl-s",
            "1",
        ],
    )
    .await;
    let port = node.port;
    wait_for(Duration::from_secs(20), "ready", async || {
        get(port, "/readyz").await.0 == 200
    })
    .await;
    let (_, ready) = get(port, "/readyz").await;
    assert_eq!(ready["broker"], json!("redis-cluster"));
    assert_eq!(
        ready["shards"].as_object().map(|s| s.len()),
        Some(3),
        "{ready}"
    );

    // Rooms on every master, hashtags included.
    let mut rooms: Vec<String> = (0..30).map(|i| format!("room-{i}")).collect();
    rooms.extend(["{tag}a".to_string(), "{tag}b".to_string()]);
    let masters: HashSet<u16> = rooms
        .iter()
        .map(|room| cluster.owner(slot(room.as_bytes())).port)
        .collect();
    assert_eq!(masters.len(), 3, "the rooms spread over every master");

    let mut client = ws(port).await;
    for (id, room) in rooms.iter().enumerate() {
        subscribe(&mut client, room, id as u64).await;
    }
    for room in &rooms {
        // Right after the ack, through any node: redis-cli -c follows MOVED.
        assert_eq!(spublish(&cluster.nodes[0], room, "hi"), Some(1), "{room}");
        assert_eq!(next_message(&mut client).await, (room.clone(), "hi".into()));
        assert_eq!(http_publish(port, room, "api").await, 200, "{room}");
        assert_eq!(
            next_message(&mut client).await,
            (room.clone(), "api".into())
        );
    }
    // Both hashtag rooms on one shard, as Redis places them.
    let tag = cluster.owner(slot(b"{tag}a")).port;
    let shard_channels = cluster.nodes.iter().find(|n| n.port == tag).unwrap().cli(&[
        "PUBSUB",
        "SHARDCHANNELS",
        "{tag}*",
    ]);
    assert!(
        shard_channels.contains("{tag}a") && shard_channels.contains("{tag}b"),
        "{shard_channels}"
    );

    // Socket.IO and SSE clients of a room get SPUBLISHed messages too.
    let room = "room-7";
    let url = format!("ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket");
    let (mut sio, _) = connect_async(url).await.expect("socket.io connect");
    assert!(next_engine_text(&mut sio).await.starts_with('0'));
    sio.send(Message::text("40")).await.unwrap();
    assert!(next_engine_text(&mut sio).await.starts_with("40"));
    sio.send(Message::text(format!(r#"421["channel","{room}"]"#)))
        .await
        .unwrap();
    assert_eq!(next_engine_text(&mut sio).await, r#"431[{"ok":true}]"#);
    let mut sse = RawSse::open(port, room).await;
    sse.until(": connected").await;
    assert_eq!(spublish(&cluster.nodes[1], room, "all"), Some(1));
    sse.until("data: ").await;
    let mut message = next_engine_text(&mut sio).await;
    // The join's `hello` (the room's members) may come first.
    if message.starts_with(r#"42["hello""#) {
        message = next_engine_text(&mut sio).await;
    }
    assert!(
        message.starts_with(&format!(r#"42["message","all",{{"room":"{room}""#)),
        "{message}"
    );
    assert_eq!(next_message(&mut client).await, (room.into(), "all".into()));

    // Resharding: the slot of a room in use moves to another master.
    let room = "room-3";
    let moving = slot(room.as_bytes());
    let source = cluster.owner(moving);
    let target = cluster
        .nodes
        .iter()
        .find(|n| n.port != source.port && n.cli(&["ROLE"]).starts_with("master"))
        .unwrap();
    let (source_id, target_id) = (source.node_id(), target.node_id());
    let s = moving.to_string();
    target.cli(&["CLUSTER", "SETSLOT", &s, "IMPORTING", &source_id]);
    source.cli(&["CLUSTER", "SETSLOT", &s, "MIGRATING", &target_id]);
    for node in [target, source] {
        node.cli(&["CLUSTER", "SETSLOT", &s, "NODE", &target_id]);
    }
    let target_port = target.port;
    wait_for(
        Duration::from_secs(10),
        "re-subscribed at the new master",
        async || {
            let target = cluster
                .nodes
                .iter()
                .find(|n| n.port == target_port)
                .unwrap();
            target
                .cli(&["PUBSUB", "SHARDCHANNELS", room])
                .contains(room)
        },
    )
    .await;
    assert_eq!(spublish(target, room, "moved"), Some(1));
    assert_eq!(
        next_message(&mut client).await,
        (room.into(), "moved".into())
    );
    assert_eq!(http_publish(port, room, "moved-api").await, 200);
    assert_eq!(
        next_message(&mut client).await,
        (room.into(), "moved-api".into())
    );

    // A room with no member here moves: this node's slot map is stale, its
    // SPUBLISH meets MOVED, and the publish is sent again at the new master.
    let room = "nobody-here";
    let moving = slot(room.as_bytes()).to_string();
    let source = cluster.owner(slot(room.as_bytes()));
    let masters: Vec<&RedisServer> = cluster
        .nodes
        .iter()
        .filter(|n| n.cli(&["ROLE"]).starts_with("master"))
        .collect();
    let target = masters.iter().find(|n| n.port != source.port).unwrap();
    let (source_id, target_id) = (source.node_id(), target.node_id());
    target.cli(&["CLUSTER", "SETSLOT", &moving, "IMPORTING", &source_id]);
    source.cli(&["CLUSTER", "SETSLOT", &moving, "MIGRATING", &target_id]);
    for node in &masters {
        node.cli(&["CLUSTER", "SETSLOT", &moving, "NODE", &target_id]);
    }
    assert_eq!(http_publish(port, room, "redirected").await, 200);

    // Failover: SIGKILL the master of a room; its replica takes over.
    let room = "room-5";
    let victim = cluster.owner(slot(room.as_bytes())).port;
    let index = cluster.nodes.iter().position(|n| n.port == victim).unwrap();
    cluster.nodes[index].kill();
    wait_for(
        Duration::from_secs(5),
        "not ready while a master is down",
        async || get(port, "/readyz").await.0 == 503,
    )
    .await;
    let (_, status) = get(port, "/readyz").await;
    assert_eq!(
        status["shards"][format!("127.0.0.1:{victim}")],
        json!("down"),
        "{status}"
    );
    // Refused, not lost: this node's path to that master is down.
    assert_eq!(http_publish(port, room, "refused").await, 503);
    delivered_eventually(&cluster, &mut client, room, "after-failover").await;
    wait_for(Duration::from_secs(10), "ready again", async || {
        get(port, "/readyz").await.0 == 200
    })
    .await;
    assert_eq!(http_publish(port, room, "api-after").await, 200);
    assert_eq!(
        next_message(&mut client).await,
        (room.into(), "api-after".into())
    );
    // Every other room still delivers.
    for room in rooms.iter().step_by(5) {
        delivered_eventually(&cluster, &mut client, room, "still").await;
    }

    // The last member leaves: SUNSUBSCRIBEd on its master after the linger.
    let room = "room-9";
    let request = json!({"op": "unsubscribe", "channel": room, "id": 99});
    client
        .send(Message::text(request.to_string()))
        .await
        .unwrap();
    while next_json(&mut client).await["type"] != json!("ok") {}
    let owner = cluster.owner(slot(room.as_bytes())).port;
    wait_for(
        Duration::from_secs(10),
        "unsubscribed after the linger",
        async || {
            let owner = cluster.nodes.iter().find(|n| n.port == owner).unwrap();
            !owner.cli(&["PUBSUB", "SHARDCHANNELS", room]).contains(room)
        },
    )
    .await;
    assert_eq!(
        get(port, "/readyz").await.0,
        200,
        "our own SUNSUBSCRIBE is no slot move"
    );
}
