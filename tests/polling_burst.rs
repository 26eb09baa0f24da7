//! Socket.IO long-polling under a burst: a client that keeps polling is not
//! dropped by a burst its websocket neighbours survive. The burst comes from
//! a real `redis-server`, as fast as roomcast reads it (one pipeline of
//! PUBLISH commands). A client that stopped polling is dropped
//! (`polling_buffer_full`): tests/security.rs.

mod support;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use support::Server;
use support::redis::RedisServer;
use support::wait_until;
use tokio_tungstenite::tungstenite::Message;

const BURST: usize = 5_000;
const STEP: Duration = Duration::from_secs(10);
/// A client on a LAN: a few milliseconds between one poll's answer and the next.
const POLL_PAUSE: Duration = Duration::from_millis(30);

/// One Engine.IO v4 polling request (`query` after the fixed part).
async fn http(server: &Server, method: &str, query: &str, body: &str) -> (u16, String) {
    let target = format!("/socket.io/?EIO=4&transport=polling{query}");
    let headers = [("Content-Type", "text/plain")];
    let addr = server.running.local_addr;
    let response = support::http::http(addr, method, &target, &headers, body.as_bytes()).await;
    (response.status, response.text())
}

/// A Socket.IO v5 client over polling, joined to `room`; returns its sid.
async fn polling_member(server: &Server, room: &str) -> String {
    let (_, open) = http(server, "GET", "", "").await;
    let open: serde_json::Value = serde_json::from_str(&open[1..]).expect("open packet");
    let sid = open["sid"].as_str().expect("sid").to_string();
    let query = format!("&sid={sid}");
    assert_eq!(http(server, "POST", &query, "40").await.0, 200);
    let (_, connected) = http(server, "GET", &query, "").await;
    assert!(connected.starts_with("40"), "{connected}");
    let join = format!(r#"421["channel","{room}"]"#);
    assert_eq!(http(server, "POST", &query, &join).await.0, 200);
    let (_, ack) = http(server, "GET", &query, "").await;
    assert_eq!(ack, r#"431[{"ok":true}]"#);
    sid
}

/// Polls until `want` messages arrived or the session ended, taking `pause`
/// between polls as a client over a real network would; returns how many
/// arrived and whether the session is still open.
async fn poll_messages(server: &Server, sid: &str, want: usize, pause: Duration) -> (usize, bool) {
    let query = format!("&sid={sid}");
    let mut got = 0;
    while got < want {
        tokio::time::sleep(pause).await;
        let (status, body) = http(server, "GET", &query, "").await;
        if status != 200 {
            return (got, false);
        }
        for packet in body.split('\u{1e}') {
            match packet {
                "1" => return (got, false),
                "2" => {
                    http(server, "POST", &query, "3").await;
                }
                _ if packet.starts_with(r#"42["message""#) => got += 1,
                _ => {}
            }
        }
    }
    (got, true)
}

async fn burst(redis: &RedisServer, room: &str, count: usize, size: usize) {
    let client = redis::Client::open(redis.url()).expect("redis url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect to redis");
    let payload = "x".repeat(size);
    let mut pipe = redis::pipe();
    for _ in 0..count {
        pipe.cmd("PUBLISH").arg(room).arg(&payload).ignore();
    }
    let () = pipe
        .query_async(&mut conn)
        .await
        .expect("publish the burst");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_keeps_polling_survives_a_burst_its_websocket_neighbours_survive() {
    let redis = RedisServer::start().await;
    // Queues that hold the whole burst, for every client alike: the
    // websocket neighbour then survives however busy this machine is (it
    // drains as the burst arrives), and so must the polling client, which
    // can drain only when it polls.
    let server = Server::start(&[
        "--redis-url",
        &redis.url(),
        "--client-queue-messages",
        "10000",
        "--client-queue-bytes",
        "16777216",
    ])
    .await;
    wait_until(STEP, "the broker is ready", || {
        server.running.broker.is_ready()
    })
    .await;
    let sid = polling_member(&server, "burst").await;
    let url = format!("ws://{}/ws", server.running.local_addr);
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.expect("/ws");
    ws.send(Message::text(
        r#"{"op":"subscribe","channel":"burst","id":1}"#,
    ))
    .await
    .expect("subscribe");
    let ok = ws.next().await;
    assert!(format!("{ok:?}").contains(r#"\"type\":\"ok\""#), "{ok:?}");

    let poller = poll_messages(&server, &sid, BURST, POLL_PAUSE);
    let neighbour = async {
        let mut got = 0;
        while got < BURST {
            match tokio::time::timeout(STEP, ws.next()).await {
                Ok(Some(Ok(Message::Text(text)))) if text.contains(r#""type":"message""#) => {
                    got += 1
                }
                Ok(Some(Ok(_))) => {}
                _ => break,
            }
        }
        got
    };
    let ((polled, open), neighbour, ()) =
        tokio::join!(poller, neighbour, burst(&redis, "burst", BURST, 1024));
    assert_eq!(neighbour, BURST, "the websocket neighbour lost messages");
    assert!(
        open,
        "the polling client was dropped after {polled} messages"
    );
    assert_eq!(polled, BURST);
}
