//! A server that behaves as the official Engine.IO and Socket.IO protocol
//! test suites expect (socketio/engine.io-protocol and
//! socketio/socket.io-protocol, `test-suite/`), plus the extras roomcast's
//! end-to-end tests use.
//!
//! Run: `cargo run --example protocol-conformance -- --listen 127.0.0.1:3000`
//! then `npm test` in a suite's `test-suite` folder.
//!
//! - `/engine.io/`: Engine.IO echo (every message back, text and binary).
//! - `/socket.io/`: namespaces `/` and `/custom`; on connect emits `auth`
//!   with the handshake auth; `message` → `message-back` (same args, binary
//!   included); `message-with-ack` is acked with its args; `request-ack`
//!   emits `ack-request` asking for an ack, whose args come back as
//!   `ack-received`; `disconnect-me` disconnects the socket server-side.
//!
//! pingInterval 300 ms, pingTimeout 200 ms, maxPayload 1000000,
//! connectTimeout 1000 ms. `--ping-interval-ms`/`--ping-timeout-ms` change
//! the heartbeat for load measurements (the suites need the defaults).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use roomcast::disconnect::DisconnectReason;
use roomcast::hub::{Frame, Hub, OutboxLimits};
use roomcast::security::Permit;
use roomcast::shutdown::{self, Shutdown};
use roomcast::transports::socketio::engine::{Engine, EngineConfig, Link, Upper};
use roomcast::transports::socketio::{SocketIo, SocketIoConfig};

// The Socket.IO handler, shared with the wire tests.
#[path = "../tests/support/conformance.rs"]
#[allow(dead_code)] // the tests use the other constructor
mod conformance;
use conformance::Conformance;

const PING_INTERVAL_MS: u64 = 300;
const PING_TIMEOUT_MS: u64 = 200;
const MAX_PAYLOAD: usize = 1_000_000;

/// Engine.IO alone: echoes every message.
struct Echo;

impl Upper for Echo {
    type Conn = ();
    const TRANSPORT: &'static str = "engine.io";

    // No security settings here: the permit is always `None`.
    fn open(&self, _link: &Link<'_>, _query: &[(String, String)], _permit: Option<Permit>) {}

    fn message(
        &self,
        _conn: &mut (),
        link: &Link<'_>,
        frame: Frame,
    ) -> Result<(), DisconnectReason> {
        let frame = match frame {
            Frame::Text(text) => {
                let mut out = Vec::with_capacity(text.len() + 1);
                out.push(b'4');
                out.extend_from_slice(&text);
                Frame::Text(out.into())
            }
            binary => binary,
        };
        // A refused push closes the outbox, and the engine the connection.
        let _ = link.outbox.push(frame);
        Ok(())
    }

    fn close(&self, _conn: &mut (), _link: &Link<'_>, _reason: DisconnectReason) {}
}

struct Options {
    listen: SocketAddr,
    ping_interval: Duration,
    ping_timeout: Duration,
}

fn options() -> Result<Options, String> {
    let mut args = std::env::args().skip(1);
    let mut listen = "127.0.0.1:3000".to_owned();
    let (mut interval, mut timeout) = (PING_INTERVAL_MS, PING_TIMEOUT_MS);
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) => (name.to_owned(), Some(value.to_owned())),
            None => (arg, None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or(format!("{name} needs a value"))
        };
        let millis = |v: String| v.parse::<u64>().map_err(|e| format!("{name}: {e}"));
        match name.as_str() {
            "--listen" => listen = value()?,
            "--ping-interval-ms" => interval = millis(value()?)?,
            "--ping-timeout-ms" => timeout = millis(value()?)?,
            other => {
                return Err(format!(
                    "unknown argument {other:?}; usage: [--listen ADDR] [--ping-interval-ms N] [--ping-timeout-ms N]"
                ));
            }
        }
    }
    Ok(Options {
        listen: listen
            .parse()
            .map_err(|e| format!("bad --listen {listen:?}: {e}"))?,
        ping_interval: Duration::from_millis(interval),
        ping_timeout: Duration::from_millis(timeout),
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let Options {
        listen: addr,
        ping_interval,
        ping_timeout,
    } = options()?;
    let shutdown = Shutdown::new();
    let engine = Engine::new(
        EngineConfig {
            ping_interval,
            ping_timeout,
            max_payload: MAX_PAYLOAD,
            connect_timeout: None,
            outbox: OutboxLimits::default(),
            security: None,
        },
        Echo,
        shutdown.clone(),
    );
    let socketio = SocketIo::new(
        SocketIoConfig {
            path: "/socket.io/".into(),
            ping_interval,
            ping_timeout,
            max_payload: MAX_PAYLOAD,
            connect_timeout: Duration::from_millis(1000),
            outbox: OutboxLimits::default(),
            namespaces: vec!["/custom".into()],
            security: None,
            recovery_window: Duration::ZERO,
            sessions: None,
        },
        Arc::new(Hub::new()),
        Arc::new(Conformance::suites()),
        shutdown.clone(),
    );
    let app = engine.router("/engine.io/").merge(socketio.router());
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "protocol-conformance listening");
    let stop = shutdown.clone();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown::signal().await;
            stop.trigger();
        })
        .await?;
    shutdown.wait(Duration::from_secs(5)).await;
    Ok(())
}
