//! Security: who may connect (JWT connection tokens, origins), what each
//! connection may subscribe to and publish (channel rules and token claims),
//! and the limits that keep one client from exhausting the server.
//!
//! Parts: `jwt` (token verification and claims), `rules` (room globs and
//! permission levels), `origin` (browser origins), `limits` (connection
//! guard and rate buckets), `proxies` (which address the per-IP limits
//! count: the peer, or the client a trusted proxy forwarded). [`Security`] bundles them for the transports,
//! which ask it before they upgrade or stream (through
//! `transports::connection::admit`: [`Security::check_origin`],
//! [`Security::admit_connection`], [`Security::authenticate`]) and on every join or publish
//! ([`Security::check_room`], [`Security::authorize`]).
//!
//! Every refusal is a [`Refusal`](crate::refusal::Refusal): a stable code, an HTTP status, a message
//! for the client, one log line and one count in
//! `roomcast_refusals_total{kind,code}`. Never logs tokens or keys. Never
//! touches sockets: the transports turn a refusal into their own wire error.

pub mod jwt;
pub mod limits;
pub mod origin;
pub mod proxies;
pub mod rules;

use std::net::IpAddr;
use std::sync::Arc;

use http::{HeaderMap, StatusCode, header};

use crate::hub::{RoomNamePolicy, validate_room_name_with};
use crate::refusal::Refusal;
use crate::telemetry;
pub use jwt::{Claims, JwtSettings, TokenError, Verifier};
pub use limits::{ConnectionGuard, LimitRefusal, Limits, MessageRate, Permit};
pub use origin::Origins;
pub use proxies::TrustedProxies;
pub use rules::{Cache, Level, Op, RuleConfig, Rules};

/// Who a connection is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Identity {
    /// No token (`--auth none`, or `--allow-anonymous`).
    #[default]
    Anonymous,
    /// A verified token.
    Token(Claims),
}

impl Identity {
    /// The token's subject, for logs (never the token).
    pub fn sub(&self) -> &str {
        match self {
            Identity::Anonymous => "",
            Identity::Token(claims) => &claims.sub,
        }
    }
}

/// The message size limit (`--max-payload`) of what a client or the HTTP
/// API publishes: one refusal, the same code and message everywhere.
pub fn payload_limit(transport: &'static str, len: usize, max: usize) -> Result<(), Refusal> {
    if len <= max {
        return Ok(());
    }
    Err(refuse(
        "limit",
        transport,
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        format!("data exceeds the {max}-byte message limit"),
    ))
}

/// Refuses: one count in `roomcast_refusals_total{kind,code}`, one log line,
/// and the [`Refusal`] the transport turns into its own wire error.
fn refuse(
    kind: &'static str,
    transport: &'static str,
    status: StatusCode,
    code: &'static str,
    message: String,
) -> Refusal {
    telemetry::refused(kind, code);
    tracing::info!(transport, kind, code, %message, "refused");
    Refusal::new(status, code, message)
}

/// Everything the transports ask. Share it as `Arc<Security>`.
#[derive(Debug)]
pub struct Security {
    pub verifier: Option<Arc<Verifier>>,
    /// With `--auth jwt`: connections without a token are let in as anonymous.
    pub allow_anonymous: bool,
    pub rules: Rules,
    pub origins: Origins,
    pub guard: Arc<ConnectionGuard>,
    pub room_names: RoomNamePolicy,
    /// Byte bound of a Socket.IO polling session's queue.
    pub max_polling_buffer: usize,
    /// Peers whose `X-Forwarded-For`/`Forwarded` headers are believed.
    pub proxies: TrustedProxies,
}

impl Default for Security {
    /// No authentication, no rules, same-origin plus localhost, default limits.
    fn default() -> Self {
        Security::open(Limits::default())
    }
}

impl Security {
    /// No authentication and no rules, with these limits.
    pub fn open(limits: Limits) -> Self {
        Security {
            verifier: None,
            allow_anonymous: true,
            rules: Rules::default(),
            origins: Origins::default(),
            guard: ConnectionGuard::new(limits),
            room_names: RoomNamePolicy::default(),
            max_polling_buffer: 1024 * 1024,
            proxies: TrustedProxies::default(),
        }
    }

