//! The one helper folder of the integration tests (`mod support;`):
//!
//! - `server`: roomcast in-process on a free port ([`Server`]), or a server
//!   binary as a process ([`ServerProcess`]: roomcast, the conformance example);
//! - `redis`, `nats`: a private `redis-server` / `nats-server` on a free port,
//!   killed (only it) on drop;
//! - `http`: the raw HTTP/1.1 client (exact status lines, headers, bodies);
//!   `sse`: the `message` events of a `/sse` body;
//! - `socketio`: the Socket.IO layer alone in-process, its raw websocket
//!   client and the polling requests; `conformance`: the handler the
//!   official suites expect, shared with `examples/protocol-conformance.rs`;
//! - `sessions`: the scenarios every shared Socket.IO session store passes
//!   (`tests/redis_sessions.rs`, `tests/nats_sessions.rs`);
//! - `tls`: a throwaway CA, a verifying TLS client, and (`tls::pebble`,
//!   `tls::dns`) the ACME test CA and DNS servers;
//! - here: [`free_port`], the one wait helper ([`eventually`], and
//!   [`wait_until`] for a plain condition), [`TempDir`], [`init_logs`],
//!   websocket readers and a JWT signer.
//!
//! Every process a test needs is started by the test on a free port (never a
//! default port) and killed on drop; nothing else is ever killed.
#![allow(dead_code, unused_imports)] // each test binary uses a different part

pub mod conformance;
pub mod http;
pub mod nats;
pub mod redis;
pub mod relay;
pub mod resume;
pub mod server;
pub mod sessions;
pub mod socketio;
pub mod sse;
pub mod tls;

use std::time::{Duration, Instant};

pub use server::{Server, ServerProcess, conformance_bin};

/// A loopback port nothing listens on right now (bound to 0 and released).
pub fn free_port() -> u16 {
    free_ports(1)[0]
}

/// `n` distinct loopback ports nothing listens on right now (all bound at
/// once, so they differ).
pub fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local addr").port())
        .collect()
}

/// Retries `check` every 20 ms until it returns `Some`, at most `limit`
/// (`None` then). The one polling loop of the tests.
pub async fn eventually<T, F, Fut>(limit: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if tokio::time::Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `condition` holds; panics with `what` after `limit`.
/// Returns how long it took.
pub async fn wait_until(limit: Duration, what: &str, condition: impl Fn() -> bool) -> Duration {
    let start = Instant::now();
    eventually(limit, || std::future::ready(condition().then_some(())))
        .await
        .unwrap_or_else(|| panic!("timed out after {limit:?} waiting until {what}"));
    start.elapsed()
}

/// Waits until something accepts TCP on `addr` (at most `limit`).
pub async fn wait_listening(addr: std::net::SocketAddr, limit: Duration, what: &str) {
    eventually(limit, || async {
        tokio::net::TcpStream::connect(addr).await.ok().map(|_| ())
    })
    .await
    .unwrap_or_else(|| panic!("{what} did not listen on {addr} within {limit:?}"));
}

/// Sends the code's logs to the test's captured output (shown on failure, or
/// with `--nocapture`); `RUST_LOG` filters, default `roomcast=debug`.
pub fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("roomcast=debug"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// A scratch directory removed on drop (`ROOMCAST_KEEP_TEST_DIRS=1` keeps
/// it, with the logs of the processes a test started there).
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!(
            "roomcast-{tag}-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&path).expect("temp dir");
        TempDir(path)
    }

    pub fn path(&self, name: &str) -> std::path::PathBuf {
        self.0.join(name)
    }

    pub fn str(&self, name: &str) -> String {
        self.path(name).to_string_lossy().into_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("ROOMCAST_KEEP_TEST_DIRS").is_some() {
            eprintln!("kept {}", self.0.display());
            return;
        }
        let _ = std::fs::remove_dir_all(&self.0);
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

/// The next JSON text frame of a websocket (pings and pongs skipped), within 10 s.
pub async fn next_json<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>) -> serde_json::Value
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), ws.next())
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

/// The next Engine.IO text frame of a websocket, heartbeat pings (`2`) and
/// non-text frames skipped, within 10 s.
pub async fn next_engine_text<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>) -> String
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a frame within 10 s");
        match frame {
            Some(Ok(Message::Text(text))) if text.as_str() != "2" => return text.to_string(),
            Some(Ok(_)) => {}
            other => panic!("socket ended: {other:?}"),
        }
    }
}
