//! The HTTP API and the SSE transport, against a server started in-process on
//! a free port with the memory broker.

use std::time::Duration;

use http_body_util::BodyExt;

mod support;
use support::Server;
use support::sse::messages as sse_events;

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

/// A raw HTTP/1 connection, to see exactly what goes over the wire.
struct Raw {
    tcp: tokio::net::TcpStream,
    read: Vec<u8>,
}

impl Raw {
    async fn connect(server: &Server) -> Raw {
        let tcp = tokio::net::TcpStream::connect(server.running.local_addr)
            .await
            .unwrap();
        Raw {
            tcp,
            read: Vec::new(),
        }
    }

    async fn send(&mut self, bytes: &str) {
        use tokio::io::AsyncWriteExt;
        self.tcp.write_all(bytes.as_bytes()).await.unwrap();
    }

    /// Sends a request in two writes (the server must not assume one read
    /// holds the request line); returns the response head, asserting 200.
    async fn request_in_two(&mut self, first: &str, rest: &str) -> String {
        self.send(first).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        self.send(rest).await;
        let head = self.until("\r\n\r\n").await;
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        head
    }

    /// Reads until `needle` has arrived; returns everything up to and with it.
    async fn until(&mut self, needle: &str) -> String {
        use tokio::io::AsyncReadExt;
        loop {
            let text = String::from_utf8_lossy(&self.read).into_owned();
            if let Some(at) = text.find(needle) {
                self.read.drain(..at + needle.len());
                return text[..at + needle.len()].to_owned();
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(Duration::from_secs(5), self.tcp.read(&mut chunk))
                .await
                .unwrap_or_else(|_| panic!("{needle:?} within 5 s; got {text:?}"))
                .unwrap();
            assert!(n > 0, "closed before {needle:?}; got {text:?}");
            self.read.extend_from_slice(&chunk[..n]);
        }
    }

    /// Reads until the server closes the connection; returns what came.
    async fn until_closed(&mut self) -> String {
        use tokio::io::AsyncReadExt;
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), self.tcp.read_to_end(&mut rest))
            .await
            .expect("closed within 5 s")
            .unwrap();
        self.read.extend_from_slice(&rest);
        String::from_utf8_lossy(&std::mem::take(&mut self.read)).into_owned()
    }
}

async fn wait_room_size(server: &Server, room: &str, size: usize) {
    for _ in 0..250 {
        if server.running.hub.room_size(room) == size {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(server.running.hub.room_size(room), size, "room {room}");
}

#[tokio::test]
async fn fresh_sse_connections_stream_close_delimited_and_leave_on_eof() {
    let server = Server::start(&["--api-key", "k2"]).await;
    let mut raw = Raw::connect(&server).await;
    // The request line split over two writes must still be recognised.
    let head = raw
        .request_in_two("GET /s", "se?channel=direct HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    assert!(
        head.contains("content-type: text/event-stream\r\n"),
        "{head}"
    );
    assert!(head.contains("connection: close\r\n"), "{head}");
    assert!(
        !head.contains("transfer-encoding"),
        "no chunked framing: {head}"
    );
    raw.until(": connected\n\n").await;
    wait_room_size(&server, "direct", 1).await;
    assert_eq!(publish(&server, "direct", r#"{"n":7}"#).await.0, 200);
    let event = raw.until("\n\n").await;
    assert!(event.starts_with("event: message\nid: "), "{event}");
    assert!(event.contains(r#""data":{"n":7}"#), "{event}");
    // The hub forgets the client as soon as it hangs up, not at the next heartbeat.
    drop(raw);
    wait_room_size(&server, "direct", 0).await;
}

#[tokio::test]
async fn sse_after_another_request_on_a_kept_alive_connection_still_streams() {
    let server = Server::start(&["--api-key", "k2"]).await;
    let mut raw = Raw::connect(&server).await;
    let head = raw
        .request_in_two("GE", "T /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .expect("content-length")
        .parse()
        .unwrap();
    let body = raw.until("}").await;
    assert_eq!(body.len(), length, "{body}");
    // hyper serves this one (keep-alive), with chunked framing.
    raw.send("GET /sse?channel=kept HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let head = raw.until("\r\n\r\n").await;
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    wait_room_size(&server, "kept", 1).await;
    assert_eq!(publish(&server, "kept", "1").await.0, 200);
    raw.until("event: message\nid: ").await;
    let event = raw.until("\n\n").await;
    assert!(event.contains(r#""data":1"#), "{event}");
}

#[tokio::test]
async fn bad_sse_request_heads_get_specific_errors() {
    let server = Server::start(&["--api-key", "k2"]).await;
    let cases = [
        (
            "GET /sse?channel=a HTTP/1.1\r\nBad Name: x\r\n\r\n".to_owned(),
            "400 Bad Request",
            "bad_request",
        ),
        (
            format!(
                "GET /sse?channel=a HTTP/1.1\r\nx-big: {}\r\n\r\n",
                "v".repeat(20_000)
            ),
            "431 Request Header Fields Too Large",
            "headers_too_large",
        ),
        (
            "GET /sse HTTP/1.1\r\nHost: x\r\n\r\n".to_owned(),
            "400 Bad Request",
            "no_channel",
        ),
        (
            "GET /sse?channel=%01 HTTP/1.0\r\n\r\n".to_owned(),
            "400 Bad Request",
            "room_invalid",
        ),
    ];
    for (request, status, code) in cases {
        let mut raw = Raw::connect(&server).await;
        raw.send(&request).await;
        let response = raw.until_closed().await;
        assert!(
            response.starts_with(&format!("HTTP/1.1 {status}\r\n")),
            "{code}: {response}"
        );
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["error"], code, "{body}");
    }
    // The server is still fine.
    assert_eq!(server.json("GET", "/healthz", None, "").await.0, 200);
}

#[tokio::test]
async fn slow_sse_reader_is_closed_while_another_receives_everything_in_order() {
    let server = Server::start(&[
        "--api-key",
        "k2",
        "--client-queue-messages",
        "16",
        "--client-queue-bytes",
        "65536",
    ])
    .await;
    let mut slow = Raw::connect(&server).await;
    slow.send("GET /sse?channel=slow HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    slow.until(": connected\n\n").await;
    let mut good = server.request("GET", "/sse?channel=slow", None, "").await;
    wait_room_size(&server, "slow", 2).await;
    // Enough to fill the slow client's socket buffers and then its queue.
    let payload = format!("\"{}\"", "x".repeat(32 * 1024));
    let total = 600;
    let receiver = tokio::spawn(async move { sse_events(good.body_mut(), total).await });
    for i in 0..total {
        let body = format!(r#"{{"channel":"slow","data":[{i},{payload}]}}"#);
        let (status, _) = server.json("POST", "/api/publish", Some("k2"), &body).await;
        assert_eq!(status, 200);
        if i % 20 == 0 {
            // Give the good reader time to drain; the slow one never reads.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let got = receiver.await.unwrap();
    let order: Vec<i64> = got.iter().map(|e| e["data"][0].as_i64().unwrap()).collect();
    assert_eq!(order, (0..total as i64).collect::<Vec<_>>());
    wait_room_size(&server, "slow", 1).await;
    let metrics = server.request("GET", "/metrics", None, "").await;
    let text = metrics.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&text);
    assert!(
        text.lines()
            .any(|l| l.starts_with("roomcast_disconnects_total")
                && l.contains("transport=\"sse\"")
                && l.contains("reason=\"slow_consumer\"")),
        "{text}"
    );
}
