//! The room log on a real Redis Cluster (docs/RECOVERY.md, "Redis
//! Cluster"): a message roomcast publishes (or a back end, with `redis-cli -c
//! FCALL roomcast_publish 1 <room> <payload>`) carries the same
//! `<epoch>:<n>` on every node; a client that comes back to another node
//! gets exactly what it missed; past the log's limit, or after the room's
//! master lost it, it is told to reset; an offset of another room resets a
//! room with entries near it (SSE with two channels); a room whose braces
//! form no hashtag is refused on the log path. And a graceful failover of
//! the shard that owns a room, in the middle of a run with a publisher
//! through roomcast: counted by id, nothing twice, nothing acknowledged
//! missing, and a client away during it resumes exactly.

mod support;

use std::collections::{HashMap, HashSet};
use std::process::Command;
use std::time::Duration;

use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

use roomcast::brokers::redis::cluster::slot;
use support::next_json;
use support::redis::{RedisCluster, RedisServer};
use support::server::Server;

type Ws = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

const KEY: &str = "k";

async fn node(cluster: &RedisCluster, history: &str) -> Server {
    let server = Server::start(&[
        "--broker",
        "redis-cluster",
        "--redis-url",
        &cluster.urls(),
        "--api-key",
        KEY,
        "--max-messages-per-s",
        "0",
        "--history-size",
        history,
    ])
    .await;
    let ready = support::eventually(Duration::from_secs(20), || async {
        server.running.broker.is_ready().then_some(())
    })
    .await;
    assert!(ready.is_some(), "the node is ready");
    server
}

async fn ws(server: &Server) -> Ws {
    let port = server.running.local_addr.port();
    connect_async(format!("ws://127.0.0.1:{port}/ws"))
        .await
        .expect("websocket handshake")
        .0
}

/// Subscribes to `room` (after `since`, if given): the reply.
async fn try_subscribe(ws: &mut Ws, room: &str, since: Option<&str>) -> Value {
    let mut request = json!({"op": "subscribe", "channel": room, "id": 1});
    if let Some(since) = since {
        request["since"] = json!(since);
    }
    ws.send(Message::text(request.to_string())).await.unwrap();
    next_json(ws).await
}

async fn subscribe(ws: &mut Ws, room: &str, since: Option<&str>) {
    let reply = try_subscribe(ws, room, since).await;
    assert_eq!(reply, json!({"type": "ok", "id": 1}), "{room}");
}

/// `POST /api/publish`: the status and the reply.
async fn publish(server: &Server, room: &str, data: &str) -> (u16, Value) {
    let body = json!({"channel": room, "data": data}).to_string();
    server.json("POST", "/api/publish", Some(KEY), &body).await
}

async fn publish_ok(server: &Server, room: &str, data: &str) {
    let (status, reply) = publish(server, room, data).await;
    assert_eq!(status, 200, "{room}: {reply}");
}

/// A message's (data, id); data as text (numbers come as JSON numbers).
fn data_and_id(message: &Value) -> (String, String) {
    (
        match &message["data"] {
            Value::String(text) => text.clone(),
            other => other.to_string(),
        },
        message["id"].as_str().unwrap_or_default().to_string(),
    )
}

async fn next_message(ws: &mut Ws) -> (String, String) {
    data_and_id(&next_json(ws).await)
}

