//! The security layer over real sockets, on every transport: JWT connection
//! auth (refusals before the upgrade, CONNECT_ERROR for Socket.IO), channel
//! rules (`forbidden` naming the room, the connection stays), origin checks,
//! connection limits, message rate and rooms per connection, and API keys
//! and tokens never written to the logs.

mod support;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use support::Server;
use support::http::http;
use support::socketio::ws as sio_ws;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const SECRET: &str = "test-secret-test-secret-test-secret!";

const RULES: &str = r#"
[[rules]]
match = "public:*"
subscribe = "anyone"

[[rules]]
match = "lobby"
subscribe = "authenticated"

[[rules]]
match = "admin:*"
subscribe = "nobody"
publish = "nobody"
"#;

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

fn token(claims: Value) -> String {
    support::hs256_token(SECRET, &claims)
}

fn user_token() -> String {
    token(json!({"sub": "u1", "channels": ["device:*", "user:{sub}"], "exp": now() + 600}))
}

fn expired_token() -> String {
    token(json!({"sub": "u1", "channels": ["device:*"], "exp": now() - 600}))
}

fn alg_none_token() -> String {
    use base64::Engine as _;
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(br#"{"sub":"root","channels":["*"]}"#)
    )
}

/// A config file holding the rules; removed on drop.
struct RulesFile(std::path::PathBuf);

impl RulesFile {
    fn new(extra: &str) -> RulesFile {
        let path = std::env::temp_dir().join(format!(
            "roomcast-rules-{}-{}.toml",
            std::process::id(),
            rand::random::<u64>()
        ));
        let mut file = std::fs::File::create(&path).unwrap();
        write!(file, "{extra}\n{RULES}").unwrap();
        RulesFile(path)
    }
    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for RulesFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

async fn jwt_server(extra: &[&str]) -> (Server, RulesFile) {
    let file = RulesFile::new(&format!("auth = \"jwt\"\njwt_secret = \"{SECRET}\"\n"));
    let mut args = vec!["--config", file.path(), "--api-key", "k"];
    args.extend_from_slice(extra);
    // `args` borrows `file`; build the server before moving it out.
    let server = Server::start(&args).await;
    (server, file)
}

const UPGRADE: &[(&str, &str)] = &[
    ("Upgrade", "websocket"),
    ("Connection", "Upgrade"),
    ("Sec-WebSocket-Version", "13"),
    ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
];

/// The status and JSON body of a refused request. Upgrade requests (`/ws`,
/// Socket.IO websocket) carry real upgrade headers.
async fn refused(addr: SocketAddr, target: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    let upgrade = target.starts_with("/ws") || target.contains("transport=websocket");
    if !upgrade {
        let response = http(addr, "GET", target, headers, b"").await;
        let body = serde_json::from_slice(&response.body)
            .unwrap_or_else(|_| json!({"raw": response.text()}));
        return (response.status, body);
    }
    let mut all: Vec<(&str, &str)> = headers.to_vec();
    all.extend_from_slice(UPGRADE);
    let (status, head, mut stream, mut rest) = open(addr, target, &all).await;
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length: ")
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap_or(0);
    let mut buf = [0u8; 1024];
    while rest.len() < length {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("body in time")
            .unwrap();
        assert!(n > 0, "body cut short");
        rest.extend_from_slice(&buf[..n]);
    }
    let body = serde_json::from_slice(&rest).unwrap_or_else(|_| json!({"raw": head}));
    (status, body)
}

/// Status line and headers of a response that may stay open (SSE, upgrades).
async fn head(addr: SocketAddr, target: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let (status, head, _, _) = open(addr, target, headers).await;
    (status, head)
}

/// Sends a GET and reads the response head; returns the status, the head,
/// the stream and what was read past the head.
async fn open(
    addr: SocketAddr,
    target: &str,
    headers: &[(&str, &str)],
) -> (u16, String, TcpStream, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut request = format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 1024];
    while !raw.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("response head in time")
            .unwrap();
        assert!(n > 0, "connection closed before the head");
        raw.extend_from_slice(&buf[..n]);
    }
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let text = String::from_utf8_lossy(&raw[..end]).into_owned();
    let status = text.split(' ').nth(1).unwrap().parse().unwrap();
    let rest = raw[end..].to_vec();
    (status, text, stream, rest)
}

