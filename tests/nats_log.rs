//! The room log on a real `nats-server -js` (docs/RECOVERY.md, "NATS
//! JetStream"): a message published to a room subject by a plain NATS
//! client is kept in the stream and carries its sequence (`<epoch>:<n>`) on
//! every node; roomcast's own publishes are answered once stored; a client
//! that comes back to *another* node with `since` (or `Last-Event-ID`) gets
//! exactly what it missed, in order, then live, also during a flood; an id
//! of another epoch, from before the stream was deleted, or older than what
//! the room keeps gets the reset signal. A server without JetStream: plain
//! core NATS, node-local ids.

mod support;

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::json;

use support::nats::NatsServer;
use support::next_json;
use support::relay::Relay;
use support::resume::{data_and_id, subscribe, told_reset, ws};
use support::server::Server;

/// The stream roomcast makes for the default prefix.
const STREAM: &str = "roomcast_roomcast";

async fn node(nats: &NatsServer, extra: &[&str]) -> Server {
    node_at(&nats.url(), extra).await
}

/// A node whose NATS is at `url` (a relay in front of the server).
async fn node_at(url: &str, extra: &[&str]) -> Server {
    let mut flags = vec!["--broker", "nats", "--nats-url", url, "--api-key", "k"];
    flags.extend_from_slice(extra);
    support::init_logs();
    let server = Server::start(&flags).await;
    let broker = server.running.broker.clone();
    support::wait_until(Duration::from_secs(20), "the NATS broker is ready", || {
        broker.is_ready()
    })
    .await;
    server
}

/// What any back end does: a plain NATS publish to the room's subject,
/// flushed (JetStream keeps it; no roomcast involved).
async fn publish(client: &async_nats::Client, room: &str, data: &str) {
    client
        .publish(format!("roomcast.{room}"), data.to_string().into())
        .await
        .unwrap();
    client.flush().await.unwrap();
}

async fn publish_http(node: &Server, room: &str, data: &str) {
    let body = json!({"channel": room, "data": data}).to_string();
    let (status, reply) = node.json("POST", "/api/publish", Some("k"), &body).await;
    assert_eq!((status, &reply["ok"]), (200, &json!(true)), "{reply}");
}

#[tokio::test]
async fn logged_ids_are_the_streams_and_a_client_resumes_on_another_node() {
    let nats = NatsServer::jetstream().await;
    let (a, b) = (node(&nats, &[]).await, node(&nats, &[]).await);
    let client = async_nats::connect(nats.url()).await.unwrap();

    let mut on_a = ws(&a).await;
    subscribe(&mut on_a, "room", None).await;
    let mut watcher = ws(&b).await;
    subscribe(&mut watcher, "room", None).await;
    publish(&client, "room", "one").await;
    let (data, seen) = data_and_id(&next_json(&mut on_a).await);
    assert_eq!(data, "one");
    let (epoch, n) = seen.split_once(':').expect("a logged id names its epoch");
    assert_eq!(n, "1", "the stream's first sequence: {seen}");
    assert!(!epoch.is_empty(), "{seen}");
    assert_eq!(
        data_and_id(&next_json(&mut watcher).await),
        ("one".to_string(), seen.clone()),
        "the same id on every node"
    );

    // The client goes away; three are published (one through roomcast,
    // answered once stored); it comes back to node B.
    // Each is seen before the next (two connections' publishes are stored
    // in no set order).
    drop(on_a);
    let mut ids = Vec::new();
    publish(&client, "room", "two").await;
    ids.push(data_and_id(&next_json(&mut watcher).await).1);
    publish_http(&a, "room", "three").await;
    ids.push(data_and_id(&next_json(&mut watcher).await).1);
    publish(&client, "other", "elsewhere").await;
    publish(&client, "room", "four").await;
    ids.push(data_and_id(&next_json(&mut watcher).await).1);
    let mut back = ws(&b).await;
    subscribe(&mut back, "room", Some(&seen)).await;
    publish(&client, "room", "five").await;
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(data_and_id(&next_json(&mut back).await));
    }
    ids.push(data_and_id(&next_json(&mut watcher).await).1);
    assert_eq!(
        got,
        ["two", "three", "four", "five"]
            .iter()
            .zip(&ids)
            .map(|(d, id)| (d.to_string(), id.clone()))
            .collect::<Vec<_>>(),
        "what it missed from the log, then live, once each"
    );
    assert_eq!(ids[2], format!("{epoch}:5"), "one sequence for every room");
    let quiet = tokio::time::timeout(Duration::from_millis(300), next_json(&mut back)).await;
    assert!(quiet.is_err(), "nothing twice: {quiet:?}");

    // SSE on node A resumes the same way from Last-Event-ID.
    support::resume::sse_resumes(&a, "room", &ids[1], &ids[2..4]).await;

    // An id of another epoch cannot be resumed: the client is told.
    let mut stranger = ws(&b).await;
    subscribe(&mut stranger, "room", Some(&format!("zz{epoch}:{n}"))).await;
    told_reset(&mut stranger, "room").await;

    // Nor one from before the stream was deleted: roomcast's next publish
    // makes it again, under a new epoch.
    let js = async_nats::jetstream::new(client.clone());
    js.delete_stream(STREAM).await.unwrap();
    publish_http(&a, "room", "after delete").await;
    told_reset(&mut watcher, "room").await;
    let (_, renewed) = data_and_id(&next_json(&mut watcher).await);
    let (new_epoch, new_n) = renewed.split_once(':').unwrap();
    assert_ne!(new_epoch, epoch, "{renewed}");
    assert_eq!(new_n, "1");
    let mut late = ws(&a).await;
    subscribe(&mut late, "room", Some(&ids[3])).await;
    told_reset(&mut late, "room").await;
    publish(&client, "room", "live").await;
    assert_eq!(data_and_id(&next_json(&mut late).await).0, "live");
}

