//! The Socket.IO layer alone, in-process on 127.0.0.1:0 (no roomcast
//! server around it), the Engine.IO polling requests and a raw websocket
//! client that sees every frame.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use roomcast::hub::{Hub, OutboxLimits};
use roomcast::shutdown::Shutdown;
use roomcast::transports::socketio::{Handler, SocketIo, SocketIoConfig};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use super::http::{HttpResponse, http};

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
        recovery_window: Duration::ZERO,
        sessions: None,
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

/// A GET on the Socket.IO path with this query.
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

    /// Waits until the server closes the connection, answering nothing:
    /// its close code.
    pub async fn closed(&mut self) -> Option<u16> {
        self.closed_within(usize::MAX)
            .await
            .expect("the connection closed")
    }

    /// Reads at most `frames` frames, answering nothing, until the server
    /// closes the connection: `Some(close code)`, or `None` when it was
    /// still open after them.
    pub async fn closed_within(&mut self, frames: usize) -> Option<Option<u16>> {
        for _ in 0..frames {
            if let Got::Closed(code) = self.next().await {
                return Some(code);
            }
        }
        None
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