type WsClient =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn ws_connect(server: &Server, query: &str) -> WsClient {
    let url = server
        .url(&format!("/ws{query}"))
        .replace("http://", "ws://");
    tokio_tungstenite::connect_async(url)
        .await
        .expect("upgrade")
        .0
}

async fn ws_request(ws: &mut WsClient, request: Value) -> Value {
    ws.send(Message::text(request.to_string())).await.unwrap();
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("reply in time")
            .expect("open")
            .expect("frame");
        if let Message::Text(text) = frame {
            return serde_json::from_str(text.as_str()).unwrap();
        }
    }
}

#[tokio::test]
async fn ws_needs_a_valid_token_and_joins_only_what_it_allows() {
    let (server, _file) = jwt_server(&[]).await;
    let addr = server.running.local_addr;
    let (status, body) = refused(addr, "/ws", &[]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("token_missing"))
    );
    let (status, body) = refused(addr, &format!("/ws?token={}", expired_token()), &[]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("token_expired"))
    );
    let (status, body) = refused(addr, &format!("/ws?token={}", alg_none_token()), &[]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("token_bad_algorithm"))
    );
    let forged = format!("{}x", &user_token()[..user_token().len() - 1]);
    let (status, body) = refused(addr, &format!("/ws?token={forged}"), &[]).await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body["error"].as_str().unwrap().starts_with("token_"),
        "{body}"
    );

    // Bearer header.
    let url = server.url("/ws").replace("http://", "ws://");
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {}", user_token()).parse().unwrap(),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    for (room, expected) in [
        ("device:7", json!({"type": "ok", "id": 1})),
        ("user:u1", json!({"type": "ok", "id": 1})),
        ("public:news", json!({"type": "ok", "id": 1})),
        ("lobby", json!({"type": "ok", "id": 1})),
    ] {
        let reply = ws_request(
            &mut ws,
            json!({"op": "subscribe", "channel": room, "id": 1}),
        )
        .await;
        assert_eq!(reply, expected, "{room}");
    }
    for room in ["user:u2", "admin:x", "other"] {
        let reply = ws_request(
            &mut ws,
            json!({"op": "subscribe", "channel": room, "id": 2}),
        )
        .await;
        assert_eq!(reply["code"], "forbidden", "{room}: {reply}");
        assert_eq!(
            reply["message"],
            format!("not allowed to subscribe to {room:?}")
        );
    }
    // Nothing else changed: the allowed rooms still deliver.
    let body = json!({"channel": "device:7", "data": "hi"}).to_string();
    let (status, _) = server.json("POST", "/api/publish", Some("k"), &body).await;
    assert_eq!(status, 200);
    let message = loop {
        let reply = ws_request(&mut ws, json!({"op": "ping"})).await;
        if reply["type"] == "message" {
            break reply;
        }
        // The pong may come first; the message follows.
        let next = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Message::Text(text) = next {
            break serde_json::from_str::<Value>(text.as_str()).unwrap();
        }
    };
    assert_eq!(message["channel"], "device:7");
}

#[tokio::test]
async fn sse_checks_the_token_and_every_room() {
    let (server, _file) = jwt_server(&["--allow-anonymous"]).await;
    let addr = server.running.local_addr;
    // Anonymous may read public rooms only.
    let (status, _) = head(addr, "/sse?channel=public:a", &[]).await;
    assert_eq!(status, 200);
    let (status, body) = refused(addr, "/sse?channel=public:a&channel=device:1", &[]).await;
    assert_eq!((status, body["error"].as_str()), (403, Some("forbidden")));
    assert_eq!(body["message"], "not allowed to subscribe to \"device:1\"");
    let (status, body) = refused(addr, "/sse?channel=lobby", &[]).await;
    assert_eq!((status, body["error"].as_str()), (403, Some("forbidden")));
    // A bad token is refused even when anonymous access is allowed.
    let bad = format!("Bearer {}", expired_token());
    let (status, body) = refused(addr, "/sse?channel=public:a", &[("Authorization", &bad)]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("token_expired"))
    );
    let good = format!("Bearer {}", user_token());
    let (status, _) = head(
        addr,
        "/sse?channel=device:1&channel=lobby",
        &[("Authorization", &good)],
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = head(
        addr,
        &format!("/sse?channel=user:u1&token={}", user_token()),
        &[],
    )
    .await;
    assert_eq!(status, 200);
    let (status, body) = refused(addr, "/sse?channel=admin:x", &[("Authorization", &good)]).await;
    assert_eq!((status, body["error"].as_str()), (403, Some("forbidden")));
}

