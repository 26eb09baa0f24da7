//! The HTTP API: `POST /api/publish`, `GET /api/rooms[/{room}]`, `/healthz`
//! and `/readyz`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use super::AppState;
use crate::brokers::BrokerError;
use crate::hub::{self, RoomInfo, RoomNamePolicy};
use crate::refusal::Refusal;
use crate::security;
use crate::telemetry;

#[derive(Deserialize)]
struct PublishRequest {
    channel: String,
    data: serde_json::Value,
}

/// `POST /api/publish {"channel","data"}` with `Authorization: Bearer KEY`.
/// A string `data` is published as its characters; any other JSON value as
/// its compact JSON text.
pub async fn publish(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    // Read the body ourselves: an oversize one gets our JSON 413 (axum's
    // own limit would answer in plain text), and no more than the limit is
    // ever buffered.
    let limit = state.max_payload + 1024;
    let body = match authorize(&state.api_keys, &headers) {
        Ok(()) => axum::body::to_bytes(body, limit).await.map_err(|_| {
            telemetry::refused("limit", "too_large");
            Refusal::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("request body exceeds {limit} bytes"),
            )
        }),
        Err(error) => Err(error),
    };
    let outcome = match body {
        Ok(body) => try_publish(&state, &headers, &body).await,
        Err(error) => Err(error),
    };
    match outcome {
        Ok(()) => Json(serde_json::json!({ "ok": true })).into_response(),
        Err(error) => {
            tracing::info!(code = error.code, message = %error.message, "publish refused");
            error.into_response()
        }
    }
}

async fn try_publish(state: &AppState, headers: &HeaderMap, body: &[u8]) -> Result<(), Refusal> {
    authorize(&state.api_keys, headers)?;
    if body.len() > state.max_payload + 1024 {
        telemetry::refused("limit", "too_large");
        return Err(Refusal::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("request body exceeds {} bytes", state.max_payload + 1024),
        ));
    }
    let (channel, payload) = parse_publish_with(body, state.max_payload, &state.room_names)?;
    state
        .broker
        .publish(&channel, payload.into())
        .await
        .map_err(broker_error)?;
    telemetry::message_published("http");
    Ok(())
}

/// Parses a publish body `{"channel","data"}` into the channel and the
/// payload bytes (a string `data` as its characters, anything else as JSON
/// text), refusing bad JSON, bad room names and payloads over `max_payload`.
/// Public for the fuzz target; the handler checks the key and body size first.
pub fn parse_publish(body: &[u8], max_payload: usize) -> Result<(String, Vec<u8>), Refusal> {
    parse_publish_with(body, max_payload, &RoomNamePolicy::default())
}

/// [`parse_publish`] with the room names `policy` allows.
fn parse_publish_with(
    body: &[u8],
    max_payload: usize,
    policy: &RoomNamePolicy,
) -> Result<(String, Vec<u8>), Refusal> {
    let request: PublishRequest = serde_json::from_slice(body).map_err(|e| {
        Refusal::new(
            StatusCode::BAD_REQUEST,
            "bad_json",
            format!("expected {{\"channel\": string, \"data\": any}}: {e}"),
        )
    })?;
    hub::validate_room_name_with(&request.channel, policy)
        .map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, e.code(), e.to_string()))?;
    let payload = match request.data {
        serde_json::Value::String(text) => text.into_bytes(),
        other => other.to_string().into_bytes(),
    };
    security::payload_limit("http", payload.len(), max_payload)?;
    Ok((request.channel, payload))
}

/// 502 when the broker refused, else 503 (unreachable: retry later).
fn broker_error(error: BrokerError) -> Refusal {
    let status = match error {
        BrokerError::Refused(_) => StatusCode::BAD_GATEWAY,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    Refusal::new(status, error.code(), error.to_string())
}

/// Checks the bearer key in constant time. No key configured: refused.
fn authorize(keys: &[String], headers: &HeaderMap) -> Result<(), Refusal> {
    if keys.is_empty() {
        return Err(Refusal::new(
            StatusCode::FORBIDDEN,
            "publishing_disabled",
            "HTTP publishing is disabled: start roomcast with --api-key KEY (or ROOMCAST_API_KEY)",
        ));
    }
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            Refusal::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing Authorization: Bearer <api key>",
            )
        })?;
    // Compare against every key so timing does not reveal which one matched.
    let matched = keys.iter().fold(0u8, |any, key| {
        any | key.as_bytes().ct_eq(presented.as_bytes()).unwrap_u8()
    });
    if matched == 1 {
        Ok(())
    } else {
        Err(Refusal::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "invalid API key",
        ))
    }
}

