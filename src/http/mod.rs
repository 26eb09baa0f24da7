//! HTTP: one axum router on one listener with the transports, the publish
//! API, the web page and the health endpoints.
//!
//! Owns request routing and the JSON error shape `{error, message}` every
//! HTTP error uses. Never holds connections itself (the transports do) and
//! never talks to a broker except through `Broker::publish`.

mod api;
mod page;

pub use api::parse_publish;

use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::{get, post};

use metrics_exporter_prometheus::PrometheusHandle;

use crate::brokers::Broker;
use crate::hub::{Hub, RoomNamePolicy};
use crate::refusal::Refusal;
use crate::shutdown::Shutdown;
use crate::transports::{sse, ws};

/// What the HTTP handlers share.
#[derive(Clone)]
pub struct AppState {
    pub hub: Arc<Hub>,
    pub broker: Arc<dyn Broker>,
    pub api_keys: Arc<[String]>,
    pub max_payload: usize,
    /// Which room names `POST /api/publish` takes: any a client may name,
    /// except the broker's reserved ones (the API is the back end's; the
    /// character and length options of `--room-name-*` bind clients).
    pub room_names: RoomNamePolicy,
    pub shutdown: Shutdown,
    /// `None` when another metrics recorder owns the process (embedding).
    pub metrics: Option<PrometheusHandle>,
    /// HTTPS certificate availability, when TLS is on.
    pub tls: Option<crate::tls::Readiness>,
    /// The MQTT ingest's connection, when configured.
    pub mqtt: Option<crate::ingest::mqtt::Readiness>,
}

/// The whole application: `transports` (Socket.IO) is merged in as is.
pub fn router(state: AppState, sse: sse::Sse, ws: ws::Ws, transports: Router) -> Router {
    let api = Router::new()
        .route("/api/publish", post(api::publish))
        .route("/api/rooms", get(api::rooms))
        .route("/api/stats", get(api::stats))
        .route("/api/rooms/{room}", get(api::room))
        .route("/healthz", get(api::healthz))
        .route("/readyz", get(api::readyz))
        .route("/metrics", get(api::metrics))
        .with_state(state);
    Router::new()
        .route("/sse", get(sse::handler).with_state(sse))
        .route("/ws", get(ws::handler).with_state(Arc::new(ws)))
        .merge(page::router())
        .merge(api)
        .merge(transports)
        .fallback(|| async { Refusal::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint") })
}

/// `/readyz` alone, for the plain-HTTP listener beside HTTPS: readable even
/// while there is no certificate to complete a TLS handshake with.
pub fn readyz_router(state: AppState) -> Router {
    Router::new()
        .route("/readyz", get(api::readyz))
        .with_state(state)
}

/// What a socket past `--max-connections` may still ask (one of the
/// reserve slots of `accept`): health checks; anything else is told why.
pub fn reserve_router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(api::healthz))
        .route("/readyz", get(api::readyz))
        .with_state(state)
        .fallback(|| async {
            let refusal = crate::security::LimitRefusal::TooManyConnections;
            Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                refusal.code(),
                refusal.message(),
            )
        })
}