/// `redis-cli -c -p PORT args...` (follows MOVED, as a back end would).
fn cli(via: &RedisServer, args: &[&str]) -> String {
    let output = Command::new("redis-cli")
        .args(["-c", "-p", &via.port.to_string()])
        .args(args)
        .output()
        .expect("run redis-cli");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

async fn quiet(ws: &mut Ws) {
    let next = tokio::time::timeout(Duration::from_millis(300), next_json(ws)).await;
    assert!(next.is_err(), "nothing more: {next:?}");
}

#[tokio::test]
async fn logged_ids_are_shared_and_resume_on_another_node_or_reset() {
    let cluster = RedisCluster::start(3, 0).await;
    let (a, b) = (node(&cluster, "5").await, node(&cluster, "5").await);

    for room in ["room", "{tag}x"] {
        let mut on_a = ws(&a).await;
        subscribe(&mut on_a, room, None).await;
        let mut watcher = ws(&b).await;
        subscribe(&mut watcher, room, None).await;
        publish_ok(&b, room, "one").await;
        let (data, seen) = next_message(&mut on_a).await;
        assert_eq!(data, "one");
        let (epoch, n) = seen.split_once(':').expect("a logged id names its epoch");
        assert!(!epoch.is_empty() && n.parse::<u64>().is_ok(), "{seen}");
        assert_eq!(
            next_message(&mut watcher).await,
            ("one".to_string(), seen.clone()),
            "the same id on every node"
        );

        // Away: three published, one of them by a back end through redis-cli.
        drop(on_a);
        publish_ok(&a, room, "two").await;
        let reply = cli(
            &cluster.nodes[0],
            &["FCALL", "roomcast_publish", "1", room, "three"],
        );
        assert!(reply.contains('-'), "an id: {reply}");
        publish_ok(&a, room, "four").await;
        let mut ids = Vec::new();
        for _ in 0..3 {
            ids.push(next_message(&mut watcher).await);
        }
        // Back, on the other node: what it missed from the log, then live.
        let mut back = ws(&b).await;
        subscribe(&mut back, room, Some(&seen)).await;
        publish_ok(&a, room, "five").await;
        ids.push(next_message(&mut watcher).await);
        let mut got = Vec::new();
        for _ in 0..4 {
            got.push(next_message(&mut back).await);
        }
        assert_eq!(got, ids, "{room}: each missed message once, in order");
        assert_eq!(
            got.iter().map(|(d, _)| d.as_str()).collect::<Vec<_>>(),
            ["two", "three", "four", "five"]
        );
        quiet(&mut back).await;

        // Past the log's limit (MAXLEN ~ 5 trims whole stream nodes of 100):
        // the client is told.
        for i in 0..250 {
            cli(
                &cluster.nodes[0],
                &["FCALL", "roomcast_publish", "1", room, &i.to_string()],
            );
        }
        let mut late = ws(&a).await;
        subscribe(&mut late, room, Some(&seen)).await;
        assert_eq!(
            next_json(&mut late).await,
            json!({"type": "reset", "channel": room}),
            "{room}: trimmed"
        );
        publish_ok(&b, room, "after trim").await;
        assert_eq!(next_message(&mut late).await.0, "after trim");
    }

    // The room's master lost its log (FLUSHALL there): another epoch, reset.
    let room = "room";
    let mut watcher = ws(&a).await;
    subscribe(&mut watcher, room, None).await;
    publish_ok(&a, room, "before").await;
    let (_, before) = next_message(&mut watcher).await;
    let owner = cluster.owner(slot(room.as_bytes()));
    assert_eq!(owner.cli(&["FLUSHALL"]).trim(), "OK");
    publish_ok(&a, room, "after").await;
    let (_, after) = next_message(&mut watcher).await;
    assert_ne!(
        before.split_once(':').map(|p| p.0),
        after.split_once(':').map(|p| p.0),
        "a new log, a new epoch"
    );
    let mut lost = ws(&b).await;
    subscribe(&mut lost, room, Some(&before)).await;
    assert_eq!(
        next_json(&mut lost).await,
        json!({"type": "reset", "channel": room}),
        "the log was lost"
    );

    // Two rooms on one SSE stream, resumed from an id of the first: exact
    // for it; the second, which had an entry just before that id (on
    // another master, another connection: it may have come before or
    // after), is told to reset rather than guessed.
    let other = "other";
    publish_ok(&a, other, "near").await;
    publish_ok(&a, room, "mine").await;
    let (_, mine) = next_message(&mut watcher).await;
    publish_ok(&a, room, "missed").await;
    let (_, missed) = next_message(&mut watcher).await;
    let port = b.running.local_addr.port();
    let query = format!("{room}&channel={other}");
    let mut sse = support::sse::RawSse::open_with(port, &query, &mine).await;
    sse.until(&format!("id: {missed}\n")).await;
    sse.until("event: reset").await;
    let text = sse.text();
    assert!(text.contains(&format!("\"channel\":\"{other}\"")), "{text}");
    assert!(!text.contains(&format!("id: {mine}\n")), "{text}");

    // Braces that form no hashtag: no key in the room's slot, refused.
    let mut odd = ws(&a).await;
    let reply = try_subscribe(&mut odd, "a{}b", None).await;
    assert_eq!(reply["type"], json!("error"), "{reply}");
    assert!(
        reply["message"].as_str().unwrap_or("").contains("hashtag"),
        "{reply}"
    );
    let (status, reply) = publish(&a, "a{}b", "x").await;
    assert_ne!(status, 200, "{reply}");
    assert!(reply.to_string().contains("hashtag"), "{reply}");
}

/// A graceful `CLUSTER FAILOVER` (the replica catches up, then takes over)
/// of the shard owning the room while a publisher goes through roomcast:
/// the log loses nothing, so no client may miss or repeat anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failover_of_the_rooms_shard_during_a_run_loses_and_repeats_nothing() {
    let cluster = RedisCluster::start(3, 1).await;
    let (a, b) = (node(&cluster, "1000").await, node(&cluster, "1000").await);
    let room = "feed";
    let master = cluster.owner(slot(room.as_bytes()));
    let (master_port, replica) = (master.port, cluster.replica_of(master));

    let mut watcher = ws(&b).await;
    subscribe(&mut watcher, room, None).await;
    let mut leaver = ws(&a).await;
    subscribe(&mut leaver, room, None).await;
    let mut leaver = Some(leaver);

    // The publisher: each attempt a distinct payload, retried while refused
    // (a refusal may still have been written: counted, never required).
    const COUNT: usize = 400;
    let (acked_tx, acked_rx) = tokio::sync::oneshot::channel();
    let publisher = async {
        let mut acked = Vec::new();
        let mut refused = 0;
        for i in 0..COUNT {
            for attempt in 0.. {
                let data = format!("{i}.{attempt}");
                if publish(&a, room, &data).await.0 == 200 {
                    acked.push(data);
                    break;
                }
                refused += 1;
                assert!(attempt < 200, "{i}: refused for too long");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let _ = acked_tx.send((acked, refused));
    };

    // The run: the leaver goes away after 50, the failover after 100.
    let run = async {
        let mut seen: Vec<(String, String)> = Vec::new();
        let mut since = None;
        let mut failed_over = false;
        let last = format!("{}.", COUNT - 1);
        while !seen.last().is_some_and(|(data, _)| data.starts_with(&last)) {
            let next = tokio::time::timeout(Duration::from_secs(20), next_json(&mut watcher))
                .await
                .unwrap_or_else(|_| panic!("stalled after {:?}", seen.last()));
            // The log loses nothing here: a reset would be a false alarm.
            assert_eq!(next["type"], json!("message"), "{next}");
            seen.push(data_and_id(&next));
            if seen.len() == 50
                && let Some(mut leaver) = leaver.take()
            {
                // Read what the leaver got up to the 50th, and it is gone:
                // its last id is where it resumes.
                while since.as_ref() != Some(&seen[49].1) {
                    since = Some(next_message(&mut leaver).await.1);
                }
            }
            if seen.len() == 100 && !failed_over {
                failed_over = true;
                let answer = replica.cli(&["CLUSTER", "FAILOVER"]);
                assert_eq!(answer.trim(), "OK", "CLUSTER FAILOVER: {answer}");
            }
        }
        (seen, since.expect("the leaver's last id"))
    };
    let ((seen, since), ()) = tokio::join!(run, publisher);
    let (acked, refused) = acked_rx.await.unwrap();
    assert_ne!(
        cluster.owner(slot(room.as_bytes())).port,
        master_port,
        "the replica took over"
    );

    // Counted by id: nothing twice, ids rising, every acknowledged message.
    let ids: Vec<&String> = seen.iter().map(|(_, id)| id).collect();
    let unique: HashSet<&&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "no id twice");
    let numbers: Vec<u64> = ids
        .iter()
        .map(|id| id.split_once(':').unwrap().1.parse().unwrap())
        .collect();
    assert!(numbers.windows(2).all(|w| w[0] < w[1]), "ids rise");
    let received: HashMap<&str, usize> =
        seen.iter().fold(HashMap::new(), |mut counts, (data, _)| {
            *counts.entry(data.as_str()).or_default() += 1;
            counts
        });
    for data in &acked {
        assert_eq!(received.get(data.as_str()), Some(&1), "{data} once");
    }
    eprintln!(
        "failover run: {} acknowledged, {refused} refused attempts, {} received",
        acked.len(),
        seen.len()
    );

    // The leaver comes back to the other node after the failover: exactly
    // what it missed, from the new master's log, then live.
    let mut back = ws(&b).await;
    subscribe(&mut back, room, Some(&since)).await;
    publish_ok(&a, room, "live").await;
    let expected = &seen[50..];
    let mut got = Vec::new();
    for _ in 0..expected.len() {
        got.push(next_message(&mut back).await);
    }
    assert_eq!(got, expected, "the missed messages, once, in order");
    assert_eq!(next_message(&mut back).await.0, "live");
    assert_eq!(next_message(&mut watcher).await.0, "live");
    quiet(&mut back).await;
}
