//! The plain-HTTP listener beside HTTPS (`--http-listen`): answers ACME
//! HTTP-01 challenges and `/healthz` (`server` adds `/readyz`), and
//! redirects everything else to the same host and path over https (308, so
//! methods and bodies survive).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// Pending HTTP-01 tokens: token -> key authorization.
#[derive(Clone, Debug, Default)]
pub struct Http01Tokens(Arc<Mutex<HashMap<String, String>>>);

impl Http01Tokens {
    pub fn insert(&self, token: &str, key_authorization: &str) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(token.to_string(), key_authorization.to_string());
    }

    pub fn remove(&self, token: &str) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(token);
    }

    fn get(&self, token: &str) -> Option<String> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(token)
            .cloned()
    }
}

#[derive(Clone)]
struct RedirectState {
    tokens: Http01Tokens,
    https_port: u16,
}

/// The router of the plain-HTTP listener; `https_port` is where redirects point.
pub fn router(tokens: Http01Tokens, https_port: u16) -> Router {
    Router::new()
        .route("/.well-known/acme-challenge/{token}", get(challenge))
        .route("/healthz", get(healthz))
        .fallback(redirect)
        .with_state(RedirectState { tokens, https_port })
}

async fn healthz() -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({ "status": "ok" }))
}

async fn challenge(State(state): State<RedirectState>, Path(token): Path<String>) -> Response {
    match state.tokens.get(&token) {
        Some(key_authorization) => {
            tracing::info!(%token, "answered an HTTP-01 validation");
            (
                [(header::CONTENT_TYPE, "application/octet-stream")],
                key_authorization,
            )
                .into_response()
        }
        None => (StatusCode::NOT_FOUND, "no such ACME challenge token\n").into_response(),
    }
}

async fn redirect(State(state): State<RedirectState>, headers: HeaderMap, uri: Uri) -> Response {
    let Some(host) = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(host_without_port)
    else {
        return (
            StatusCode::BAD_REQUEST,
            "this port only redirects to https://, and needs a Host header\n",
        )
            .into_response();
    };
    let port = match state.https_port {
        443 => String::new(),
        port => format!(":{port}"),
    };
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let location = format!("https://{host}{port}{path}");
    (
        StatusCode::PERMANENT_REDIRECT,
        [(header::LOCATION, location)],
    )
        .into_response()
}

/// `example.com:80` -> `example.com`, `[::1]:80` -> `[::1]`; refuses
/// anything that could smuggle a path or credentials into the Location.
fn host_without_port(host: &str) -> Option<&str> {
    let host = if host.starts_with('[') {
        &host[..=host.find(']')?]
    } else {
        host.split(':').next()?
    };
    let ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.[]:".contains(&b));
    ok.then_some(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_lose_their_port_and_odd_ones_are_refused() {
        assert_eq!(host_without_port("example.com:80"), Some("example.com"));
        assert_eq!(host_without_port("example.com"), Some("example.com"));
        assert_eq!(host_without_port("[::1]:8080"), Some("[::1]"));
        assert_eq!(host_without_port("evil.com/x"), None);
        assert_eq!(host_without_port("user@evil.com"), None);
        assert_eq!(host_without_port(""), None);
    }
}
