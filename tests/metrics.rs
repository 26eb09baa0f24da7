//! The metric labels agree across metrics: after one Socket.IO client has
//! received a message, connections, deliveries and bytes out all carry
//! `transport="socketio"` (as `/ws` and `/sse` carry `ws` and `sse`), and
//! bytes out count what both Engine.IO transports wrote.
//!
//! One test: the recorder is process-global, and the polling count is
//! compared exactly, so nothing else may run beside it.

mod support;

use futures_util::SinkExt;
use serde_json::json;
use support::socketio::{get, poll_handshake, post};
use support::{Server, next_engine_text};
use tokio_tungstenite::tungstenite::Message;

const BYTES_OUT: &str = r#"roomcast_bytes_out_total{transport="socketio"}"#;

#[tokio::test]
async fn socketio_is_labelled_socketio_in_connections_deliveries_and_bytes_out() {
    let server = Server::start(&["--api-key", "k"]).await;
    let addr = server.running.local_addr;

    // Polling: every response body the client got is counted, under the
    // same label (the connection core's count, as for /ws and /sse).
    let before = server.metric(BYTES_OUT).await;
    let (sid, handshake) = poll_handshake(addr, 4, "").await;
    let query = format!("EIO=4&transport=polling&sid={sid}");
    let mut polled = handshake.body.len();
    assert_eq!(post(addr, &query, b"40").await.status, 200);
    let connected = get(addr, &query).await;
    assert!(connected.text().starts_with("40{"), "{}", connected.text());
    polled += connected.body.len();
    assert_eq!(
        post(addr, &query, br#"421["channel","polled"]"#)
            .await
            .status,
        200
    );
    let ack = get(addr, &query).await;
    assert!(ack.text().contains(r#"431[{"ok":true}]"#), "{}", ack.text());
    polled += ack.body.len();
    assert_eq!(
        server.metric(BYTES_OUT).await - before,
        polled as f64,
        "bytes out of the polling responses"
    );

    // Websocket.
    let url = format!(
        "ws://{}/socket.io/?EIO=4&transport=websocket",
        server.running.local_addr
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("connect");
    assert!(next_engine_text(&mut ws).await.starts_with('0'));
    ws.send(Message::text("40")).await.unwrap();
    assert!(next_engine_text(&mut ws).await.starts_with("40"));
    ws.send(Message::text(r#"421["channel","labels"]"#))
        .await
        .unwrap();
    assert_eq!(next_engine_text(&mut ws).await, r#"431[{"ok":true}]"#);
    let body = json!({"channel": "labels", "data": "hi"}).to_string();
    assert_eq!(
        server
            .json("POST", "/api/publish", Some("k"), &body)
            .await
            .0,
        200
    );
    assert!(
        next_engine_text(&mut ws)
            .await
            .starts_with(r#"42["message","hi""#)
    );

    for series in [
        r#"roomcast_connections{transport="socketio"}"#,
        r#"roomcast_connects_total{transport="socketio"}"#,
        r#"roomcast_deliveries_total{transport="socketio"}"#,
        r#"roomcast_bytes_out_total{transport="socketio"}"#,
    ] {
        assert!(
            server.metric(series).await >= 1.0,
            "{series} is missing or 0"
        );
    }
    let metrics = server.request("GET", "/metrics", None, "").await;
    let body = http_body_util::BodyExt::collect(metrics.into_body())
        .await
        .unwrap()
        .to_bytes();
    let text = String::from_utf8_lossy(&body);
    assert!(
        !text.contains(r#"transport="socket.io""#),
        "one label per transport"
    );
}