/// The stream deleted (by an operator, or lost): every node hears it
/// (JetStream's advisory) and makes it again, and they end up on one stream
/// under a new epoch. Plain NATS publishes, with no roomcast publish or
/// reconnect to make the stream, then reach every node's clients, after a
/// reset (what was published while it was gone reached nobody). Three
/// deletes in a row: the nodes race each time.
#[tokio::test]
async fn a_deleted_stream_is_made_again_and_plain_publishes_reach_every_node() {
    let nats = NatsServer::jetstream().await;
    let (a, b) = (node(&nats, &[]).await, node(&nats, &[]).await);
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    let mut clients = [ws(&a).await, ws(&b).await];
    for client in &mut clients {
        subscribe(client, "room", None).await;
    }
    publish(&client, "room", "before").await;
    let mut epoch = String::new();
    for client in &mut clients {
        let id = data_and_id(&next_json(client).await).1;
        epoch = id.split_once(':').unwrap().0.to_string();
    }
    for round in 0..3 {
        js.delete_stream(STREAM).await.unwrap();
        // Published until one arrives: those sent before the stream is back
        // are lost, which is what the reset says.
        let data = format!("after delete {round}");
        let mut first = None;
        for _ in 0..60 {
            publish(&client, "room", &data).await;
            let frame =
                tokio::time::timeout(Duration::from_millis(500), next_json(&mut clients[0]));
            if let Ok(frame) = frame.await {
                first = Some(frame);
                break;
            }
        }
        let first = first.expect("a plain publish reaches node A again within 30 s");
        assert_eq!(first, json!({"type": "reset", "channel": "room"}));
        let (got, id) = data_and_id(&next_json(&mut clients[0]).await);
        assert_eq!(got, data);
        told_reset(&mut clients[1], "room").await;
        let on_b = data_and_id(&next_json(&mut clients[1]).await);
        assert_eq!(on_b, (got, id.clone()), "one stream for both nodes");
        let (new_epoch, _) = id.split_once(':').unwrap();
        assert_ne!(new_epoch, epoch, "a new epoch");
        epoch = new_epoch.to_string();
        // Then the epoch's messages come without a reset, on both nodes.
        let steady = format!("steady {round}");
        publish(&client, "room", &steady).await;
        for client in &mut clients {
            loop {
                let got = data_and_id(&next_json(client).await).0;
                assert!(got == data || got == steady, "{got}");
                if got == steady {
                    break;
                }
            }
        }
    }
}

