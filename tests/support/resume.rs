//! What the room-log tests of every engine share (`redis_log.rs`,
//! `nats_log.rs`): a `/ws` client that subscribes after an id, a message's
//! data and id, and the check of a resume during a flood.

use std::time::Duration;

use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

use super::next_json;
use super::server::Server;

pub type Ws = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

pub async fn ws(server: &Server) -> Ws {
    let port = server.running.local_addr.port();
    connect_async(format!("ws://127.0.0.1:{port}/ws"))
        .await
        .expect("websocket handshake")
        .0
}

/// Subscribes to `room` (after `since`, if given) and checks the `ok`.
pub async fn subscribe(ws: &mut Ws, room: &str, since: Option<&str>) {
    let mut request = json!({"op": "subscribe", "channel": room, "id": 1});
    if let Some(since) = since {
        request["since"] = json!(since);
    }
    ws.send(Message::text(request.to_string())).await.unwrap();
    assert_eq!(next_json(ws).await, json!({"type": "ok", "id": 1}));
}

/// The next frame is the reset signal for `room`.
pub async fn told_reset(ws: &mut Ws, room: &str) {
    assert_eq!(
        next_json(ws).await,
        json!({"type": "reset", "channel": room})
    );
}

pub fn data_and_id(message: &Value) -> (String, String) {
    (
        // A payload that parses as JSON comes as that JSON (numbers here).
        match &message["data"] {
            Value::String(text) => text.clone(),
            other => other.to_string(),
        },
        message["id"].as_str().unwrap_or_default().to_string(),
    )
}

/// SSE on `server` resumes from `Last-Event-ID: after`: it gets `missed`
/// (ids, in order, the last of them waited for), and not `after` again.
pub async fn sse_resumes(server: &Server, room: &str, after: &str, missed: &[String]) {
    let port = server.running.local_addr.port();
    let mut sse = super::sse::RawSse::open_with(port, room, after).await;
    let Some(last) = missed.last() else {
        panic!("nothing to wait for")
    };
    sse.until(&format!("id: {last}\n")).await;
    let text = sse.text();
    let mut at = 0;
    for id in missed {
        let line = format!("id: {id}\n");
        let Some(found) = text[at..].find(&line) else {
            panic!("{line:?} missing or out of order: {text}");
        };
        at += found + line.len();
    }
    assert!(!text.contains(&format!("id: {after}\n")), "{text}");
}

/// The race between reading the log and live messages. A publisher is
/// sending `0`, `1`, … `count - 1` to `room`; `watcher` (in the room since
/// before `0`, on one node) reads them all, and once it has 100 a client
/// resumes on node `other` after the 100th: it must get every later one
/// exactly once, in the order the watcher got them.
pub async fn a_resume_during_a_flood(mut watcher: Ws, other: &Server, room: &str, count: usize) {
    let mut seen = Vec::new();
    while seen.len() < 100 {
        seen.push(data_and_id(&next_json(&mut watcher).await));
    }
    // The watcher reads on meanwhile (unread, it would be closed as a slow
    // consumer).
    let since = seen[99].1.clone();
    let watching = tokio::spawn(async move {
        while seen.len() < count {
            let next = tokio::time::timeout(Duration::from_secs(5), next_json(&mut watcher)).await;
            let Ok(next) = next else {
                panic!("watcher stalled after {}: {:?}", seen.len(), seen.last());
            };
            seen.push(data_and_id(&next));
        }
        seen
    });
    let mut back = ws(other).await;
    subscribe(&mut back, room, Some(&since)).await;
    let mut got = Vec::new();
    while got
        .last()
        .is_none_or(|(data, _): &(String, String)| data != &(count - 1).to_string())
    {
        let next = tokio::time::timeout(Duration::from_secs(5), next_json(&mut back)).await;
        let Ok(next) = next else {
            panic!(
                "stalled after {} resumed: {:?}",
                got.len(),
                &got[got.len().saturating_sub(3)..]
            );
        };
        got.push(data_and_id(&next));
    }
    let seen = watching.await.unwrap();
    assert_eq!(got.len(), count - 100, "each message after the id once");
    assert_eq!(got, seen[100..], "in the order every node delivers them");
}