#[tokio::test]
async fn socketio_v5_auth_and_v4_query_token() {
    let (server, _file) = jwt_server(&[]).await;
    let addr = server.running.local_addr;
    // v5 (clients 3.x/4.x): auth payload.
    let mut w = sio_ws(addr, "EIO=4&transport=websocket").await;
    w.text().await;
    w.send("40").await;
    let refused = w.text().await;
    assert!(
        refused.starts_with(r#"44{"data":{"code":"token_missing""#)
            && refused.contains(r#""message":"token_missing""#),
        "{refused}"
    );
    w.send(&format!("40{}", json!({"token": expired_token()})))
        .await;
    assert!(w.text().await.contains(r#""message":"token_expired""#));
    w.send(&format!("40{}", json!({"token": alg_none_token()})))
        .await;
    assert!(
        w.text()
            .await
            .contains(r#""message":"token_bad_algorithm""#)
    );
    w.send(&format!("40{}", json!({"token": user_token()})))
        .await;
    // The CONNECT answer: `40{"pid":..,"sid":..}` (the pid since
    // connection state recovery).
    let answer = w.text().await;
    let data: Value = serde_json::from_str(answer.strip_prefix("40").expect("CONNECT")).unwrap();
    assert!(data["sid"].is_string(), "{answer}");
    w.send(r#"421["channel","device:1"]"#).await;
    assert_eq!(w.text().await, r#"431[{"ok":true}]"#);
    w.send(r#"422["channel",["device:2","admin:x"]]"#).await;
    assert_eq!(
        w.text().await,
        r#"432[{"code":"forbidden","error":"not allowed to subscribe to \"admin:x\"","ok":false}]"#
    );
    w.send(r#"42["channel","user:u2"]"#).await;
    assert_eq!(
        w.text().await,
        r#"42["error",{"code":"forbidden","message":"not allowed to subscribe to \"user:u2\""}]"#
    );
    w.send(r#"423["channel","user:u1"]"#).await;
    assert_eq!(w.text().await, r#"433[{"ok":true}]"#);

    // v4 (clients 1.x/2.x): the token rides in the handshake query.
    let mut old = sio_ws(
        addr,
        &format!("EIO=3&transport=websocket&token={}", expired_token()),
    )
    .await;
    old.text().await;
    assert_eq!(old.text().await, r#"44"token_expired""#);
    let mut old = sio_ws(
        addr,
        &format!("EIO=3&transport=websocket&token={}", user_token()),
    )
    .await;
    old.text().await;
    assert_eq!(old.text().await, "40");
    old.send(r#"421["channel","device:9"]"#).await;
    assert_eq!(old.text().await, r#"431[{"ok":true}]"#);
}

#[tokio::test]
async fn origins_are_checked_on_browser_transports() {
    let server = Server::start(&["--allowed-origins", "https://app.example"]).await;
    let addr = server.running.local_addr;
    let evil = [("Origin", "https://evil.example")];
    for target in [
        "/ws",
        "/sse?channel=a",
        "/socket.io/?EIO=4&transport=polling",
        "/socket.io/?EIO=4&transport=websocket",
    ] {
        let (status, body) = refused(addr, target, &evil).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (403, Some("origin_not_allowed")),
            "{target}: {body}"
        );
    }
    let response = http(
        addr,
        "GET",
        "/socket.io/?EIO=4&transport=polling",
        &[("Origin", "https://app.example")],
        b"",
    )
    .await;
    assert_eq!(response.status, 200);
    assert_eq!(
        response.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    for origin in ["http://localhost:3000", "https://app.example"] {
        let mut all = vec![("Origin", origin)];
        all.extend_from_slice(UPGRADE);
        let (status, _) = head(addr, "/ws", &all).await;
        assert_eq!(status, 101, "{origin}");
    }
    let (status, text) = head(addr, "/sse?channel=a", &[("Origin", "https://app.example")]).await;
    assert_eq!(status, 200);
    assert!(
        text.to_ascii_lowercase()
            .contains("access-control-allow-origin: https://app.example")
    );
    // Native clients send no Origin.
    let (status, _) = head(addr, "/sse?channel=a", &[]).await;
    assert_eq!(status, 200);
}

/// Socket.IO is admitted by the same code as `/ws` and `/sse`: a refused
/// handshake (polling or websocket, EIO 3 or 4) answers the same status and
/// body as the other transports, without CORS headers for a refused origin,
/// and counts in `roomcast_refusals_total` under the same kind and code.
#[tokio::test]
async fn socketio_handshakes_are_refused_as_every_transport_is() {
    let server = Server::start(&[
        "--allowed-origins",
        "https://app.example",
        "--limit-loopback",
        "--connect-rate-per-ip",
        "0.01",
        "--connect-burst-per-ip",
        "1",
    ])
    .await;
    let addr = server.running.local_addr;
    let targets = [
        "/ws",
        "/sse?channel=a",
        "/socket.io/?EIO=4&transport=polling",
        "/socket.io/?EIO=4&transport=websocket",
        "/socket.io/?EIO=3&transport=websocket",
    ];
    let origins = r#"roomcast_refusals_total{kind="origin",code="origin_not_allowed"}"#;
    let before = server.metric(origins).await;
    for target in targets {
        let (status, body) = refused(addr, target, &[("Origin", "https://evil.example")]).await;
        assert_eq!(
            (status, body),
            (
                403,
                json!({
                    "error": "origin_not_allowed",
                    "message": "origin \"https://evil.example\" is not allowed (server flag --allowed-origins)",
                })
            ),
            "{target}"
        );
    }
    assert!(server.metric(origins).await - before >= targets.len() as f64);
    let response = http(
        addr,
        "GET",
        "/socket.io/?EIO=4&transport=polling",
        &[("Origin", "https://evil.example")],
        b"",
    )
    .await;
    assert_eq!(response.header("access-control-allow-origin"), None);

    // The address's one new connection used (the connect rate: a per-IP
    // connection limit would also refuse the test's own /metrics sockets),
    // every transport is refused alike.
    let (status, _) = hold_ws(addr, &[]).await;
    assert_eq!(status, 101);
    let rate = r#"roomcast_refusals_total{kind="limit",code="connect_rate_limited"}"#;
    let before = server.metric(rate).await;
    for target in targets {
        let (status, body) = refused(addr, target, &[]).await;
        assert_eq!(
            (status, body),
            (
                429,
                json!({
                    "error": "connect_rate_limited",
                    "message": "too many new connections from your address; slow down",
                })
            ),
            "{target}"
        );
    }
    assert!(server.metric(rate).await - before >= targets.len() as f64);
}

#[tokio::test]
async fn connections_per_ip_and_connect_rate_are_limited() {
    let server = Server::start(&[
        "--limit-loopback",
        "--max-connections-per-ip",
        "2",
        "--connect-rate-per-ip",
        "0",
    ])
    .await;
    let addr = server.running.local_addr;
    let a = ws_connect(&server, "").await;
    let (status, _) = head(addr, "/sse?channel=x", &[]).await;
    assert_eq!(status, 200);
    // The SSE stream above was dropped with its socket; wait for its slot.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let _b = ws_connect(&server, "").await;
    let (status, body) = refused(addr, "/ws", &[]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("too_many_connections_per_ip"))
    );
    let (status, body) = refused(addr, "/socket.io/?EIO=4&transport=polling", &[]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("too_many_connections_per_ip"))
    );
    drop(a);
    let mut tries = 0;
    while refused(addr, "/socket.io/?EIO=4&transport=polling", &[])
        .await
        .0
        != 200
    {
        tries += 1;
        assert!(tries < 100, "the slot was freed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let server = Server::start(&[
        "--limit-loopback",
        "--connect-rate-per-ip",
        "0.5",
        "--connect-burst-per-ip",
        "2",
    ])
    .await;
    let _a = ws_connect(&server, "").await;
    let _b = ws_connect(&server, "").await;
    let (status, body) = refused(server.running.local_addr, "/ws", &[]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (429, Some("connect_rate_limited"))
    );
}

/// A `/ws` upgrade with extra headers, kept open: its status and socket.
async fn hold_ws(addr: SocketAddr, headers: &[(&str, &str)]) -> (u16, TcpStream) {
    let mut all: Vec<(&str, &str)> = headers.to_vec();
    all.extend_from_slice(UPGRADE);
    let (status, _, stream, _) = open(addr, "/ws", &all).await;
    (status, stream)
}

#[tokio::test]
async fn per_ip_limits_count_the_client_a_trusted_proxy_forwards() {
    // Loopback stands in for every address: the proxy is 127.0.0.1, the
    // clients behind it 127.0.0.2 and up (so --limit-loopback).
    let limits = [
        "--limit-loopback",
        "--max-connections-per-ip",
        "1",
        "--connect-rate-per-ip",
        "0",
    ];
    let xff = |ip| [("X-Forwarded-For", ip)];
    let per_ip = |(status, body): (u16, Value)| {
        assert_eq!(
            (status, body["error"].as_str()),
            (503, Some("too_many_connections_per_ip"))
        );
    };
    let trusted = [&limits[..], &["--trusted-proxies", "127.0.0.1,::1"]].concat();
    let server = Server::start(&trusted).await;
    let addr = server.running.local_addr;
    let (status, _a) = hold_ws(addr, &xff("127.0.0.2")).await;
    assert_eq!(status, 101);
    let (status, _b) = hold_ws(addr, &xff("127.0.0.3")).await;
    assert_eq!(
        status, 101,
        "another client behind the same proxy has its own slot"
    );
    per_ip(refused(addr, "/ws", &xff("127.0.0.2")).await);
    // A forged first hop does not help: the hop our proxy appended counts.
    per_ip(refused(addr, "/ws", &xff("127.0.0.9, 127.0.0.3")).await);
    // Socket.IO, with the standard header (the polling session keeps its slot).
    let polling = "/socket.io/?EIO=4&transport=polling";
    let standard = [("Forwarded", "for=\"127.0.0.4:5555\";proto=http")];
    assert_eq!(refused(addr, polling, &standard).await.0, 200);
    per_ip(refused(addr, polling, &standard).await);
    // SSE (answered without hyper on a fresh connection) counts the forwarded client too.
    let (status, _, _d, _) = open(addr, "/sse?channel=p", &xff("127.0.0.6")).await;
    assert_eq!(status, 200);
    per_ip(refused(addr, "/sse?channel=p", &xff("127.0.0.6")).await);
    // Garbage counts against the proxy's own address.
    let (status, _c) = hold_ws(addr, &xff("not-an-address")).await;
    assert_eq!(status, 101);
    per_ip(refused(addr, "/ws", &[]).await);

    // Not trusted: the headers are ignored and every client is the peer.
    let server = Server::start(&limits).await;
    let addr = server.running.local_addr;
    let (status, _a) = hold_ws(addr, &xff("127.0.0.2")).await;
    assert_eq!(status, 101);
    per_ip(refused(addr, "/ws", &xff("127.0.0.3")).await);
    per_ip(refused(addr, polling, &[("Forwarded", "for=127.0.0.5")]).await);
}

#[tokio::test]
async fn message_rate_and_rooms_per_connection() {
    let server = Server::start(&[
        "--max-messages-per-s",
        "5",
        "--max-rooms-per-connection",
        "2",
    ])
    .await;
    let addr = server.running.local_addr;
    let mut calm = ws_connect(&server, "").await;
    let mut noisy = ws_connect(&server, "").await;
    for i in 0..2 {
        let reply = ws_request(
            &mut calm,
            json!({"op": "subscribe", "channel": format!("r{i}"), "id": i}),
        )
        .await;
        assert_eq!(reply["type"], "ok");
    }
    let reply = ws_request(
        &mut calm,
        json!({"op": "subscribe", "channel": "r3", "id": 3}),
    )
    .await;
    assert_eq!(reply["code"], "too_many_channels");
    // A burst of 10 (2 s worth) passes, then the connection is closed
    // (1008), or reset when the close meets the client's unread frames.
    for _ in 0..12 {
        if noisy.send(Message::text(r#"{"op":"ping"}"#)).await.is_err() {
            break;
        }
    }
    let mut pongs = 0;
    loop {
        match tokio::time::timeout(Duration::from_secs(5), noisy.next()).await {
            Ok(Some(Ok(Message::Text(_)))) => pongs += 1,
            Ok(Some(Ok(Message::Close(Some(frame))))) => {
                assert_eq!(u16::from(frame.code), 1008);
                break;
            }
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(_)) | None) => break,
            Err(_) => panic!("the flooding client was not closed"),
        }
    }
    assert!(pongs <= 10, "{pongs} pongs: the rate was not enforced");
    let reply = ws_request(&mut calm, json!({"op": "ping", "id": 9})).await;
    assert_eq!(
        reply,
        json!({"type": "pong", "id": 9}),
        "the calm client is unaffected"
    );

    let (status, body) = refused(addr, "/sse?channel=a&channel=b&channel=c", &[]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("too_many_channels"))
    );

    let mut w = sio_ws(addr, "EIO=4&transport=websocket").await;
    w.text().await;
    w.send("40").await;
    w.text().await;
    w.send(r#"421["channel",["a","b","c"]]"#).await;
    assert_eq!(
        w.text().await,
        r#"431[{"code":"too_many_channels","error":"at most 2 rooms per connection","ok":false}]"#
    );
    let mut sent = 0;
    while sent < 40 {
        w.send(r#"42["noop"]"#).await;
        sent += 1;
    }
    assert!(
        w.closed_within(50).await.is_some(),
        "the Socket.IO client that floods is closed"
    );
}

#[tokio::test]
async fn an_overflowing_polling_buffer_has_its_own_reason() {
    let server = Server::start(&["--max-polling-buffer", "1024", "--api-key", "k"]).await;
    let addr = server.running.local_addr;
    let series = r#"roomcast_disconnects_total{transport="socketio",reason="polling_buffer_full"}"#;
    let slow = r#"roomcast_disconnects_total{transport="socketio",reason="slow_consumer"}"#;
    let (before, slow_before) = (server.metric(series).await, server.metric(slow).await);
    let (sid, _) = support::socketio::poll_handshake(addr, 4, "").await;
    let query = format!("EIO=4&transport=polling&sid={sid}");
    support::socketio::post(addr, &query, b"40").await;
    assert!(
        support::socketio::get(addr, &query)
            .await
            .text()
            .starts_with("40")
    );
    support::socketio::post(addr, &query, br#"420["channel","pb"]"#).await;
    assert!(
        support::socketio::get(addr, &query)
            .await
            .text()
            .contains("430[")
    );
    // The memory broker delivers before the publish answers. With no poll
    // pending, the second 600-byte message is over the 1 KiB buffer, but
    // the client may still be polling: only frames that waited past the
    // stall window (5 s) make it a stopped client, and then it is dropped.
    let body = json!({"channel": "pb", "data": "x".repeat(600)}).to_string();
    let publish = || async {
        let status = server
            .json("POST", "/api/publish", Some("k"), &body)
            .await
            .0;
        assert_eq!(status, 200);
    };
    publish().await;
    publish().await;
    assert_eq!(server.metric(series).await, before, "fresh frames: kept");
    tokio::time::sleep(Duration::from_millis(5_500)).await;
    publish().await;
    let reply = support::socketio::get(addr, &query).await;
    assert_eq!(
        reply.text(),
        "1",
        "the session is closed, nothing delivered"
    );
    assert_eq!(server.metric(series).await, before + 1.0);
    assert_eq!(
        server.metric(slow).await,
        slow_before,
        "not counted as a slow consumer"
    );
}

/// A writer that keeps everything logged, for the test's eyes only.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "current_thread")]
async fn keys_and_tokens_are_never_logged() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter("trace,tungstenite=off,tokio_tungstenite=off,hyper=off,hyper_util=off")
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let (server, _file) = jwt_server(&["--api-key", "api-key-value-42"]).await;
    let addr = server.running.local_addr;
    let body = json!({"channel": "c", "data": 1}).to_string();
    server
        .json("POST", "/api/publish", Some("api-key-value-42"), &body)
        .await;
    server
        .json("POST", "/api/publish", Some("wrong-key-value-43"), &body)
        .await;
    let expired = expired_token();
    refused(addr, &format!("/ws?token={expired}"), &[]).await;
    let good = user_token();
    let mut ws = ws_connect(&server, &format!("?token={good}")).await;
    ws_request(&mut ws, json!({"op": "subscribe", "channel": "admin:x"})).await;
    let mut w = sio_ws(addr, "EIO=4&transport=websocket").await;
    w.text().await;
    w.send(&format!("40{}", json!({"token": good}))).await;
    w.text().await;
    let logs = String::from_utf8_lossy(&captured.0.lock().unwrap()).into_owned();
    assert!(logs.contains("refused"), "the refusals were logged: {logs}");
    for secret in [
        "api-key-value-42",
        "wrong-key-value-43",
        SECRET,
        expired.as_str(),
        good.as_str(),
    ] {
        assert!(!logs.contains(secret), "a secret leaked into the logs");
    }
    // The signature parts too (a token may be cut anywhere).
    for token in [&expired, &good] {
        let signature = token.rsplit('.').next().unwrap();
        assert!(!logs.contains(signature), "a token signature leaked");
    }
}