    /// The address the per-IP limits count a connection against: the
    /// client a trusted proxy forwarded (`--trusted-proxies`), else the TCP
    /// peer ([`peer_ip`]). Never fails: bad headers mean the peer.
    pub fn client_ip(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> Option<IpAddr> {
        self.proxies.client_ip(peer, headers)
    }

    pub fn limits(&self) -> &Limits {
        self.guard.limits()
    }

    /// Checks a browser origin; `Ok(Some(origin))` to reflect in CORS.
    pub fn check_origin(
        &self,
        transport: &'static str,
        headers: &HeaderMap,
    ) -> Result<Option<String>, Refusal> {
        self.origins.check(headers).map_err(|origin| {
            refuse(
                "origin",
                transport,
                StatusCode::FORBIDDEN,
                "origin_not_allowed",
                format!("origin {origin:?} is not allowed (server flag --allowed-origins)"),
            )
        })
    }

    /// The connection limits alone (total, per IP, rate per IP).
    pub fn admit_connection(
        &self,
        transport: &'static str,
        ip: Option<IpAddr>,
    ) -> Result<Permit, Refusal> {
        self.guard.admit(ip).map_err(|refusal| {
            let status = match refusal {
                LimitRefusal::ConnectRate => StatusCode::TOO_MANY_REQUESTS,
                _ => StatusCode::SERVICE_UNAVAILABLE,
            };
            refuse(
                "limit",
                transport,
                status,
                refusal.code(),
                refusal.message().to_owned(),
            )
        })
    }

    /// Verifies the connection token (or accepts its absence when allowed).
    pub fn authenticate(
        &self,
        transport: &'static str,
        token: Option<&str>,
    ) -> Result<Identity, Refusal> {
        let Some(verifier) = &self.verifier else {
            return Ok(Identity::Anonymous);
        };
        let outcome = match token.filter(|t| !t.is_empty()) {
            None if self.allow_anonymous => return Ok(Identity::Anonymous),
            None => Err(TokenError::Missing),
            Some(token) => verifier.verify(token),
        };
        outcome.map(Identity::Token).map_err(|error| {
            refuse(
                "auth",
                transport,
                StatusCode::UNAUTHORIZED,
                error.code(),
                error.message().to_owned(),
            )
        })
    }

    /// Checks a room name (length and characters).
    pub fn check_room(&self, transport: &'static str, room: &str) -> Result<(), Refusal> {
        validate_room_name_with(room, &self.room_names).map_err(|e| {
            refuse(
                "room",
                transport,
                StatusCode::BAD_REQUEST,
                e.code(),
                format!("channel {:?}: {e}", preview(room)),
            )
        })
    }

    /// May `identity` subscribe to (or publish on) `room`? The room name is
    /// assumed valid ([`Security::check_room`]).
    pub fn authorize(
        &self,
        transport: &'static str,
        identity: &Identity,
        room: &str,
        op: Op,
    ) -> Result<(), Refusal> {
        let default = if self.verifier.is_some() {
            Level::Token
        } else {
            Level::Anyone
        };
        let level = self.rules.level(room, op).unwrap_or(default);
        let allowed = match (level, identity) {
            (Level::Anyone, _) => true,
            (Level::Nobody, _) => false,
            (_, Identity::Anonymous) => false,
            (Level::Authenticated, Identity::Token(_)) => true,
            (Level::Token, Identity::Token(claims)) => {
                let grants = match op {
                    Op::Subscribe => &claims.channels,
                    Op::Publish => &claims.publish,
                };
                grants
                    .iter()
                    .any(|pattern| rules::glob_match(pattern, room))
            }
        };
        if allowed {
            return Ok(());
        }
        Err(refuse(
            "forbidden",
            transport,
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("not allowed to {} {:?}", op.verb(), preview(room)),
        ))
    }

    /// The room limit (`--max-rooms-per-connection`): a connection that holds
    /// `held` rooms may join `adding` more. One refusal, the same code and
    /// message on every transport.
    pub fn room_limit(
        &self,
        transport: &'static str,
        held: usize,
        adding: usize,
    ) -> Result<(), Refusal> {
        let max = self.limits().max_rooms_per_connection;
        if held + adding <= max {
            return Ok(());
        }
        Err(refuse(
            "limit",
            transport,
            StatusCode::BAD_REQUEST,
            "too_many_channels",
            format!("at most {max} rooms per connection"),
        ))
    }

    /// Join checks in one: a valid name, then permission to subscribe.
    pub fn may_subscribe(
        &self,
        transport: &'static str,
        identity: &Identity,
        room: &str,
    ) -> Result<(), Refusal> {
        self.check_room(transport, room)?;
        self.authorize(transport, identity, room, Op::Subscribe)
    }
}

/// At most 64 characters of a room name for messages and logs (a refused
/// name may be 10 KB long).
fn preview(room: &str) -> String {
    match room.char_indices().nth(64) {
        Some((end, _)) => format!("{}…", &room[..end]),
        None => room.to_owned(),
    }
}

/// The token of an HTTP request: `Authorization: Bearer T`, else `?token=T`.
pub fn request_token(headers: &HeaderMap, query: Option<&str>) -> Option<String> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_owned());
    bearer.or_else(|| {
        url::form_urlencoded::parse(query?.as_bytes())
            .find(|(k, _)| k == "token")
            .map(|(_, v)| v.into_owned())
    })
}

