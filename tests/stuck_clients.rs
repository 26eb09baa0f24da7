//! Clients that stop reading (the socket stays open, nothing is read) while
//! their room is busy: each is closed as `slow_consumer` within the write
//! timeout and its connection released, on every transport (`/ws`, `/sse`
//! answered directly and through hyper, the Socket.IO websocket), while a
//! normal member of the same room receives every message.
//!
//! One test per transport label: the metrics recorder is process-global, so
//! each test reads only its own transport's series.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

mod support;
use support::{Server, next_engine_text, next_json};

/// Stuck clients per test.
const STUCK: usize = 3;
/// Messages published into the room, and their size: 12 MB in all, more
/// than the kernel buffers of a socket on loopback hold.
const MESSAGES: usize = 200;
const SIZE: usize = 60_000;

/// A server whose client queues are large enough never to overflow here: a
/// stuck client can only be caught by the write timeout.
async fn server() -> Server {
    server_with("100000000", "2").await
}

async fn server_with(queue_bytes: &str, write_timeout_s: &str) -> Server {
    Server::start(&[
        "--api-key",
        "k",
        "--write-timeout-s",
        write_timeout_s,
        "--client-queue-bytes",
        queue_bytes,
        "--client-queue-messages",
        "100000",
        "--max-payload",
        "100000",
    ])
    .await
}

/// A TCP connection with a small receive buffer, so a client that does not
/// read stalls the server's writes soon.
async fn tcp(addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(addr).await.unwrap()
}

async fn publish_all(server: &Server, room: &str) {
    let chunk = "y".repeat(SIZE);
    for i in 0..MESSAGES {
        let body = json!({"channel": room, "data": format!("{i:08}{chunk}")}).to_string();
        let (status, body) = server.json("POST", "/api/publish", Some("k"), &body).await;
        assert_eq!(status, 200, "{body}");
    }
}

