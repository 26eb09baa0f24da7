//! Wires config, broker, hub, transports and HTTP together, serves until
//! SIGINT/SIGTERM, then drains: stop accepting, tell every connection task to
//! close, wait for them with a deadline.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::brokers::{Broker, Sink, memory::MemoryBroker, redis};
use crate::config::{BrokerConfig, ServeArgs};
use crate::http::{self, AppState};
use crate::hub::Hub;
use crate::shutdown::{self, Shutdown};
use crate::telemetry;
use crate::tls::{self, Tls, TlsSettings};
use crate::transports::socketio::{RoomcastHandler, SocketIo, SocketIoConfig};
use crate::transports::{sse, ws};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start the {broker} broker: {source}")]
    Broker {
        broker: &'static str,
        source: crate::brokers::BrokerError,
    },
    #[error("HTTPS: {0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("server error: {0}")]
    Io(#[from] std::io::Error),
}

/// Runs the server until a signal arrives.
pub async fn serve(args: ServeArgs) -> Result<(), ServeError> {
    let shutdown = Shutdown::new();
    let running = start(&args, shutdown.clone()).await?;
    let scheme = if running.tls.is_some() {
        "https"
    } else {
        "http"
    };
    tracing::info!(
        listen = %running.local_addr,
        http_listen = ?running.http_addr,
        broker = running.broker.name(),
        "roomcast listening; web page at {scheme}://{}/",
        running.local_addr
    );
    shutdown::signal().await;
    tracing::info!("shutting down: draining connections");
    shutdown.trigger();
    let deadline = Duration::from_secs(args.shutdown_timeout_s);
    if !shutdown.wait(deadline).await {
        tracing::warn!(
            ?deadline,
            "connections still open at the drain deadline; exiting anyway"
        );
    }
    Ok(())
}

/// A started server (tests use it to learn the bound port).
pub struct Running {
    pub local_addr: std::net::SocketAddr,
    /// The plain-HTTP listener beside HTTPS (`--http-listen`), when on.
    pub http_addr: Option<std::net::SocketAddr>,
    /// HTTPS controls, when TLS is on.
    pub tls: Option<tls::TlsHandle>,
    pub hub: Arc<Hub>,
    pub broker: Arc<dyn Broker>,
}

/// Binds, starts the broker and the HTTP server; returns once accepting.
pub async fn start(args: &ServeArgs, shutdown: Shutdown) -> Result<Running, ServeError> {
    args.validate()?;
    let tls = match TlsSettings::from_args(args).map_err(tls::TlsError::from)? {
        Some(settings) => Some(Tls::prepare(settings).await?),
        None => None,
    };
    let tls_readiness = tls.as_ref().map(Tls::readiness);
    let hub = Arc::new(Hub::with_history(
        args.history_size,
        Duration::from_secs(args.history_ttl_s),
    ));
    let sink: Sink = {
        let hub = hub.clone();
        Arc::new(move |channel: &str, payload: Bytes| {
            telemetry::message_received();
            hub.deliver(channel, payload);
        })
    };
    let broker: Arc<dyn Broker> = match args.broker_config()? {
        BrokerConfig::Memory => Arc::new(MemoryBroker::new(sink)),
        BrokerConfig::Redis { url, pattern } => Arc::new(
            redis::start(&url, &pattern, sink, &shutdown).map_err(|source| ServeError::Broker {
                broker: "redis",
                source,
            })?,
        ),
    };
    let state = AppState {
        hub: hub.clone(),
        broker: broker.clone(),
        // An empty key (e.g. `ROOMCAST_API_KEY=`) is no key.
        api_keys: args
            .api_keys
            .iter()
            .filter(|k| !k.is_empty())
            .cloned()
            .collect(),
        max_payload: args.max_payload,
        shutdown: shutdown.clone(),
        metrics: telemetry::install(),
        tls: tls_readiness,
    };
    let sse = sse::Sse {
        hub: hub.clone(),
        limits: args.outbox_limits(),
        shutdown: shutdown.clone(),
    };
    let ws = ws::Ws {
        hub: hub.clone(),
        broker: broker.clone(),
        shutdown: shutdown.clone(),
        limits: args.outbox_limits(),
        max_frame: args.max_payload,
        ping_interval: args.ping_interval(),
        ping_timeout: args.ping_timeout(),
        allow_publish: args.ws_publish,
        max_errors: args.max_protocol_errors,
    };
    let socketio = SocketIo::new(
        SocketIoConfig {
            path: args.socketio_path.clone(),
            ping_interval: args.ping_interval(),
            ping_timeout: args.ping_timeout(),
            max_payload: args.max_payload,
            outbox: args.outbox_limits(),
            ..SocketIoConfig::default()
        },
        hub.clone(),
        Arc::new(RoomcastHandler),
        shutdown.clone(),
    );
    let readyz = http::readyz_router(state.clone());
    let app = http::router(state, sse, ws, socketio.router());

    let listener = bind(args.listen).await?;
    let local_addr = listener.local_addr()?;
    let mut http_addr = None;
    let graceful = shutdown.clone();
    let tls = match tls {
        None => {
            shutdown.spawn(async move {
                let served = axum::serve(listener, app)
                    .with_graceful_shutdown(async move { graceful.requested().await })
                    .await;
                if let Err(error) = served {
                    tracing::error!(%error, "http server stopped");
                }
            });
            None
        }
        Some(tls) => {
            if let Some(addr) = tls.http_listen() {
                let plain = bind(addr).await?;
                http_addr = Some(plain.local_addr()?);
                let router = tls.redirect_router(local_addr.port()).merge(readyz);
                let graceful = shutdown.clone();
                shutdown.spawn(async move {
                    let served = axum::serve(plain, router)
                        .with_graceful_shutdown(async move { graceful.requested().await })
                        .await;
                    if let Err(error) = served {
                        tracing::error!(%error, "plain-HTTP listener stopped");
                    }
                });
            }
            let listener = tls::listener::TlsListener::start(listener, tls.acceptor(), &shutdown);
            shutdown.spawn(async move {
                let served = axum::serve(listener, app)
                    .with_graceful_shutdown(async move { graceful.requested().await })
                    .await;
                if let Err(error) = served {
                    tracing::error!(%error, "https server stopped");
                }
            });
            Some(tls.run(&shutdown))
        }
    };
    Ok(Running {
        local_addr,
        http_addr,
        tls,
        hub,
        broker,
    })
}

async fn bind(addr: std::net::SocketAddr) -> Result<tokio::net::TcpListener, ServeError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })
}