/// `--history-size 3`: a client away for more than three messages of its
/// room is told reset; one away for fewer gets them.
/// A node that lost its NATS connection for a while missed what was
/// published meanwhile (the stream kept it; the republish reached no one
/// here): the first message after it names the missed one as the room's
/// previous, and the node fills the hole from the log before it, so a
/// client that stayed connected gets every message once, in order.
#[tokio::test]
async fn a_hole_left_by_a_lost_connection_is_filled_from_the_log() {
    let nats = NatsServer::jetstream().await;
    let relay = Relay::start(nats.port).await;
    let a = node_at(&format!("nats://127.0.0.1:{}", relay.port), &[]).await;
    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut watcher = ws(&a).await;
    subscribe(&mut watcher, "room", None).await;
    publish(&client, "room", "one").await;
    assert_eq!(data_and_id(&next_json(&mut watcher).await).0, "one");

    relay.cut();
    let broker = a.running.broker.clone();
    support::wait_until(Duration::from_secs(20), "the node saw NATS go", || {
        !broker.is_ready()
    })
    .await;
    publish(&client, "room", "two").await;
    publish(&client, "room", "three").await;
    relay.restore();
    support::wait_until(Duration::from_secs(30), "the node is back on NATS", || {
        broker.is_ready()
    })
    .await;
    publish(&client, "room", "four").await;
    let mut got = Vec::new();
    while got
        .last()
        .is_none_or(|(data, _): &(String, String)| data != "four")
    {
        got.push(data_and_id(&next_json(&mut watcher).await));
    }
    let data: Vec<&str> = got.iter().map(|(d, _)| d.as_str()).collect();
    assert_eq!(data, ["two", "three", "four"], "the hole filled, in order");
    let ns: Vec<&str> = got
        .iter()
        .map(|(_, id)| id.split(':').nth(1).unwrap())
        .collect();
    assert_eq!(ns, ["2", "3", "4"], "the stream's sequences");
}

#[tokio::test]
async fn a_client_past_the_rooms_limit_is_told_reset() {
    let nats = NatsServer::jetstream().await;
    let (a, b) = (
        node(&nats, &["--history-size", "3"]).await,
        node(&nats, &["--history-size", "3"]).await,
    );
    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut watcher = ws(&a).await;
    subscribe(&mut watcher, "room", None).await;
    let mut ids = Vec::new();
    for i in 0..6 {
        publish(&client, "room", &i.to_string()).await;
        ids.push(data_and_id(&next_json(&mut watcher).await).1);
    }
    // Kept: 3, 4, 5. After 3: it is kept, so nothing after it was dropped.
    let mut near = ws(&b).await;
    subscribe(&mut near, "room", Some(&ids[3])).await;
    for expected in &ids[4..] {
        assert_eq!(&data_and_id(&next_json(&mut near).await).1, expected);
    }
    // After 1: 2 was dropped.
    let mut far = ws(&b).await;
    subscribe(&mut far, "room", Some(&ids[1])).await;
    told_reset(&mut far, "room").await;
    publish(&client, "room", "live").await;
    assert_eq!(data_and_id(&next_json(&mut far).await).0, "live");
}

/// One id for several rooms (a Socket.IO offset, an SSE `Last-Event-ID`):
/// each room reaches a node on its own subscription, so another room's
/// message stored ms from the id may have reached the client before or
/// after it. Resumed from room a's id, room b is told reset while it has an
/// entry that near, and resumes exactly when its entries are far from it.
#[tokio::test]
async fn another_rooms_id_is_told_reset_near_this_rooms_entries() {
    let nats = NatsServer::jetstream().await;
    let (a, b) = (node(&nats, &[]).await, node(&nats, &[]).await);
    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut watcher = ws(&a).await;
    subscribe(&mut watcher, "a", None).await;
    subscribe(&mut watcher, "b", None).await;
    // Published back to back: stored ms apart.
    publish(&client, "a", "a1").await;
    publish(&client, "b", "b1").await;
    let mut seen = [
        data_and_id(&next_json(&mut watcher).await),
        data_and_id(&next_json(&mut watcher).await),
    ];
    seen.sort();
    let (a1, b1) = (seen[0].1.clone(), seen[1].1.clone());
    assert_eq!((seen[0].0.as_str(), seen[1].0.as_str()), ("a1", "b1"));

    // From a1: room a is exact (its own entry, nothing after it), room b
    // is told, whether b1 came before or after a1.
    let mut back = ws(&b).await;
    subscribe(&mut back, "a", Some(&a1)).await;
    subscribe(&mut back, "b", Some(&a1)).await;
    told_reset(&mut back, "b").await;
    // And from b1, room a is told too.
    let mut other = ws(&b).await;
    subscribe(&mut other, "a", Some(&b1)).await;
    told_reset(&mut other, "a").await;

    // Room b's entries more than the window either side of a2: b1 was
    // seen, b2 missed, each once.
    let past_window = Duration::from_millis(roomcast::brokers::REORDER_WINDOW_MS + 500);
    tokio::time::sleep(past_window).await;
    publish(&client, "a", "a2").await;
    let (_, a2) = data_and_id(&next_json(&mut watcher).await);
    tokio::time::sleep(past_window).await;
    publish(&client, "b", "b2").await;
    let (_, b2) = data_and_id(&next_json(&mut watcher).await);
    let mut far = ws(&b).await;
    subscribe(&mut far, "b", Some(&a2)).await;
    assert_eq!(
        data_and_id(&next_json(&mut far).await),
        ("b2".to_string(), b2)
    );
    publish(&client, "b", "b3").await;
    assert_eq!(
        data_and_id(&next_json(&mut far).await).0,
        "b3",
        "nothing twice"
    );
}