/// `GET /api/rooms`: every room with members on this node.
pub async fn rooms(State(state): State<AppState>) -> Json<Vec<RoomInfo>> {
    Json(state.hub.rooms())
}

/// `GET /api/rooms/{room}`: one room's member count on this node.
pub async fn room(State(state): State<AppState>, Path(room): Path<String>) -> Json<RoomInfo> {
    let members = state.hub.room_size(&room);
    Json(RoomInfo {
        name: room,
        members,
    })
}

/// `GET /healthz`: the process is alive.
pub async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

/// `GET /readyz`: 200 while the broker (and the MQTT ingest, when
/// configured) is connected and we are not draining.
pub async fn readyz(State(state): State<AppState>) -> Response {
    let broker = state.broker.name();
    let tls = state.tls.as_ref().map(|tls| tls.check());
    let mqtt = state.mqtt.as_ref().map(|mqtt| mqtt.state());
    let mqtt_up = mqtt.map(|state| state != "down");
    let (status, text) = if state.shutdown.is_requested() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining")
    } else if !state.broker.is_ready() {
        (StatusCode::SERVICE_UNAVAILABLE, "broker_disconnected")
    } else if let Some(Err(_)) = &tls {
        (StatusCode::SERVICE_UNAVAILABLE, "tls_certificate_missing")
    } else if mqtt_up == Some(false) {
        (StatusCode::SERVICE_UNAVAILABLE, "mqtt_disconnected")
    } else {
        (StatusCode::OK, "ready")
    };
    let mut body = serde_json::json!({ "status": text, "broker": broker });
    let shards = state.broker.shards();
    if !shards.is_empty() {
        body["shards"] = shards
            .into_iter()
            .map(|(shard, up)| {
                (
                    shard,
                    serde_json::Value::from(if up { "up" } else { "down" }),
                )
            })
            .collect::<serde_json::Map<_, _>>()
            .into();
    }
    if let Some(Err(reason)) = tls {
        body["tls"] = serde_json::Value::String(reason);
    }
    if let Some(mqtt) = mqtt {
        body["mqtt"] = serde_json::Value::from(mqtt);
    }
    (status, Json(body)).into_response()
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(state): State<AppState>) -> Response {
    let Some(handle) = &state.metrics else {
        return Refusal::new(
            StatusCode::NOT_FOUND,
            "metrics_disabled",
            "another metrics recorder owns this process",
        )
        .into_response();
    };
    telemetry::broker_up(state.broker.name(), state.broker.is_ready());
    for (shard, up) in state.broker.shards() {
        telemetry::broker_shard_up(state.broker.name(), shard, up);
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        telemetry::render(handle),
    )
        .into_response()
}

/// `GET /api/stats`: the status page's live numbers. Needs the API key
/// when one is configured.
pub async fn stats(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if !state.api_keys.is_empty()
        && let Err(error) = authorize(&state.api_keys, &headers)
    {
        return error.into_response();
    }
    let body = serde_json::json!({
        "stats": telemetry::stats(),
        "broker": { "name": state.broker.name(), "ready": state.broker.is_ready() },
        "draining": state.shutdown.is_requested(),
    });
    Json(body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bearer(key: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            format!("Bearer {key}").parse().unwrap(),
        );
        headers
    }

    #[test]
    fn api_keys_are_checked() {
        let keys = vec!["k1".to_string(), "k2".to_string()];
        assert!(authorize(&keys, &bearer("k2")).is_ok());
        assert_eq!(
            authorize(&keys, &bearer("k3")).unwrap_err().status,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            authorize(&keys, &bearer("k")).unwrap_err().status,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            authorize(&keys, &HeaderMap::new()).unwrap_err().status,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            authorize(&[], &bearer("k1")).unwrap_err().status,
            StatusCode::FORBIDDEN
        );
    }

    // Fuzz target (as a property test): the publish body parser.
    proptest::proptest! {
        #[test]
        fn any_publish_body_is_handled(body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300), depth in 0usize..2000) {
            let _ = serde_json::from_slice::<PublishRequest>(&body);
            let nested = format!(r#"{{"channel":"c","data":{}{}}}"#, "[".repeat(depth), "]".repeat(depth));
            let _ = serde_json::from_slice::<PublishRequest>(nested.as_bytes());
        }
    }
}