/// Waits until `series` reads `value` on `/metrics`.
async fn metric_reaches(server: &Server, series: &str, value: f64, limit: Duration) {
    let start = tokio::time::Instant::now();
    loop {
        let now = server.metric(series).await;
        if now == value {
            return;
        }
        assert!(
            start.elapsed() < limit,
            "{series} is {now}, not {value}, after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Publishes into `room`, then checks that the stuck clients are closed as
/// slow consumers and only the normal member is left.
async fn stuck_clients_are_closed(server: &Server, transport: &str, room: &str) {
    let open = format!("roomcast_connections{{transport=\"{transport}\"}}");
    assert_eq!(server.metric(&open).await, (STUCK + 1) as f64);
    stuck_clients_leave(server, transport, room).await;
    // Main before the write deadline: 20 of 20 still open after 50 s.
    metric_reaches(server, &open, 1.0, Duration::from_secs(20)).await;
}

/// Publishes into `room`; the stuck clients are counted as slow consumers
/// and leave the room (their sockets may wait for the write deadline to
/// give up on the close frame).
async fn stuck_clients_leave(server: &Server, transport: &str, room: &str) {
    let slow =
        format!("roomcast_disconnects_total{{transport=\"{transport}\",reason=\"slow_consumer\"}}");
    assert_eq!(server.running.hub.room_size(room), STUCK + 1);
    let slow_before = server.metric(&slow).await;
    publish_all(server, room).await;
    metric_reaches(
        server,
        &slow,
        slow_before + STUCK as f64,
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(server.running.hub.room_size(room), 1);
}

#[tokio::test]
async fn ws_clients_that_stop_reading_are_closed() {
    // By the write deadline.
    ws_stuck_clients(&server().await, true).await;
    metric_reaches(
        &server().await,
        "roomcast_connections{transport=\"ws\"}",
        0.0,
        Duration::from_secs(10),
    )
    .await;
    // By their queue overflowing while the write is blocked, long before
    // the deadline (main noticed the overflow only once the write ended).
    ws_stuck_clients(&server_with("1000000", "600").await, false).await;
}

/// `/ws` members that stop reading, and a normal one; `deadline`: the
/// sockets are released (else only the clients closed).
async fn ws_stuck_clients(server: &Server, deadline: bool) {
    let url = server.url("/ws").replace("http://", "ws://");
    let subscribe = |id: u64| json!({"op": "subscribe", "channel": "busy-ws", "id": id});
    let mut stuck = Vec::new();
    for id in 0..STUCK as u64 {
        let (mut ws, _) =
            tokio_tungstenite::client_async(&url, tcp(server.running.local_addr).await)
                .await
                .unwrap();
        ws.send(Message::text(subscribe(id).to_string()))
            .await
            .unwrap();
        assert_eq!(next_json(&mut ws).await["type"], "ok");
        stuck.push(ws);
    }
    let (mut normal, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    normal
        .send(Message::text(subscribe(99).to_string()))
        .await
        .unwrap();
    assert_eq!(next_json(&mut normal).await["type"], "ok");
    let reader = tokio::spawn(async move {
        for i in 0..MESSAGES {
            let data = next_json(&mut normal).await["data"].as_str().unwrap()[..8].to_owned();
            assert_eq!(data, format!("{i:08}"));
        }
        normal
    });
    if deadline {
        stuck_clients_are_closed(server, "ws", "busy-ws").await;
    } else {
        stuck_clients_leave(server, "ws", "busy-ws").await;
    }
    let _normal = reader
        .await
        .expect("the normal member got every message in order");
    drop(stuck);
}

/// Sends `request` and reads until `marker` has arrived.
async fn request_until(io: &mut TcpStream, request: &str, marker: &str) {
    io.write_all(request.as_bytes()).await.unwrap();
    let mut seen = Vec::new();
    let mut buffer = [0u8; 1024];
    while !String::from_utf8_lossy(&seen).contains(marker) {
        let n = tokio::time::timeout(Duration::from_secs(10), io.read(&mut buffer))
            .await
            .expect("an answer within 10 s")
            .unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buffer[..n]);
    }
}

#[tokio::test]
async fn sse_clients_that_stop_reading_are_closed_on_both_paths() {
    let server = server().await;
    let addr = server.running.local_addr;
    let sse = "GET /sse?channel=busy-sse HTTP/1.1\r\nHost: h\r\n\r\n";
    let mut stuck = Vec::new();
    for i in 0..STUCK {
        let mut io = tcp(addr).await;
        if i % 2 == 1 {
            // Through hyper: /sse after another request on a kept-alive connection.
            let healthz = "GET /healthz HTTP/1.1\r\nHost: h\r\n\r\n";
            request_until(&mut io, healthz, "}").await;
        }
        request_until(&mut io, sse, ": connected").await;
        stuck.push(io);
    }
    let mut normal = TcpStream::connect(addr).await.unwrap();
    request_until(&mut normal, sse, ": connected").await;
    let reader = tokio::spawn(async move {
        let mut lines = BufReader::new(normal).lines();
        let mut received = 0;
        while received < MESSAGES {
            let line = lines.next_line().await.unwrap().expect("stream open");
            if let Some(data) = line.strip_prefix("data: ") {
                let data: serde_json::Value = serde_json::from_str(data).unwrap();
                assert_eq!(
                    &data["data"].as_str().unwrap()[..8],
                    format!("{received:08}")
                );
                received += 1;
            }
        }
        lines
    });
    stuck_clients_are_closed(&server, "sse", "busy-sse").await;
    let _normal = reader
        .await
        .expect("the normal member got every message in order");
    drop(stuck);
}

/// A Socket.IO websocket client in `room` (EIO4, Socket.IO v5).
async fn socketio<S>(ws: &mut WebSocketStream<S>, room: &str)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    assert!(next_engine_text(ws).await.starts_with("0{"));
    ws.send(Message::text("40")).await.unwrap();
    assert!(next_engine_text(ws).await.starts_with("40{"));
    ws.send(Message::text(format!(r#"421["channel","{room}"]"#)))
        .await
        .unwrap();
    while !next_engine_text(ws).await.starts_with("431") {}
}

#[tokio::test]
async fn socketio_websocket_clients_that_stop_reading_are_closed() {
    let server = server().await;
    let url = server
        .url("/socket.io/?EIO=4&transport=websocket")
        .replace("http://", "ws://");
    let mut stuck = Vec::new();
    for _ in 0..STUCK {
        let (mut ws, _) =
            tokio_tungstenite::client_async(&url, tcp(server.running.local_addr).await)
                .await
                .unwrap();
        socketio(&mut ws, "busy-sio").await;
        stuck.push(ws);
    }
    let (mut normal, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    socketio(&mut normal, "busy-sio").await;
    let reader = tokio::spawn(async move {
        let mut received = 0;
        while received < MESSAGES {
            let frame = normal.next().await.expect("open").expect("valid");
            match frame {
                Message::Text(text) if text.as_str() == "2" => {
                    normal.send(Message::text("3")).await.unwrap();
                }
                Message::Text(text) if text.starts_with("42[\"message\"") => {
                    let prefix = format!("42[\"message\",\"{received:08}");
                    assert!(text.starts_with(&prefix), "{}", &text[..40]);
                    received += 1;
                }
                _ => {}
            }
        }
        normal
    });
    stuck_clients_are_closed(&server, "socketio", "busy-sio").await;
    let _normal = reader
        .await
        .expect("the normal member got every message in order");
    drop(stuck);
}
