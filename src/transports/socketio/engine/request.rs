//! The HTTP front of Engine.IO: one handler for the path, which checks the
//! query (`EIO`, `transport`, `sid`) and method in the reference server's
//! order and answers bad requests with its exact JSON error codes, adds CORS
//! headers, then hands over to the polling handlers or the websocket upgrade.
//!
//! Owns request validation only. Copies out of the request what a
//! connection needs (version, sid, a few flags, the query) so nothing of the
//! request outlives it.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{FromRequestParts, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, StatusCode};

use super::packet::Version;
use super::{Engine, EngineError, Sid, Upper, polling, websocket};
use crate::transports::connection::{Admission, Token};

pub fn router<U: Upper>(engine: Arc<Engine<U>>, path: &str) -> Router {
    let mut router = Router::new().route(path, any(handle::<U>));
    let trimmed = path.trim_end_matches('/');
    if !trimmed.is_empty() && trimmed != path {
        router = router.route(trimmed, any(handle::<U>));
    }
    router.with_state(engine)
}

/// The query parameters Engine.IO reads, plus the rest for the upper layer.
#[derive(Debug, Default)]
pub struct Params {
    pub eio: Option<String>,
    pub transport: Option<String>,
    pub sid: Option<String>,
    /// v3: the client cannot take binary payloads.
    pub b64: bool,
    pub rest: Vec<(String, String)>,
}

impl Params {
    pub fn parse(query: Option<&str>) -> Params {
        let mut params = Params::default();
        for (key, value) in parse_query(query.unwrap_or("")) {
            match key.as_str() {
                "EIO" => params.eio = Some(value),
                "transport" => params.transport = Some(value),
                "sid" => params.sid = Some(value),
                "b64" => params.b64 = !value.is_empty() && value != "0" && value != "false",
                // Cache busters of the official clients.
                "t" | "j" => {}
                _ => params.rest.push((key, value)),
            }
        }
        params
    }
}

async fn handle<U: Upper>(State(engine): State<Arc<Engine<U>>>, request: Request) -> Response {
    let (mut parts, body) = request.into_parts();
    // The origin first, on every request (the first step of a new
    // connection's admission).
    let admission = match &engine.config.security {
        Some(security) => match Admission::start(security, U::TRANSPORT, &parts.headers) {
            Ok(admission) => Some(admission),
            // No CORS headers: the page's script must not read past the refusal.
            Err(refusal) => return refusal.into_response(),
        },
        None => None,
    };
    let cors = Cors::new(&parts.headers);
    let response = if parts.method == Method::OPTIONS {
        StatusCode::NO_CONTENT.into_response()
    } else {
        route(&engine, &mut parts, body, admission).await
    };
    cors.apply(response)
}

async fn route<U: Upper>(
    engine: &Arc<Engine<U>>,
    parts: &mut http::request::Parts,
    body: Body,
    admission: Option<Admission>,
) -> Response {
    let params = Params::parse(parts.uri.query());
    let websocket = match params.transport.as_deref() {
        Some("polling") => false,
        Some("websocket") => true,
        _ => return EngineError::UnknownTransport.into_response(),
    };
    let Some(version) = params.eio.as_deref().and_then(Version::from_query) else {
        return EngineError::UnsupportedProtocolVersion.into_response();
    };
    if let Some(sid) = &params.sid {
        let Some(session) = Sid::parse(sid).and_then(|sid| engine.session(&sid)) else {
            return EngineError::UnknownSid.into_response();
        };
        if session.version != version {
            return EngineError::BadRequest.into_response();
        }
        if websocket {
            let Ok(upgrade) =
                axum::extract::ws::WebSocketUpgrade::from_request_parts(parts, &()).await
            else {
                return EngineError::BadRequest.into_response();
            };
            return websocket::upgrade_session(engine, upgrade, session);
        }
        return match parts.method {
            Method::GET => polling::poll(engine, session).await,
            Method::POST => {
                let binary = parts
                    .headers
                    .get(header::CONTENT_TYPE)
                    .is_some_and(|v| v.as_bytes().starts_with(b"application/octet-stream"));
                let length = content_length(&parts.headers);
                polling::post(engine, session, binary, length, body).await
            }
            _ => EngineError::BadRequest.into_response(),
        };
    }
    if parts.method != Method::GET {
        return EngineError::BadHandshakeMethod.into_response();
    }
    // A new connection: the rest of its admission, the limits of the
    // client's address (the token comes with the upper layer's handshake).
    let permit = match admission {
        Some(admission) => {
            let peer = crate::security::peer_ip(&parts.extensions);
            match admission.admit(&parts.headers, peer, Token::Handshake) {
                Ok(admitted) => Some(admitted.permit),
                Err(refusal) => return refusal.into_response(),
            }
        }
        None => None,
    };
    if websocket {
        let Ok(upgrade) = axum::extract::ws::WebSocketUpgrade::from_request_parts(parts, &()).await
        else {
            return EngineError::BadRequest.into_response();
        };
        websocket::handshake(engine, upgrade, version, params.rest, permit)
    } else {
        polling::handshake(engine, version, !params.b64, params.rest, permit)
    }
}

fn content_length(headers: &HeaderMap) -> Option<usize> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// CORS: the request's Origin, already checked against the allowed origins
/// in [`handle`], is reflected with credentials.
struct Cors {
    origin: Option<HeaderValue>,
    request_headers: Option<HeaderValue>,
}

impl Cors {
    fn new(headers: &HeaderMap) -> Cors {
        Cors {
            origin: headers.get(header::ORIGIN).cloned(),
            request_headers: headers.get(header::ACCESS_CONTROL_REQUEST_HEADERS).cloned(),
        }
    }

    fn apply(self, mut response: Response) -> Response {
        let headers = response.headers_mut();
        match self.origin {
            Some(origin) => {
                headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
                headers.insert(
                    header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                    HeaderValue::from_static("true"),
                );
                headers.append(header::VARY, HeaderValue::from_static("Origin"));
            }
            None => {
                headers.insert(
                    header::ACCESS_CONTROL_ALLOW_ORIGIN,
                    HeaderValue::from_static("*"),
                );
            }
        }
        if let Some(requested) = self.request_headers {
            headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, requested);
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("GET, POST, OPTIONS"),
            );
        }
        response
    }
}

/// Splits a query string into decoded key/value pairs (`+` is a space,
/// `%XX` escapes; malformed escapes are kept as they are).
pub fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(key), percent_decode(value))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn query_is_decoded_and_split() {
        let params = Params::parse(Some("EIO=4&transport=polling&t=Nx&token=a%20b+c&b64=1&x"));
        assert_eq!(params.eio.as_deref(), Some("4"));
        assert_eq!(params.transport.as_deref(), Some("polling"));
        assert!(params.b64);
        assert_eq!(
            params.rest,
            vec![
                ("token".into(), "a b c".into()),
                ("x".into(), String::new())
            ]
        );
        assert_eq!(percent_decode("%e2%82%ac%"), "€%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }

    #[test]
    fn error_bodies_are_the_protocol_ones() {
        let response = EngineError::UnknownSid.into_response();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    }

    proptest! {
        #[test]
        fn any_query_parses(q in ".*") {
            let _ = Params::parse(Some(&q));
        }
    }
}
