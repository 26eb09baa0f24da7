//! The HTTP API and the SSE transport, against a server started in-process on
//! a free port with the memory broker.

use std::time::Duration;

use http_body_util::BodyExt;
use hyper::body::Incoming;

mod support;
use support::Server;

/// Reads SSE body chunks until `count` events have arrived; returns their data lines.
async fn sse_events(body: &mut Incoming, count: usize) -> Vec<serde_json::Value> {
    let mut text = String::new();
    let mut events = Vec::new();
    while events.len() < count {
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .expect("event within 5 s")
            .expect("stream open")
            .expect("frame");
        if let Ok(data) = frame.into_data() {
            text.push_str(std::str::from_utf8(&data).unwrap());
        }
        while let Some(end) = text.find("\n\n") {
            let event: String = text.drain(..end + 2).collect();
            if event.starts_with("event: message") {
                let data: Vec<&str> = event
                    .lines()
                    .filter_map(|l| l.strip_prefix("data: "))
                    .collect();
                events.push(serde_json::from_str(&data.join("\n")).unwrap());
            }
        }
    }
    events
}

async fn publish(server: &Server, channel: &str, data: &str) -> (u16, serde_json::Value) {
    let body = format!(r#"{{"channel":"{channel}","data":{data}}}"#);
    server.json("POST", "/api/publish", Some("k2"), &body).await
}

#[tokio::test]
async fn publish_reaches_sse_subscribers_of_that_room_only() {
    let server = Server::start(&["--api-key", "k1", "--api-key", "k2"]).await;
    let mut a = server.request("GET", "/sse?channel=a", None, "").await;
    assert_eq!(a.headers()["content-type"], "text/event-stream");
    let mut b = server.request("GET", "/sse?channel=b", None, "").await;
    // The first chunk (retry + comment) tells us the stream is registered.
    a.body_mut().frame().await.unwrap().unwrap();
    b.body_mut().frame().await.unwrap().unwrap();
    assert_eq!(server.running.hub.room_size("a"), 1);

    assert_eq!(
        publish(&server, "a", r#""text ü""#).await,
        (200, serde_json::json!({"ok": true}))
    );
    assert_eq!(publish(&server, "b", r#"{"n":1}"#).await.0, 200);
    assert_eq!(publish(&server, "a", r#"[1,2]"#).await.0, 200);

    let got = sse_events(a.body_mut(), 2).await;
    assert_eq!(got[0]["data"], "text ü");
    assert_eq!(got[0]["channel"], "a");
    assert_eq!(got[1]["data"], serde_json::json!([1, 2]));
    let got = sse_events(b.body_mut(), 1).await;
    assert_eq!(got[0]["data"], serde_json::json!({"n": 1}));

    drop(a);
    // The hub forgets a stream once its client is gone.
    for _ in 0..100 {
        if server.running.hub.room_size("a") == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(server.running.hub.room_size("a"), 0);
}

#[tokio::test]
async fn publish_errors_are_specific_json() {
    let server = Server::start(&["--api-key", "k"]).await;
    let disabled = Server::start(&[]).await;
    let ok = r#"{"channel":"a","data":1}"#;
    let cases: [(&Server, Option<&str>, &str, u16, &str); 6] = [
        (&server, None, ok, 401, "unauthorized"),
        (&server, Some("nope"), ok, 401, "unauthorized"),
        (&server, Some("k"), r#"{"channel":"a""#, 400, "bad_json"),
        (&server, Some("k"), r#"{"data":1}"#, 400, "bad_json"),
        (
            &server,
            Some("k"),
            r#"{"channel":"","data":1}"#,
            400,
            "room_empty",
        ),
        (&disabled, Some("k"), ok, 403, "publishing_disabled"),
    ];
    for (target, key, body, status, code) in cases {
        let (got_status, got) = target.json("POST", "/api/publish", key, body).await;
        assert_eq!(
            (got_status, got["error"].as_str()),
            (status, Some(code)),
            "{body}"
        );
        assert!(got["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let (_, body) = disabled.json("POST", "/api/publish", Some("k"), ok).await;
    assert!(body["message"].as_str().unwrap().contains("--api-key"));
    let (status, body) = server.json("GET", "/sse?channel=", None, "").await;
    assert_eq!((status, body["error"].as_str()), (400, Some("room_empty")));
}

#[tokio::test]
async fn health_readiness_and_rooms() {
    let server = Server::start(&[]).await;
    assert_eq!(server.json("GET", "/healthz", None, "").await.0, 200);
    let (status, body) = server.json("GET", "/readyz", None, "").await;
    assert_eq!((status, body["broker"].as_str()), (200, Some("memory")));
    let _stream = server
        .request("GET", "/sse?channel=r1&channel=r2", None, "")
        .await;
    let (_, rooms) = server.json("GET", "/api/rooms", None, "").await;
    assert_eq!(
        rooms,
        serde_json::json!([{"name":"r1","members":1},{"name":"r2","members":1}])
    );
    let (_, room) = server.json("GET", "/api/rooms/r2", None, "").await;
    assert_eq!(room, serde_json::json!({"name":"r2","members":1}));
}

#[tokio::test]
async fn metrics_count_connections_publishes_and_deliveries() {
    let server = Server::start(&["--api-key", "k2"]).await;
    let mut stream = server
        .request("GET", "/sse?channel=metered", None, "")
        .await;
    stream.body_mut().frame().await.unwrap().unwrap();
    let before = server
        .metric("roomcast_deliveries_total{transport=\"sse\"}")
        .await;
    assert_eq!(publish(&server, "metered", "1").await.0, 200);
    sse_events(stream.body_mut(), 1).await;
    let after = server
        .metric("roomcast_deliveries_total{transport=\"sse\"}")
        .await;
    // Other tests in this process share the global recorder, so compare deltas.
    assert!(after >= before + 1.0, "deliveries {before} -> {after}");
    assert!(
        server
            .metric("roomcast_connections{transport=\"sse\"}")
            .await
            >= 1.0
    );
    assert!(
        server
            .metric("roomcast_messages_published_total{source=\"http\"}")
            .await
            >= 1.0
    );
    assert!(server.metric("roomcast_broker_up{broker=\"memory\"}").await == 1.0);
    assert!(server.metric("process_resident_memory_bytes").await > 0.0);
}

#[tokio::test]
async fn sse_resumes_after_last_event_id() {
    let server = Server::start(&["--api-key", "k2"]).await;
    let mut first = server.request("GET", "/sse?channel=news", None, "").await;
    first.body_mut().frame().await.unwrap().unwrap();
    assert_eq!(publish(&server, "news", r#""a""#).await.0, 200);
    let seen = sse_events(first.body_mut(), 1).await[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    drop(first);
    assert_eq!(publish(&server, "news", r#""b""#).await.0, 200);

    let request = hyper::Request::get(server.url("/sse?channel=news"))
        .header("last-event-id", &seen)
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let mut resumed = server.client().request(request).await.unwrap();
    let got = sse_events(resumed.body_mut(), 1).await;
    assert_eq!(
        got[0]["data"], "b",
        "the message sent while away is replayed"
    );
}
