//! Security: authentication (JWT keys and claims), the channel rules of the
//! config file, browser origins, trusted proxies and the connection, room
//! and message limits.
//!
//! Turned into the transports' [`Security`] here only
//! ([`SecurityArgs::security`]), which also warns about an open server.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use super::Secret;
use crate::hub::{RoomChars, RoomNamePolicy};
use crate::security::jwt::KeyError;
use crate::security::{
    JwtSettings, Limits, Origins, RuleConfig, Rules, Security, TrustedProxies, Verifier,
};

/// `--auth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuthMode {
    /// Anyone may connect and join any room.
    None,
    /// Connections present a JWT; its claims and the rules decide.
    Jwt,
}

/// `--room-name-chars`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RoomCharsArg {
    /// Anything but control characters.
    Printable,
    /// ASCII letters, digits and `_-:.@/=+#~`.
    Safe,
}

#[derive(Debug, Clone, Args)]
pub struct SecurityArgs {
    /// Connection authentication: none (rooms are public) or jwt (connection tokens).
    #[arg(long, env = "ROOMCAST_AUTH", value_enum, default_value = "none")]
    pub auth: AuthMode,

    /// HMAC secret for HS256/HS384/HS512 connection tokens.
    #[arg(long, env = "ROOMCAST_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<Secret>,

    /// PEM file with the RSA, EC (P-256/P-384) or Ed25519 public key of RS*/PS*/ES*/EdDSA tokens.
    #[arg(long, env = "ROOMCAST_JWT_PUBLIC_KEY", value_name = "FILE")]
    pub jwt_public_key: Option<PathBuf>,

    /// JWKS file (JSON key set, keys chosen by `kid`); reloaded when it changes.
    #[arg(long, env = "ROOMCAST_JWKS_FILE", value_name = "FILE")]
    pub jwks_file: Option<PathBuf>,

    /// Accepted token audience (`aud`), repeatable; required in tokens when set.
    #[arg(long, env = "ROOMCAST_JWT_AUDIENCE", value_delimiter = ',')]
    pub jwt_audience: Vec<String>,

    /// Accepted token issuer (`iss`), repeatable; required in tokens when set.
    #[arg(long, env = "ROOMCAST_JWT_ISSUER", value_delimiter = ',')]
    pub jwt_issuer: Vec<String>,

    /// Clock skew allowed on `exp`/`nbf`, seconds.
    #[arg(long, env = "ROOMCAST_JWT_LEEWAY_S", default_value_t = 5)]
    pub jwt_leeway_s: u64,

    /// With --auth jwt, let clients without a token connect as anonymous (rules decide what they may join).
    #[arg(long, env = "ROOMCAST_ALLOW_ANONYMOUS")]
    pub allow_anonymous: bool,

    /// Browser origins allowed besides the same origin and localhost (repeatable; `https://*.example.com`, or `*` for any).
    #[arg(
        long = "allowed-origins",
        env = "ROOMCAST_ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    pub allowed_origins: Vec<String>,

