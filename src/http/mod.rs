//! HTTP: one axum router on one listener with the transports, the publish
//! API, the web page and the health endpoints.
//!
//! Owns request routing and the JSON error shape `{error, message}` every
//! HTTP error uses. Never holds connections itself (the transports do) and
//! never talks to a broker except through `Broker::publish`.

pub mod accept;
mod api;
pub mod deadline;
mod handoff;
mod page;
pub mod serve;

pub use api::parse_publish;
pub use deadline::WriteDeadline;
pub use handoff::Handoff;

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use metrics_exporter_prometheus::PrometheusHandle;

use crate::brokers::Broker;
use crate::hub::Hub;
use crate::shutdown::Shutdown;
use crate::transports::{sse, ws};

/// What the HTTP handlers share.
#[derive(Clone)]
pub struct AppState {
    pub hub: Arc<Hub>,
    pub broker: Arc<dyn Broker>,
    pub api_keys: Arc<[String]>,
    pub max_payload: usize,
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
        .route("/ws", get(ws::handler).with_state(ws))
        .merge(page::router())
        .merge(api)
        .merge(transports)
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
        })
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
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                refusal.code(),
                refusal.message(),
            )
        })
}

/// An HTTP error answered as `{"error": code, "message": text}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.code, "message": self.message });
        (self.status, Json(body)).into_response()
    }
}

impl From<crate::security::Refusal> for ApiError {
    fn from(refusal: crate::security::Refusal) -> Self {
        ApiError {
            status: refusal.status,
            code: refusal.code,
            message: refusal.message,
        }
    }
}