/// The TCP peer address axum recorded, when the server was started with it.
/// Per-IP limits want [`Security::client_ip`] of it.
pub fn peer_ip(extensions: &http::Extensions) -> Option<IpAddr> {
    extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|info| info.0.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(channels: &[&str]) -> Identity {
        Identity::Token(Claims {
            sub: "u1".into(),
            channels: channels.iter().map(|c| c.to_string()).collect(),
            publish: vec!["chat:*".into()],
        })
    }

    fn jwt_security(rules: Vec<RuleConfig>) -> Security {
        let verifier = Verifier::new(JwtSettings {
            secret: Some("s".repeat(32)),
            ..JwtSettings::default()
        })
        .unwrap();
        Security {
            verifier: Some(verifier),
            allow_anonymous: true,
            rules: Rules::new(rules),
            ..Security::default()
        }
    }

    #[test]
    fn open_server_lets_anyone_subscribe() {
        let s = Security::default();
        assert!(s.may_subscribe("t", &Identity::Anonymous, "any").is_ok());
        assert_eq!(
            s.authenticate("t", Some("garbage")),
            Ok(Identity::Anonymous)
        );
    }

    #[test]
    fn rules_and_claims_decide() {
        let rule = |m: &str, sub: Level, publish: Option<Level>| RuleConfig {
            pattern: m.into(),
            subscribe: Some(sub),
            publish,
            cache: None,
        };
        let s = jwt_security(vec![
            rule("public:*", Level::Anyone, None),
            rule("admin:*", Level::Nobody, Some(Level::Nobody)),
            rule("lobby", Level::Authenticated, None),
        ]);
        let anon = Identity::Anonymous;
        let user = claims(&["device:*", "user:u1"]);
        assert!(s.may_subscribe("t", &anon, "public:news").is_ok());
        assert!(s.may_subscribe("t", &user, "public:news").is_ok());
        let denied = s.may_subscribe("t", &anon, "device:1").unwrap_err();
        assert_eq!(
            (denied.code, denied.status),
            ("forbidden", StatusCode::FORBIDDEN)
        );
        assert!(
            denied.message.contains("\"device:1\""),
            "{}",
            denied.message
        );
        assert!(s.may_subscribe("t", &user, "device:1").is_ok());
        assert!(s.may_subscribe("t", &user, "user:u2").is_err());
        assert!(s.may_subscribe("t", &user, "admin:x").is_err());
        assert!(s.may_subscribe("t", &user, "lobby").is_ok());
        assert!(s.may_subscribe("t", &anon, "lobby").is_err());
        assert!(s.authorize("t", &user, "chat:1", Op::Publish).is_ok());
        assert!(s.authorize("t", &user, "device:1", Op::Publish).is_err());
        assert!(s.authorize("t", &user, "admin:x", Op::Publish).is_err());
    }

    #[test]
    fn tokens_come_from_bearer_or_query() {
        let mut h = HeaderMap::new();
        assert_eq!(
            request_token(&h, Some("channel=a&token=q%2B1")),
            Some("q+1".into())
        );
        h.insert(header::AUTHORIZATION, "Bearer hdr".parse().unwrap());
        assert_eq!(request_token(&h, Some("token=q")), Some("hdr".into()));
        assert_eq!(request_token(&HeaderMap::new(), None), None);
    }

    #[test]
    fn long_names_are_shortened_in_messages() {
        let s = Security::default();
        let refusal = s.check_room("t", &"x".repeat(10_000)).unwrap_err();
        assert_eq!(refusal.code, "room_too_long");
        assert!(refusal.message.len() < 200, "{}", refusal.message);
    }
}