    /// Proxies (addresses or CIDR networks, repeatable) whose `X-Forwarded-For`/`Forwarded: for=` name the client for the per-IP limits.
    #[arg(
        long = "trusted-proxies",
        env = "ROOMCAST_TRUSTED_PROXIES",
        value_delimiter = ',',
        value_parser = crate::security::proxies::parse_net
    )]
    pub trusted_proxies: Vec<ipnet::IpNet>,

    /// Rooms one connection may be in (every transport).
    #[arg(long, env = "ROOMCAST_MAX_ROOMS_PER_CONNECTION", default_value_t = 64)]
    pub max_rooms_per_connection: usize,

    /// Longest room name, characters.
    #[arg(long, env = "ROOMCAST_MAX_ROOM_NAME_CHARS", default_value_t = 200)]
    pub max_room_name_chars: usize,

    /// Characters allowed in room names.
    #[arg(
        long,
        env = "ROOMCAST_ROOM_NAME_CHARS",
        value_enum,
        default_value = "printable"
    )]
    pub room_name_chars: RoomCharsArg,

    /// Open client connections in total (all transports); 0 = unlimited.
    #[arg(long, env = "ROOMCAST_MAX_CONNECTIONS", default_value_t = 100_000)]
    pub max_connections: usize,

    /// Open client connections per IP address; 0 = unlimited.
    #[arg(long, env = "ROOMCAST_MAX_CONNECTIONS_PER_IP", default_value_t = 1_000)]
    pub max_connections_per_ip: usize,

    /// New connections per second per IP address (token bucket); 0 = unlimited.
    #[arg(long, env = "ROOMCAST_CONNECT_RATE_PER_IP", default_value_t = 20.0)]
    pub connect_rate_per_ip: f64,

    /// Burst of new connections per IP address before the rate applies.
    #[arg(long, env = "ROOMCAST_CONNECT_BURST_PER_IP", default_value_t = 100.0)]
    pub connect_burst_per_ip: f64,

    /// Apply the per-IP limits to loopback clients too (off: a local proxy shares one address).
    #[arg(long, env = "ROOMCAST_LIMIT_LOOPBACK")]
    pub limit_loopback: bool,

    /// Inbound messages per second per connection (burst: 2 s worth); 0 = unlimited.
    #[arg(long, env = "ROOMCAST_MAX_MESSAGES_PER_S", default_value_t = 100.0)]
    pub max_messages_per_s: f64,

    /// Bytes a Socket.IO polling client that stopped polling (frames waiting 5 s) may hold before it is dropped (`polling_buffer_full`); also the most one poll answers with.
    #[arg(long, env = "ROOMCAST_MAX_POLLING_BUFFER", default_value_t = 1024 * 1024)]
    pub max_polling_buffer: usize,

    /// Channel rules: the `[[rules]]` tables of the config file (not a flag).
    #[arg(skip)]
    pub rules: Vec<RuleConfig>,
}

impl SecurityArgs {
    /// The security layer from the flags: keys, rules, origins and limits.
    /// Reads the key files of `--auth jwt`.
    pub fn security(&self) -> Result<Security, KeyError> {
        let limits = Limits {
            max_rooms_per_connection: self.max_rooms_per_connection.max(1),
            max_connections: self.max_connections,
            max_connections_per_ip: self.max_connections_per_ip,
            connect_rate_per_ip: self.connect_rate_per_ip.max(0.0),
            connect_burst_per_ip: self.connect_burst_per_ip.max(1.0),
            max_messages_per_s: self.max_messages_per_s.max(0.0),
            limit_loopback: self.limit_loopback,
        };
        let mut security = Security::open(limits);
        security.rules = Rules::new(self.rules.clone());
        security.origins = Origins::new(&self.allowed_origins);
        security.room_names = RoomNamePolicy {
            max_chars: self.max_room_name_chars.max(1),
            chars: match self.room_name_chars {
                RoomCharsArg::Printable => RoomChars::Printable,
                RoomCharsArg::Safe => RoomChars::Safe,
            },
            reserved_prefix: None,
        };
        security.max_polling_buffer = self.max_polling_buffer.max(1024);
        security.proxies = TrustedProxies::new(self.trusted_proxies.clone());
        match self.auth {
            AuthMode::None => {
                tracing::warn!(
                    "--auth none: anyone who can reach this server may connect and join any room \
                 the rules allow; use --auth jwt to require connection tokens"
                );
            }
            AuthMode::Jwt => {
                let verifier = Verifier::new(JwtSettings {
                    secret: self.jwt_secret.as_ref().map(|s| s.expose().to_owned()),
                    public_key: self.jwt_public_key.clone(),
                    jwks_file: self.jwks_file.clone(),
                    audience: self.jwt_audience.clone(),
                    issuer: self.jwt_issuer.clone(),
                    leeway_s: self.jwt_leeway_s,
                })?;
                security.verifier = Some(verifier);
                security.allow_anonymous = self.allow_anonymous;
            }
        }
        if security.origins.allows_any() {
            tracing::warn!(
                "--allowed-origins '*': any web page may open connections to this server"
            );
        }
        Ok(security)
    }
}
