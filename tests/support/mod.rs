//! An in-process roomcast on a free port, and an HTTP client for it.
#![allow(dead_code)] // each test binary uses a different part

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::TokioExecutor;
use roomcast::server::{self, Running};
use roomcast::shutdown::Shutdown;

pub struct Server {
    pub running: Running,
    pub shutdown: Shutdown,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Server {
    pub async fn start(extra: &[&str]) -> Server {
        let mut args = vec!["roomcast", "--listen", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        let cli =
            roomcast::config::parse_from(args.into_iter().map(Into::into).collect(), |_| None)
                .expect("valid flags");
        let shutdown = Shutdown::new();
        let running = server::start(&cli.serve, shutdown.clone())
            .await
            .expect("server starts");
        let client = Client::builder(TokioExecutor::new()).build_http();
        Server {
            running,
            shutdown,
            client,
        }
    }

    pub fn client(&self) -> &Client<HttpConnector, Full<Bytes>> {
        &self.client
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.running.local_addr)
    }

    pub async fn request(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: &str,
    ) -> hyper::Response<Incoming> {
        let mut request = hyper::Request::builder().method(method).uri(self.url(path));
        if let Some(key) = key {
            request = request.header("authorization", format!("Bearer {key}"));
        }
        let request = request
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap();
        self.client.request(request).await.expect("server answers")
    }

    pub async fn json(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: &str,
    ) -> (u16, serde_json::Value) {
        let response = self.request(method, path, key, body).await;
        let status = response.status().as_u16();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&bytes).expect("JSON body"))
    }

    /// The value of one series on `/metrics` (0 while it does not exist
    /// yet). The recorder is process-global: compare deltas.
    pub async fn metric(&self, series: &str) -> f64 {
        let response = self.request("GET", "/metrics", None, "").await;
        assert_eq!(response.status(), 200);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8(body.to_vec()).unwrap();
        text.lines()
            .find_map(|line| {
                line.strip_prefix(series)
                    .and_then(|v| v.trim().parse().ok())
            })
            .unwrap_or(0.0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

/// The next JSON text frame of a websocket (pings and pongs skipped), within 10 s.
pub async fn next_json<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>) -> serde_json::Value
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    loop {
        let frame = tokio::time::timeout(std::time::Duration::from_secs(10), ws.next())
            .await
            .expect("a frame within 10 s")
            .expect("connection open")
            .expect("valid frame");
        match frame {
            Message::Text(text) => return serde_json::from_str(text.as_str()).expect("JSON frame"),
            Message::Close(close) => panic!("closed: {close:?}"),
            _ => continue,
        }
    }
}

/// A connection token signed with `secret` (HS256).
pub fn hs256_token(secret: &str, claims: &serde_json::Value) -> String {
    use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("claims serialize")
}

/// The next Engine.IO text frame of a websocket, heartbeat pings (`2`) and
/// non-text frames skipped, within 10 s.
pub async fn next_engine_text<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>) -> String
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    loop {
        let frame = tokio::time::timeout(std::time::Duration::from_secs(10), ws.next())
            .await
            .expect("a frame within 10 s");
        match frame {
            Some(Ok(Message::Text(text))) if text.as_str() != "2" => return text.to_string(),
            Some(Ok(_)) => {}
            other => panic!("socket ended: {other:?}"),
        }
    }
}
