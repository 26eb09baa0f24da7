//! `--broker nats` against real `nats-server`s: publishes from a plain NATS
//! client to `roomcast.<room>` reach `/ws` and `/sse` clients of the room;
//! room names NATS subjects cannot hold are refused (`room_not_served`), dots
//! make subject tokens; in a 3-server cluster with routes, roomcast reconnects
//! to a surviving server when the others die, and delivery resumes.

mod common;
mod support;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

use common::{NatsServer, ServerProcess};
use support::next_json;

type Ws = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

async fn ready(port: u16) -> bool {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<bytes::Bytes>>();
    let uri = format!("http://127.0.0.1:{port}/readyz");
    match client.get(uri.parse().unwrap()).await {
        Ok(response) => {
            let ok = response.status() == 200;
            let _ = response.into_body().collect().await;
            ok
        }
        Err(_) => false,
    }
}

async fn wait_ready(port: u16) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !ready(port).await {
        assert!(tokio::time::Instant::now() < deadline, "not ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn roomcast(urls: &[String]) -> ServerProcess {
    let urls = urls.join(",");
    let args = ["--broker", "nats", "--nats-url", &urls];
    let server = ServerProcess::start(env!("CARGO_BIN_EXE_roomcast").as_ref(), &args).await;
    wait_ready(server.port).await;
    server
}

async fn subscribe(ws: &mut Ws, room: &str, id: u64) -> serde_json::Value {
    let request = json!({"op": "subscribe", "channel": room, "id": id});
    ws.send(Message::text(request.to_string())).await.unwrap();
    next_json(ws).await
}

async fn ws(port: u16) -> Ws {
    connect_async(format!("ws://127.0.0.1:{port}/ws"))
        .await
        .unwrap()
        .0
}

#[tokio::test]
async fn nats_publishes_reach_ws_and_sse_and_odd_names_follow_the_mapping() {
    let nats = NatsServer::start().await;
    let node = roomcast(&[nats.url()]).await;
    let publisher = async_nats::connect(nats.url()).await.unwrap();

    let mut client = ws(node.port).await;
    for (id, room) in ["r", "a.b"].iter().enumerate() {
        assert_eq!(
            subscribe(&mut client, room, id as u64).await,
            json!({"type": "ok", "id": id})
        );
    }
    for (id, room) in ["a b", "a..b", ".a", "a*", "a.>"].iter().enumerate() {
        let refused = subscribe(&mut client, room, 10 + id as u64).await;
        assert_eq!(
            refused["code"],
            json!("room_not_served"),
            "{room}: {refused}"
        );
    }
    for (room, data) in [("r", "hello"), ("a.b", "dotted")] {
        publisher
            .publish(format!("roomcast.{room}"), data.into())
            .await
            .unwrap();
        publisher.flush().await.unwrap();
        let message = next_json(&mut client).await;
        assert_eq!(
            (&message["channel"], &message["data"]),
            (&json!(room), &json!(data))
        );
    }

    let mut sse = tokio::net::TcpStream::connect(("127.0.0.1", node.port))
        .await
        .unwrap();
    sse.write_all(b"GET /sse?channel=s HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let mut published = false;
    while !String::from_utf8_lossy(&seen).contains("from-nats") {
        if !published && String::from_utf8_lossy(&seen).contains(": connected") {
            publisher
                .publish("roomcast.s", "from-nats".into())
                .await
                .unwrap();
            publisher.flush().await.unwrap();
            published = true;
        }
        let n = tokio::time::timeout(Duration::from_secs(10), sse.read(&mut buf))
            .await
            .expect("SSE bytes within 10 s")
            .unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    // SIGTERM drains in time: the per-room readers end with the server.
    drop((client, sse));
    let mut node = node;
    let status = node.terminate(Duration::from_secs(15)).expect("exits");
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn in_a_cluster_roomcast_reconnects_to_a_survivor_and_delivery_resumes() {
    let mut cluster = NatsServer::cluster(3).await;
    let urls: Vec<String> = cluster.iter().map(NatsServer::url).collect();
    let node = roomcast(&urls).await;
    // The publisher sits on the server that survives.
    let publisher = async_nats::connect(cluster[2].url()).await.unwrap();
    let mut client = ws(node.port).await;
    assert_eq!(subscribe(&mut client, "c", 1).await["type"], json!("ok"));

    // Routes take a moment to carry the interest: publish until one arrives.
    let deliver = async |client: &mut Ws, tag: &str| {
        for attempt in 0..100 {
            let data = format!("{tag}-{attempt}");
            publisher
                .publish("roomcast.c", data.clone().into())
                .await
                .unwrap();
            publisher.flush().await.unwrap();
            // Earlier attempts may still arrive: only this tag counts.
            while let Ok(Some(Ok(Message::Text(text)))) =
                tokio::time::timeout(Duration::from_millis(200), client.next()).await
            {
                let message: serde_json::Value = serde_json::from_str(text.as_str()).unwrap();
                assert_eq!(message["channel"], json!("c"));
                if message["data"].as_str().is_some_and(|d| d.starts_with(tag)) {
                    return;
                }
            }
        }
        panic!("{tag}: nothing delivered");
    };
    deliver(&mut client, "before").await;
    cluster[0].kill();
    cluster[1].kill();
    deliver(&mut client, "after").await;
    wait_ready(node.port).await;
}
