//! The metric labels agree across metrics: after one Socket.IO client has
//! received a message, connections, deliveries and bytes out all carry
//! `transport="socketio"` (as `/ws` and `/sse` carry `ws` and `sse`).

mod support;

use futures_util::SinkExt;
use serde_json::json;
use support::{Server, next_engine_text};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn socketio_is_labelled_socketio_in_connections_deliveries_and_bytes_out() {
    let server = Server::start(&["--api-key", "k"]).await;
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
