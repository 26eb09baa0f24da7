//! Bad input proven harmless, table-driven over real sockets: every case
//! sends something malformed on one transport (/ws, Socket.IO websocket and
//! polling, /sse, the HTTP API) and asserts the exact error it gets. After
//! each case the server still answers /healthz and a well-behaved /ws client
//! in the watched room receives the next message, so it misses none.

mod support;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use support::http::http;
use support::socketio::ws as sio_ws;
use support::{Server, next_json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

const SECRET: &str = "bad-input-secret-bad-input-secret!!";
const MAX_PAYLOAD: usize = 100_000;

type WsClient =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn token(claims: Value) -> String {
    support::hs256_token(SECRET, &claims)
}

fn expired() -> String {
    let now = jsonwebtoken::get_current_timestamp();
    token(json!({"sub": "u", "channels": ["*"], "exp": now - 3600}))
}

fn forged() -> String {
    let good = token(json!({"sub": "u", "channels": ["*"]}));
    let (head, _) = good.rsplit_once('.').unwrap();
    format!("{head}.c2lnbmF0dXJlLW9mLXNvbWVvbmUtZWxzZQ")
}

fn alg_none() -> String {
    use base64::Engine as _;
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(br#"{"sub":"root","channels":["*"]}"#)
    )
}

fn nested(depth: usize) -> String {
    format!(
        r#"{{"op":"subscribe","channel":{}"a"{}}}"#,
        "[".repeat(depth),
        "]".repeat(depth)
    )
}

/// What a /ws case expects.
enum WsExpect {
    /// An error frame with this code; the connection stays.
    Error(&'static str),
    /// The server closes with this code.
    Close(u16),
}

fn ws_cases() -> Vec<(&'static str, Message, WsExpect)> {
    use WsExpect::*;
    let text = |s: String| Message::text(s);
    vec![
        ("invalid JSON", text("{nope".into()), Error("bad_json")),
        (
            "truncated JSON",
            text(r#"{"op":"subscr"#.into()),
            Error("bad_json"),
        ),
        (
            "channel is a number",
            text(r#"{"op":"subscribe","channel":5}"#.into()),
            Error("bad_channel"),
        ),
        (
            "channel is an array",
            text(r#"{"op":"subscribe","channel":["a"]}"#.into()),
            Error("bad_channel"),
        ),
        (
            "channel is null",
            text(r#"{"op":"subscribe","channel":null}"#.into()),
            Error("missing_field"),
        ),
        (
            "deeply nested JSON",
            text(nested(10_000)),
            Error("bad_json"),
        ),
        (
            "huge number",
            text(r#"{"op":"subscribe","channel":"a","since":1e999999}"#.into()),
            Error("bad_json"),
        ),
        (
            "number beyond u64",
            text(
                r#"{"op":"subscribe","channel":"a","since":123456789012345678901234567890}"#.into(),
            ),
            Error("bad_since"),
        ),
        (
            "op is an object",
            text(r#"{"op":{"x":1}}"#.into()),
            Error("bad_request"),
        ),
        (
            "not an object",
            text("[1,2,3]".into()),
            Error("bad_request"),
        ),
        (
            "control characters in room",
            text(json!({"op":"subscribe","channel":"a\u{1}b"}).to_string()),
            Error("room_invalid"),
        ),
        (
            "10 KB room name",
            text(json!({"op":"subscribe","channel":"r".repeat(10_240)}).to_string()),
            Error("room_too_long"),
        ),
        (
            "empty room name",
            text(r#"{"op":"subscribe","channel":""}"#.into()),
            Error("room_empty"),
        ),
        (
            "binary where text is expected",
            Message::binary(vec![0xff, 0x00, 0x7b]),
            Error("binary_unsupported"),
        ),
        (
            "invalid UTF-8 in a text frame",
            Message::Frame(Frame::message(
                vec![b'{', 0xff, 0xfe, b'}'],
                OpCode::Data(Data::Text),
                true,
            )),
            // RFC 6455 §7.4.1: inconsistent data (not UTF-8) is 1007.
            Close(1007),
        ),
        (
            "10 MB frame",
            Message::binary(vec![b'x'; 10 * 1024 * 1024]),
            Close(1009),
        ),
    ]
}

/// What a Socket.IO case expects.
enum SioExpect {
    /// The next text frame starts with this; the connection stays.
    Reply(&'static str),
    /// The server closes the connection.
    Closed,
}

fn sio_cases() -> Vec<(&'static str, Message, SioExpect)> {
    use SioExpect::*;
    let text = |s: &str| Message::text(s.to_owned());
    vec![
        (
            "channel is an object",
            text(r#"42["channel",{"a":1}]"#),
            Reply(r#"42["error",{"code":"bad_room""#),
        ),
        (
            "room name with a lone UTF-16 surrogate",
            text(r#"42["channel","\ud800"]"#),
            Reply(r#"42["error",{"code":"bad_utf16""#),
        ),
        (
            "channel is a number (ack)",
            text(r#"421["channel",5]"#),
            Reply(r#"431[{"code":"bad_room""#),
        ),
        (
            "channel list with a number",
            text(r#"421["channel",["a",1]]"#),
            Reply(r#"431[{"code":"bad_room""#),
        ),
        (
            "control characters in room",
            text("421[\"channel\",\"a\\u0007b\"]"),
            Reply(r#"431[{"code":"room_invalid""#),
        ),
        (
            "10 KB room name",
            Message::text(format!(r#"421["channel","{}"]"#, "r".repeat(10_240))),
            Reply(r#"431[{"code":"room_too_long""#),
        ),
        (
            "huge ack id",
            text(r#"4299999999999999999999999["channel","a"]"#),
            Closed,
        ),
        (
            "truncated Socket.IO packet",
            text(r#"42["channel","#),
            Closed,
        ),
        ("truncated Engine.IO frame", text(""), Closed),
        ("unknown Engine.IO type", text("9hello"), Closed),
        (
            "deeply nested JSON",
            Message::text(format!("42{}{}", "[".repeat(10_000), "]".repeat(10_000))),
            Closed,
        ),
        (
            "binary where text is expected",
            Message::binary(vec![0xde, 0xad]),
            Closed,
        ),
        (
            "10 MB frame",
            Message::text("4".to_owned() + &"x".repeat(10 * 1024 * 1024)),
            Closed,
        ),
    ]
}

/// HTTP cases: (name, method, target, headers, body, status, error code).
type HttpCase = (
    &'static str,
    &'static str,
    String,
    Vec<(&'static str, String)>,
    Vec<u8>,
    u16,
    &'static str,
);

fn http_cases() -> Vec<HttpCase> {
    let key = || vec![("Authorization", "Bearer k".to_owned())];
    let publish = "/api/publish".to_owned();
    vec![
        (
            "publish: invalid JSON",
            "POST",
            publish.clone(),
            key(),
            b"{nope".to_vec(),
            400,
            "bad_json",
        ),
        (
            "publish: channel is a number",
            "POST",
            publish.clone(),
            key(),
            br#"{"channel":5,"data":1}"#.to_vec(),
            400,
            "bad_json",
        ),
        (
            "publish: invalid UTF-8",
            "POST",
            publish.clone(),
            key(),
            b"{\"channel\":\"\xff\",\"data\":1}".to_vec(),
            400,
            "bad_json",
        ),
        (
            "publish: deeply nested",
            "POST",
            publish.clone(),
            key(),
            format!(
                r#"{{"channel":"a","data":{}{}}}"#,
                "[".repeat(10_000),
                "]".repeat(10_000)
            )
            .into_bytes(),
            400,
            "bad_json",
        ),
        (
            "publish: 10 MB body",
            "POST",
            publish.clone(),
            key(),
            vec![b' '; 10 * 1024 * 1024],
            413,
            "too_large",
        ),
        (
            "publish: control characters in room",
            "POST",
            publish.clone(),
            key(),
            br#"{"channel":"a\u0000","data":1}"#.to_vec(),
            400,
            "room_invalid",
        ),
        (
            "publish: no key",
            "POST",
            publish.clone(),
            vec![],
            br#"{"channel":"a","data":1}"#.to_vec(),
            401,
            "unauthorized",
        ),
        (
            "publish: admin room has no rule for keys",
            "POST",
            publish,
            vec![("Authorization", "Bearer nope".to_owned())],
            b"{}".to_vec(),
            401,
            "unauthorized",
        ),
        (
            "sse: control character",
            "GET",
            "/sse?channel=a%01b".into(),
            vec![],
            vec![],
            400,
            "room_invalid",
        ),
        (
            "sse: 10 KB room",
            "GET",
            format!("/sse?channel={}", "r".repeat(10_240)),
            vec![],
            vec![],
            400,
            "room_too_long",
        ),
        (
            "sse: no channel",
            "GET",
            "/sse?channel".into(),
            vec![],
            vec![],
            400,
            "room_empty",
        ),
        (
            "sse: expired token",
            "GET",
            format!("/sse?channel=a&token={}", expired()),
            vec![],
            vec![],
            401,
            "token_expired",
        ),
        (
            "sse: forged token",
            "GET",
            "/sse?channel=a".into(),
            vec![("Authorization", format!("Bearer {}", forged()))],
            vec![],
            401,
            "token_bad_signature",
        ),
        (
            "sse: alg none token",
            "GET",
            format!("/sse?channel=a&token={}", alg_none()),
            vec![],
            vec![],
            401,
            "token_bad_algorithm",
        ),
        (
            "sse: garbage token",
            "GET",
            "/sse?channel=a&token=%FF%FE.%00.x".into(),
            vec![],
            vec![],
            401,
            "token_invalid",
        ),
    ]
}

/// The well-behaved client and the message counter.
struct Watcher {
    ws: WsClient,
    sent: usize,
}

impl Watcher {
    /// Publishes the next message and waits for it: none may be lost.
    async fn check(&mut self, server: &Server, after: &str) {
        self.sent += 1;
        let (status, body) = server.json("GET", "/healthz", None, "").await;
        assert_eq!(status, 200, "after {after}: {body}");
        let data = format!("m{}", self.sent);
        let body = json!({"channel": "watch", "data": data}).to_string();
        let (status, reply) = server.json("POST", "/api/publish", Some("k"), &body).await;
        assert_eq!(status, 200, "after {after}: {reply}");
        let message = next_json(&mut self.ws).await;
        assert_eq!(
            message["data"], data,
            "after {after}: the watcher got every message"
        );
    }
}

/// A request whose body the server may refuse before it is all sent: write
/// errors are expected, the answer is read all the same.
async fn send_huge(
    addr: std::net::SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut head = format!(
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(body).await;
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw)).await;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let reply = text
        .split_once("\r\n\r\n")
        .and_then(|(_, body)| serde_json::from_str(body).ok())
        .unwrap_or_else(|| json!({"raw": text}));
    (status, reply)
}

async fn ws_connect(server: &Server) -> WsClient {
    let url = server.url("/ws").replace("http://", "ws://");
    tokio_tungstenite::connect_async(url).await.unwrap().0
}

#[tokio::test]
async fn bad_input_on_every_transport_hurts_only_its_sender() {
    let max = MAX_PAYLOAD.to_string();
    let file =
        std::env::temp_dir().join(format!("roomcast-bad-input-{}.toml", rand::random::<u64>()));
    std::fs::write(&file, format!("auth = \"jwt\"\njwt_secret = \"{SECRET}\"\nallow_anonymous = true\n[[rules]]\nmatch = \"*\"\nsubscribe = \"anyone\"\n")).unwrap();
    let server = Server::start(&[
        "--config",
        file.to_str().unwrap(),
        "--api-key",
        "k",
        "--max-payload",
        &max,
        "--max-protocol-errors",
        "1000",
    ])
    .await;
    let addr = server.running.local_addr;
    let mut watcher = Watcher {
        ws: ws_connect(&server).await,
        sent: 0,
    };
    watcher
        .ws
        .send(Message::text(
            r#"{"op":"subscribe","channel":"watch","id":0}"#,
        ))
        .await
        .unwrap();
    assert_eq!(next_json(&mut watcher.ws).await["type"], "ok");
    watcher.check(&server, "start").await;

    for (name, frame, expect) in ws_cases() {
        let mut ws = ws_connect(&server).await;
        // Ignore send errors: the server may close while a huge frame is in flight.
        let _ = ws.send(frame).await;
        match expect {
            WsExpect::Error(code) => {
                let reply = next_json(&mut ws).await;
                assert_eq!(reply["type"], "error", "{name}: {reply}");
                assert_eq!(reply["code"], code, "{name}: {reply}");
                ws.send(Message::text(r#"{"op":"ping","id":1}"#))
                    .await
                    .unwrap();
                assert_eq!(next_json(&mut ws).await["type"], "pong", "{name}: still up");
            }
            WsExpect::Close(code) => {
                let got = loop {
                    match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
                        Ok(Some(Ok(Message::Close(frame)))) => {
                            break frame.map(|f| u16::from(f.code));
                        }
                        Ok(Some(Ok(_))) => continue,
                        // Reset while our huge frame was still arriving.
                        Ok(Some(Err(_)) | None) => break None,
                        Err(_) => panic!("{name}: not closed"),
                    }
                };
                assert!(got.is_none_or(|c| c == code), "{name}: closed with {got:?}");
            }
        }
        watcher.check(&server, name).await;
    }

    for (name, frame, expect) in sio_cases() {
        let mut w = sio_ws(addr, "EIO=4&transport=websocket").await;
        w.text().await;
        w.send("40").await;
        assert!(w.text().await.starts_with("40{"));
        let _ = w.inner.send(frame).await;
        match expect {
            SioExpect::Reply(prefix) => {
                let reply = w.text().await;
                assert!(reply.starts_with(prefix), "{name}: {reply}");
                w.send(r#"429["channel","fine"]"#).await;
                assert_eq!(w.text().await, r#"439[{"ok":true}]"#, "{name}: still up");
            }
            SioExpect::Closed => {
                assert!(w.closed_within(10).await.is_some(), "{name}: closed");
            }
        }
        watcher.check(&server, name).await;
    }

    // Socket.IO tokens and polling payloads.
    for (name, auth, code) in [
        ("sio: expired token", expired(), "token_expired"),
        ("sio: forged token", forged(), "token_bad_signature"),
        ("sio: alg none token", alg_none(), "token_bad_algorithm"),
    ] {
        let mut w = sio_ws(addr, "EIO=4&transport=websocket").await;
        w.text().await;
        w.send(&format!("40{}", json!({"token": auth}))).await;
        let reply = w.text().await;
        assert!(
            reply.contains(&format!(r#""message":"{code}""#)),
            "{name}: {reply}"
        );
        watcher.check(&server, name).await;
    }
    for (name, body) in [
        ("polling: truncated payload length", b"12:4".to_vec()),
        ("polling: garbage", vec![0xff, 0xfe, 0x00]),
        (
            "polling: truncated socket.io packet",
            b"42[\"channel\"".to_vec(),
        ),
    ] {
        let (sid, _) = support::socketio::poll_handshake(addr, 3, "").await;
        let response =
            support::socketio::post(addr, &format!("EIO=3&transport=polling&sid={sid}"), &body)
                .await;
        assert_eq!(response.status, 400, "{name}: {}", response.text());
        watcher.check(&server, name).await;
    }

    for (name, token, code) in [
        ("ws: expired token", expired(), "token_expired"),
        ("ws: forged token", forged(), "token_bad_signature"),
        ("ws: alg none token", alg_none(), "token_bad_algorithm"),
        ("ws: garbage token", "%FF.%00.".to_owned(), "token_invalid"),
    ] {
        let url = server
            .url(&format!("/ws?token={token}"))
            .replace("http://", "ws://");
        match tokio_tungstenite::connect_async(url).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status().as_u16(), 401, "{name}");
                let body: Value =
                    serde_json::from_slice(response.body().as_deref().unwrap_or(b"{}")).unwrap();
                assert_eq!(body["error"], code, "{name}: {body}");
            }
            other => panic!("{name}: expected a 401, got {:?}", other.map(|_| ())),
        }
        watcher.check(&server, name).await;
    }

    for (name, method, target, headers, body, status, code) in http_cases() {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (got, reply) = if body.len() > 1024 * 1024 {
            send_huge(addr, method, &target, &headers, &body).await
        } else {
            let response = http(addr, method, &target, &headers, &body).await;
            let reply = serde_json::from_slice(&response.body)
                .unwrap_or_else(|_| json!({"raw": response.text()}));
            (response.status, reply)
        };
        assert_eq!(
            (got, reply["error"].as_str()),
            (status, Some(code)),
            "{name}: {reply}"
        );
        watcher.check(&server, name).await;
    }
    let _ = std::fs::remove_file(&file);
}
