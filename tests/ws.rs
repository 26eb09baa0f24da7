//! The `/ws` transport over real sockets: subscribe, receive, unsubscribe,
//! every error code, oversize and abuse closes, slow consumers, and one
//! room of 1,000 clients receiving every message once and in order.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

mod support;
use support::{Server, next_json as next};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

async fn connect(server: &Server) -> Ws {
    let url = server.url("/ws").replace("http://", "ws://");
    connect_async(url).await.expect("websocket handshake").0
}

async fn send(ws: &mut Ws, request: Value) {
    ws.send(Message::text(request.to_string()))
        .await
        .expect("send");
}

/// Reads until the server's close frame; returns its code.
async fn close_code(ws: &mut Ws) -> u16 {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("close within 10 s");
        match frame {
            Some(Ok(Message::Close(Some(close)))) => return close.code.into(),
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

async fn subscribe(ws: &mut Ws, channel: &str, id: u64) {
    send(ws, json!({"op": "subscribe", "channel": channel, "id": id})).await;
    assert_eq!(next(ws).await, json!({"type": "ok", "id": id}));
}

async fn publish(server: &Server, channel: &str, data: Value) {
    let body = json!({"channel": channel, "data": data}).to_string();
    let (status, body) = server.json("POST", "/api/publish", Some("k"), &body).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn subscribe_receive_unsubscribe_without_leakage() {
    let server = Server::start(&["--api-key", "k"]).await;
    let (mut a, mut b) = (connect(&server).await, connect(&server).await);
    subscribe(&mut a, "room-a", 1).await;
    subscribe(&mut b, "room-b", 2).await;

    publish(&server, "room-a", json!({"n": 1})).await;
    publish(&server, "room-b", json!("for b")).await;
    publish(&server, "room-a", json!("ünï")).await;
    let first = next(&mut a).await;
    assert_eq!(first["type"], "message");
    assert_eq!(first["channel"], "room-a");
    assert_eq!(first["data"], json!({"n": 1}));
    assert!(first["id"].is_string() && first["ts"].is_u64());
    assert_eq!(
        next(&mut a).await["data"],
        "ünï",
        "a gets only room-a, in order"
    );
    assert_eq!(next(&mut b).await["data"], "for b");

    send(
        &mut a,
        json!({"op": "unsubscribe", "channel": "room-a", "id": 3}),
    )
    .await;
    assert_eq!(next(&mut a).await, json!({"type": "ok", "id": 3}));
    publish(&server, "room-a", json!("gone")).await;
    send(&mut a, json!({"op": "ping", "id": "p"})).await;
    assert_eq!(
        next(&mut a).await,
        json!({"type": "pong", "id": "p"}),
        "nothing arrived after unsubscribe"
    );
}

#[tokio::test]
async fn every_bad_request_gets_its_own_code_and_the_connection_survives() {
    let server = Server::start(&["--api-key", "k", "--max-protocol-errors", "20"]).await;
    let mut ws = connect(&server).await;
    let cases: Vec<(Message, &str)> = vec![
        (Message::text("{not json"), "bad_json"),
        (Message::text("[1]"), "bad_request"),
        (Message::text(r#"{"channel":"a"}"#), "missing_field"),
        (Message::text(r#"{"op":"subscribe"}"#), "missing_field"),
        (
            Message::text(r#"{"op":"subscribe","channel":7}"#),
            "bad_channel",
        ),
        (
            Message::text(r#"{"op":"subscribe","channel":""}"#),
            "room_empty",
        ),
        (
            Message::text(json!({"op":"subscribe","channel":"x".repeat(201)}).to_string()),
            "room_too_long",
        ),
        (
            Message::text(r#"{"op":"unsubscribe","channel":"never"}"#),
            "not_subscribed",
        ),
        (Message::text(r#"{"op":"fly"}"#), "unknown_op"),
        (
            Message::text(r#"{"op":"publish","channel":"a","data":1}"#),
            "publish_disabled",
        ),
        (Message::binary(vec![1, 2, 3]), "binary_unsupported"),
    ];
    for (frame, code) in cases {
        ws.send(frame).await.unwrap();
        let reply = next(&mut ws).await;
        assert_eq!(
            (reply["type"].as_str(), reply["code"].as_str()),
            (Some("error"), Some(code)),
            "{reply}"
        );
        assert!(reply["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    subscribe(&mut ws, "still-works", 9).await;
    publish(&server, "still-works", json!(1)).await;
    assert_eq!(next(&mut ws).await["data"], 1);
}

#[tokio::test]
async fn client_publishing_when_enabled() {
    let server = Server::start(&["--ws-publish"]).await;
    let (mut sender, mut receiver) = (connect(&server).await, connect(&server).await);
    subscribe(&mut receiver, "chat", 1).await;
    send(
        &mut sender,
        json!({"op": "publish", "channel": "chat", "data": {"hi": true}, "id": 5}),
    )
    .await;
    assert_eq!(next(&mut sender).await, json!({"type": "ok", "id": 5}));
    assert_eq!(next(&mut receiver).await["data"], json!({"hi": true}));
    // The Socket.IO emitter's channels are the back end's: a client
    // publishing there could disconnect every socket.
    for (id, channel) in [(6, "socket.io-request#/#"), (7, "socket.io#/#room#")] {
        let request =
            json!({"op": "publish", "channel": channel, "data": {"type": 4, "opts": {}}, "id": id});
        send(&mut sender, request).await;
        let reply = next(&mut sender).await;
        assert_eq!(
            (reply["type"].as_str(), reply["code"].as_str()),
            (Some("error"), Some("reserved_channel")),
            "{reply}"
        );
    }
}

#[tokio::test]
async fn oversize_frames_close_with_1009_and_abuse_with_1008() {
    let server = Server::start(&["--max-payload", "1000", "--max-protocol-errors", "3"]).await;
    let mut big = connect(&server).await;
    big.send(Message::text("x".repeat(2000))).await.unwrap();
    assert_eq!(close_code(&mut big).await, 1009);

    let mut abuser = connect(&server).await;
    for _ in 0..4 {
        abuser.send(Message::text("nope")).await.unwrap();
    }
    assert_eq!(close_code(&mut abuser).await, 1008);
}

#[tokio::test]
async fn protocol_errors_close_with_1002_and_invalid_utf8_with_1007() {
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    let server = Server::start(&[]).await;
    let mut bystander = connect(&server).await;
    subscribe(&mut bystander, "calm", 1).await;

    // A reserved bit set without a negotiated extension: a protocol error.
    let mut reserved = connect(&server).await;
    let mut frame = Frame::message("{}", OpCode::Data(Data::Text), true);
    frame.header_mut().rsv1 = true;
    reserved.send(Message::Frame(frame)).await.unwrap();
    assert_eq!(close_code(&mut reserved).await, 1002);

    // A text frame that is not UTF-8.
    let mut garbled = connect(&server).await;
    let frame = Frame::message(vec![b'"', 0xff, 0xfe, b'"'], OpCode::Data(Data::Text), true);
    garbled.send(Message::Frame(frame)).await.unwrap();
    assert_eq!(close_code(&mut garbled).await, 1007);

    // Neither harmed anyone else.
    send(&mut bystander, json!({"op": "ping", "id": 2})).await;
    assert_eq!(next(&mut bystander).await["id"], 2);
}

#[tokio::test]
async fn a_slow_consumer_is_closed_while_others_receive_everything_in_order() {
    let server = Server::start(&[
        "--api-key",
        "k",
        "--client-queue-bytes",
        "262144",
        "--max-payload",
        "100000",
    ])
    .await;
    let (mut slow, mut fast) = (connect(&server).await, connect(&server).await);
    subscribe(&mut slow, "busy", 1).await;
    subscribe(&mut fast, "busy", 2).await;
    // `slow` stops reading. 200 × 60 KB outgrows its socket buffers and its
    // 256 KiB queue; `fast` keeps up.
    let chunk = "y".repeat(60_000);
    let reader = tokio::spawn(async move {
        for i in 0..200u64 {
            let message = next(&mut fast).await;
            assert_eq!(
                message["data"].as_str().map(|d| &d[..8]),
                Some(format!("{i:08}").as_str())
            );
        }
        fast
    });
    for i in 0..200u64 {
        publish(&server, "busy", json!(format!("{i:08}{chunk}"))).await;
    }
    let _fast = reader.await.expect("the fast client got all 200 in order");
    assert_eq!(
        close_code(&mut slow).await,
        1008,
        "the slow client is told why"
    );
    assert_eq!(
        server.running.hub.room_size("busy"),
        1,
        "and has left the room"
    );
}

#[tokio::test]
async fn a_thousand_clients_in_one_room_get_every_message_once_in_order() {
    let server = Server::start(&["--api-key", "k"]).await;
    let mut clients = Vec::new();
    for i in 0..1000 {
        let mut ws = connect(&server).await;
        subscribe(&mut ws, "crowd", i).await;
        clients.push(ws);
    }
    for n in 0..20 {
        publish(&server, "crowd", json!(n)).await;
    }
    let readers: Vec<_> = clients
        .into_iter()
        .map(|mut ws| {
            tokio::spawn(async move {
                let mut got = Vec::new();
                for _ in 0..20 {
                    got.push(next(&mut ws).await["data"].as_u64().unwrap());
                }
                send(&mut ws, json!({"op": "ping", "id": 0})).await;
                assert_eq!(
                    next(&mut ws).await["type"],
                    "pong",
                    "no duplicate after the 20th"
                );
                got
            })
        })
        .collect();
    for reader in readers {
        assert_eq!(reader.await.unwrap(), (0..20).collect::<Vec<u64>>());
    }
}

#[tokio::test]
async fn shutdown_tells_clients_to_reconnect_with_1012() {
    let server = Server::start(&[]).await;
    let mut ws = connect(&server).await;
    subscribe(&mut ws, "r", 1).await;
    server.shutdown.trigger();
    assert_eq!(close_code(&mut ws).await, 1012);
}

#[tokio::test]
async fn a_client_resumes_with_since_and_misses_nothing() {
    let server = Server::start(&["--api-key", "k"]).await;
    let mut ws = connect(&server).await;
    subscribe(&mut ws, "feed", 1).await;
    publish(&server, "feed", json!("one")).await;
    let last_seen = next(&mut ws).await["id"].as_str().unwrap().to_string();
    drop(ws);
    // While away (the room may even be empty), two more arrive.
    publish(&server, "feed", json!("two")).await;
    publish(&server, "feed", json!("three")).await;

    let mut back = connect(&server).await;
    send(
        &mut back,
        json!({"op": "subscribe", "channel": "feed", "since": last_seen, "id": 2}),
    )
    .await;
    assert_eq!(next(&mut back).await["type"], "ok");
    assert_eq!(next(&mut back).await["data"], "two");
    assert_eq!(next(&mut back).await["data"], "three");
    publish(&server, "feed", json!("four")).await;
    assert_eq!(
        next(&mut back).await["data"],
        "four",
        "then live, no duplicates"
    );
}
