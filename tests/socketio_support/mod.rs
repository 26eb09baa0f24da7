//! Shared helpers of the Socket.IO wire tests: a server on 127.0.0.1:0, a
//! raw HTTP/1.1 client (so tests see exact status lines, headers and
//! bodies), a raw websocket client, and a test handler.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use roomcast::hub::{Hub, OutboxLimits};
use roomcast::shutdown::Shutdown;
use roomcast::transports::socketio::{
    AckId, Args, ConnectError, Handler, Handshake, Socket, SocketIo, SocketIoConfig,
};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

pub const WAIT: Duration = Duration::from_secs(5);

pub struct Server {
    pub addr: SocketAddr,
    pub io: Arc<SocketIo>,
    pub hub: Arc<Hub>,
    pub shutdown: Shutdown,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

pub fn config() -> SocketIoConfig {
    SocketIoConfig {
        path: "/socket.io/".into(),
        ping_interval: Duration::from_millis(300),
        ping_timeout: Duration::from_millis(200),
        max_payload: 100_000,
        connect_timeout: Duration::from_millis(1000),
        outbox: OutboxLimits::default(),
        namespaces: vec!["/custom".into()],
        security: None,
    }
}

pub async fn start(config: SocketIoConfig, handler: Arc<dyn Handler>) -> Server {
    let hub = Arc::new(Hub::new());
    let shutdown = Shutdown::new();
    let io = SocketIo::new(config, hub.clone(), handler, shutdown.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = io.router();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.requested().await })
            .await
            .unwrap();
    });
    Server {
        addr,
        io,
        hub,
        shutdown,
    }
}

/// Emits `auth` (and `query` when there is one) on connect, echoes `message` as `message-back`, acks
/// `message-with-ack`, asks the client for an ack on `request-ack` and
/// reports it as `ack-received`, disconnects on `disconnect-me`, joins the
/// room named by `join`.
pub struct TestHandler;

impl Handler for TestHandler {
    fn on_connect(
        &self,
        socket: &mut Socket<'_>,
        handshake: &Handshake<'_>,
    ) -> Result<(), ConnectError> {
        let auth = handshake.auth;
        if auth.get("refuse").is_some() {
            return Err(ConnectError {
                message: "refused".into(),
                data: Some(serde_json::json!({"why": "asked"})),
            });
        }
        let _ = socket.emit("auth", Args::new(vec![auth.clone()]));
        if !handshake.query.is_empty() {
            let query: serde_json::Map<String, Value> = handshake
                .query
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect();
            let _ = socket.emit("query", Args::new(vec![Value::Object(query)]));
        }
        Ok(())
    }

    fn on_event(&self, socket: &mut Socket<'_>, event: &str, args: Args, ack: Option<AckId>) {
        match event {
            "message" => {
                let _ = socket.emit("message-back", args);
            }
            "message-with-ack" => {
                if let Some(ack) = ack {
                    let _ = socket.ack(ack, args);
                }
            }
            "request-ack" => {
                let _ = socket.emit_with_ack("ack-request", args);
            }
            "disconnect-me" => socket.disconnect(),
            "join" => {
                if let Some(Value::String(room)) = args.values.first() {
                    socket.join(room);
                }
            }
            _ => {}
        }
    }

    fn on_ack(&self, socket: &mut Socket<'_>, _id: u64, args: Args) {
        let _ = socket.emit("ack-received", args);
    }
}

pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`).
pub async fn http(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut request = format!(
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut raw))
        .await
        .expect("HTTP response in time")
        .unwrap();
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> HttpResponse {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("header end");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        body = dechunk(&body);
    }
    HttpResponse {
        status,
        headers,
        body,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n").unwrap();
        let size =
            usize::from_str_radix(std::str::from_utf8(&data[..line_end]).unwrap().trim(), 16)
                .unwrap();
        data = &data[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

pub async fn get(addr: SocketAddr, query: &str) -> HttpResponse {
    http(addr, "GET", &format!("/socket.io/?{query}"), &[], b"").await
}

pub async fn post(addr: SocketAddr, query: &str, body: &[u8]) -> HttpResponse {
    http(
        addr,
        "POST",
        &format!("/socket.io/?{query}"),
        &[("Content-Type", "text/plain;charset=UTF-8")],
        body,
    )
    .await
}

/// Opens a polling session; returns its sid and the whole handshake body.
pub async fn poll_handshake(addr: SocketAddr, eio: u8, extra: &str) -> (String, HttpResponse) {
    let response = get(addr, &format!("EIO={eio}&transport=polling{extra}")).await;
    assert_eq!(response.status, 200, "{}", response.text());
    let text = response.text();
    let start = text.find("{\"sid\":\"").expect("open packet") + 8;
    (text[start..start + 20].to_owned(), response)
}

pub struct Ws {
    pub inner: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>,
}

pub async fn ws(addr: SocketAddr, query: &str) -> Ws {
    let url = format!("ws://{addr}/socket.io/?{query}");
    let (inner, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    Ws { inner }
}

#[derive(Debug, PartialEq)]
pub enum Got {
    Text(String),
    Binary(Vec<u8>),
    Closed(Option<u16>),
}

impl Ws {
    pub async fn send(&mut self, text: &str) {
        self.inner.send(Message::text(text)).await.unwrap();
    }

    pub async fn send_binary(&mut self, data: &[u8]) {
        self.inner
            .send(Message::binary(data.to_vec()))
            .await
            .unwrap();
    }

    /// The next text/binary frame, or the close.
    pub async fn next(&mut self) -> Got {
        loop {
            let message = tokio::time::timeout(WAIT, self.inner.next())
                .await
                .expect("a frame in time");
            match message {
                Some(Ok(Message::Text(t))) => return Got::Text(t.to_string()),
                Some(Ok(Message::Binary(b))) => return Got::Binary(b.to_vec()),
                Some(Ok(Message::Close(frame))) => {
                    return Got::Closed(frame.map(|f| u16::from(f.code)));
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Got::Closed(None),
            }
        }
    }

    /// The next text frame that is not a ping (answering it like a client).
    pub async fn text(&mut self) -> String {
        loop {
            match self.next().await {
                Got::Text(t) if t == "2" => self.send("3").await,
                Got::Text(t) => return t,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    /// Waits until the server closes the connection, answering nothing.
    pub async fn closed(&mut self) -> Option<u16> {
        loop {
            if let Got::Closed(code) = self.next().await {
                return code;
            }
        }
    }

    /// Opens an EIO4 websocket and connects `/` (v5), consuming `40` and `auth`.
    pub async fn connect_v5(addr: SocketAddr) -> Ws {
        let mut ws = ws(addr, "EIO=4&transport=websocket").await;
        let open = ws.text().await;
        assert!(open.starts_with("0{"), "{open}");
        ws.send("40").await;
        assert!(ws.text().await.starts_with("40{\"sid\":"));
        assert_eq!(ws.text().await, r#"42["auth",{}]"#);
        ws
    }
}