/// The race between reading the log and live messages: a client resumes on
/// another node while a plain NATS client keeps publishing; it must get
/// every message after its id exactly once, in order, across the switch.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_resume_during_a_flood_gets_each_message_once_in_order() {
    const COUNT: usize = 1500;
    let nats = NatsServer::jetstream().await;
    // The room keeps every message of the run, and the resuming client's
    // queue holds them (a larger replay is a reset): no reset is right here,
    // however late the resume comes on a loaded machine.
    let size = ["--history-size", "5000", "--client-queue-messages", "5000"];
    let (a, b) = (node(&nats, &size).await, node(&nats, &size).await);
    let mut watcher = ws(&a).await;
    subscribe(&mut watcher, "flood", None).await;
    let client = async_nats::connect(nats.url()).await.unwrap();
    publish(&client, "flood", "0").await;
    let publisher = tokio::spawn(async move {
        for i in 1..COUNT {
            client
                .publish("roomcast.flood", i.to_string().into())
                .await
                .unwrap();
            if i % 10 == 0 {
                client.flush().await.unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        client.flush().await.unwrap();
    });
    support::resume::a_resume_during_a_flood(watcher, &b, "flood", COUNT).await;
    publisher.await.unwrap();
}

/// A publish through roomcast is answered 200 only once the stream holds it.
#[tokio::test]
async fn an_acknowledged_publish_is_stored() {
    let nats = NatsServer::jetstream().await;
    let a = node(&nats, &[]).await;
    publish_http(&a, "stored", "kept").await;
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let stream = js.get_stream(STREAM).await.unwrap();
    let message = stream
        .direct_get_last_for_subject("roomcast.stored")
        .await
        .expect("in the stream when the 200 came");
    assert_eq!(&message.payload[..], b"kept");
}

/// What the design rests on (docs/RECOVERY.md): the stream republishes
/// each stored message with its sequence and the previous sequence of the
/// *same subject*, which lets a node see it holds a room without a hole.
#[tokio::test]
async fn republished_messages_carry_the_rooms_previous_sequence() {
    let nats = NatsServer::jetstream().await;
    let _node = node(&nats, &[]).await;
    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut republished = client.subscribe("_roomcast.roomcast.*.room").await.unwrap();
    client.flush().await.unwrap();
    for (room, data) in [("room", "a"), ("other", "b"), ("room", "c")] {
        publish(&client, room, data).await;
    }
    let mut positions = Vec::new();
    for _ in 0..2 {
        let message = republished.next().await.unwrap();
        let headers = message.headers.unwrap();
        let header = |name: &str| headers.get(name).unwrap().as_str().to_string();
        positions.push((header("Nats-Sequence"), header("Nats-Last-Sequence")));
    }
    assert_eq!(
        positions,
        [("1".into(), "0".into()), ("3".into(), "1".into())],
        "the room's previous, not the stream's"
    );
}

/// A server without JetStream: roomcast says so and goes on with plain core
/// NATS (node-local ids), never refusing publishes for want of a stream.
#[tokio::test]
async fn without_jetstream_publishes_are_plain_not_refused() {
    let nats = NatsServer::start().await;
    let a = node(&nats, &[]).await;
    let mut client = ws(&a).await;
    subscribe(&mut client, "room", None).await;
    for data in ["one", "two"] {
        publish_http(&a, "room", data).await;
        let (got, id) = data_and_id(&next_json(&mut client).await);
        assert_eq!(got, data);
        assert!(id.parse::<u64>().is_ok(), "a node-local id: {id}");
    }
    // A logged id from elsewhere cannot be resumed here: reset.
    let mut stranger = ws(&a).await;
    subscribe(&mut stranger, "room", Some("abc:5")).await;
    told_reset(&mut stranger, "room").await;
}
