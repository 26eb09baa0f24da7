//! [`Refusal`]: why a request or an operation is refused, with a stable code,
//! the HTTP status it answers with and a message for the client. Over HTTP
//! it is the one JSON error body `{"error": code, "message": text}`.
//!
//! A bottom-layer type: it imports nothing from the crate, so `security`,
//! `http` and every transport can return it without importing each other.
//! Counting and logging a refusal is the refuser's job (see
//! `security::Security`), not this type's.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// A refused request: a stable code, an HTTP status and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl Refusal {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Refusal {
            status,
            code,
            message: message.into(),
        }
    }

    /// The broker cannot take this now (its connection is down, or it did
    /// not confirm a room's subscription in time): retry later.
    pub fn broker_unavailable(message: impl Into<String>) -> Self {
        Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "broker_unavailable",
            message,
        )
    }

    /// A join of a room this cluster does not serve (outside `--pattern`).
    pub fn room_not_served(message: impl Into<String>) -> Self {
        Refusal::new(StatusCode::FORBIDDEN, "room_not_served", message)
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.code, "message": self.message });
        (self.status, Json(body)).into_response()
    }
}
