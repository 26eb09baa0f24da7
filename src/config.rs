//! Configuration: command-line flags > environment variables > TOML file >
//! built-in defaults. The only module that reads the environment.
//!
//! The file layer works by turning each key of `--config FILE` into the
//! default of the flag of the same name before clap parses, so clap itself
//! applies the precedence and `--help` stays the one reference.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

use crate::hub::OutboxLimits;
use crate::security::RuleConfig;

#[derive(Debug, Parser)]
#[command(
    name = "roomcast",
    version,
    about = "Real-time messaging server: Socket.IO, WebSocket and SSE rooms fed by Redis or HTTP",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

// Parsed once per process: the size of `Serve` does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (the default when no command is given).
    Serve(Box<ServeArgs>),
    /// Publish DATA to CHANNEL through a running server's HTTP API.
    Publish(PublishArgs),
    /// Exit 0 if a running server answers GET /healthz (for container HEALTHCHECK).
    Healthcheck(HealthcheckArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BrokerKind {
    /// In-process: one node, no dependencies.
    Memory,
    /// Redis Pub/Sub: SUBSCRIBE per room with members here, or PSUBSCRIBE on --pattern
    /// (--redis-subscribe).
    Redis,
    /// NATS: room R is subject <--nats-prefix>.R, subscribed per room with members here.
    Nats,
}

/// `--redis-subscribe`: how a Redis node receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RedisSubscribe {
    /// SUBSCRIBE each room that has members on this node (joins are acknowledged once
    /// Redis confirmed); --pattern restricts which rooms may be joined.
    #[default]
    Rooms,
    /// The seed's PSUBSCRIBE --pattern: every node receives every message.
    Pattern,
}

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

/// A secret (API key, JWT secret): its `Debug` never shows the value, so
/// logging the configuration cannot leak it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret(value)
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AcmeChallenge {
    /// A token served on the plain-HTTP listener (port 80 must reach it).
    #[value(name = "http-01")]
    Http01,
    /// A special certificate on the HTTPS listener itself (port 443 must reach it).
    #[value(name = "tls-alpn-01")]
    TlsAlpn01,
    /// A TXT record through a DNS provider (no inbound port needed; wildcards allowed).
    #[value(name = "dns-01")]
    Dns01,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DnsProviderKind {
    Cloudflare,
    Rfc2136,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TsigAlgorithmKind {
    #[value(name = "hmac-sha256")]
    HmacSha256,
    #[value(name = "hmac-sha384")]
    HmacSha384,
    #[value(name = "hmac-sha512")]
    HmacSha512,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// TOML file whose keys (flag names, `-` or `_`) set defaults below env and flags.
    #[arg(long, env = "ROOMCAST_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Address to listen on.
    #[arg(long, env = "ROOMCAST_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,

    /// Message broker. Default: redis when a Redis URL or REDISHOST is given, else memory.
    #[arg(long, env = "ROOMCAST_BROKER", value_enum)]
    pub broker: Option<BrokerKind>,

    /// Redis URL, e.g. redis://127.0.0.1:6379 or rediss://user:pass@host:6380/0 (TLS).
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<String>,

    /// PEM file of the CA(s) that alone are trusted for a rediss:// server; default: the
    /// system's roots and Mozilla's.
    #[arg(long, env = "ROOMCAST_REDIS_CA_FILE", value_name = "PEM")]
    pub redis_ca_file: Option<PathBuf>,

    /// Seed compatibility: Redis as host:port (used when --redis-url is not set).
    #[arg(long, env = "REDISHOST", hide_short_help = true)]
    pub redishost: Option<String>,

    /// Redis channel pattern (glob): what to PSUBSCRIBE to with --redis-subscribe pattern;
    /// in per-room mode, which rooms may be joined.
    #[arg(long, env = "ROOMCAST_PATTERN", default_value = "*")]
    pub pattern: String,

    /// How a Redis node receives: `rooms` SUBSCRIBEs each room with members here (only
    /// its rooms' messages reach it); `pattern` PSUBSCRIBEs --pattern (every message).
    #[arg(
        long,
        env = "ROOMCAST_REDIS_SUBSCRIBE",
        value_enum,
        default_value = "rooms"
    )]
    pub redis_subscribe: RedisSubscribe,

    /// NATS server URL(s), comma-separated for a cluster, e.g. nats://10.0.0.1:4222,nats://10.0.0.2:4222.
    /// Credentials go in the URL: nats://USER:PASSWORD@host:4222 or nats://TOKEN@host:4222
    /// (%-escape reserved characters).
    #[arg(long, env = "NATS_URL", value_delimiter = ',')]
    pub nats_url: Vec<String>,

    /// NATS subject prefix: room R is subject <PREFIX>.R.
    #[arg(long, env = "ROOMCAST_NATS_PREFIX", default_value = "roomcast")]
    pub nats_prefix: String,

    /// PEM file of the CA(s) trusted for TLS NATS servers (TLS then required).
    #[arg(long, env = "ROOMCAST_NATS_CA_FILE", value_name = "PEM")]
    pub nats_ca_file: Option<PathBuf>,

    /// Channel prefix of the Socket.IO Redis emitter (its `key` option): messages on
    /// <KEY>#/#... and <KEY>-request#/# are emitter events and requests, not rooms.
    /// Empty turns this off.
    #[arg(long, env = "ROOMCAST_EMITTER_KEY", default_value = "socket.io")]
    pub emitter_key: String,

    /// API key for POST /api/publish (repeatable). Without one, HTTP publishing is refused.
    #[arg(
        long = "api-key",
        env = "ROOMCAST_API_KEY",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub api_keys: Vec<Secret>,

    /// Path of the Socket.IO endpoint.
    #[arg(long, env = "ROOMCAST_SOCKETIO_PATH", default_value = "/socket.io/")]
    pub socketio_path: String,

    /// Engine.IO heartbeat interval, milliseconds.
    #[arg(long, env = "ROOMCAST_PING_INTERVAL_MS", default_value_t = 25_000)]
    pub ping_interval_ms: u64,

    /// Engine.IO heartbeat timeout, milliseconds.
    #[arg(long, env = "ROOMCAST_PING_TIMEOUT_MS", default_value_t = 20_000)]
    pub ping_timeout_ms: u64,

    /// Largest inbound frame or polling payload, bytes (also the publish size limit).
    #[arg(long, env = "ROOMCAST_MAX_PAYLOAD", default_value_t = 1_000_000)]
    pub max_payload: usize,

    /// Per-client outgoing queue bound, frames; overflow disconnects the client as a slow consumer.
    #[arg(long, env = "ROOMCAST_CLIENT_QUEUE_MESSAGES", default_value_t = 1024)]
    pub client_queue_messages: usize,

    /// Per-client outgoing queue bound, bytes.
    #[arg(long, env = "ROOMCAST_CLIENT_QUEUE_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub client_queue_bytes: usize,

    /// Recent messages kept per room for clients that resume (SSE Last-Event-ID, /ws `since`); 0 disables.
    #[arg(long, env = "ROOMCAST_HISTORY_SIZE", default_value_t = 100)]
    pub history_size: usize,

    /// Seconds a room's history is kept after its last member left.
    #[arg(long, env = "ROOMCAST_HISTORY_TTL_S", default_value_t = 300)]
    pub history_ttl_s: u64,

    /// Send the seed's `hello` on join only while the room has fewer members than this (0: never).
    #[arg(long, env = "ROOMCAST_HELLO_MAX_MEMBERS", default_value_t = 1000)]
    pub hello_max_members: usize,

    /// Let /ws clients publish with {"op":"publish"}.
    #[arg(long, env = "ROOMCAST_WS_PUBLISH")]
    pub ws_publish: bool,

    /// Invalid requests a /ws client may send before it is disconnected (1008).
    #[arg(long, env = "ROOMCAST_MAX_PROTOCOL_ERRORS", default_value_t = 10)]
    pub max_protocol_errors: u32,

    /// Seconds to wait for connections to drain on SIGTERM; past it the process exits with status 1.
    #[arg(long, env = "ROOMCAST_SHUTDOWN_TIMEOUT_S", default_value_t = 10)]
    pub shutdown_timeout_s: u64,

    /// Seconds a client's socket may accept no bytes while the server writes to it before the client is closed (`slow_consumer`); at least 1.
    #[arg(long, env = "ROOMCAST_WRITE_TIMEOUT_S", default_value_t = 10)]
    pub write_timeout_s: u64,

    /// Seconds a new connection has to send its first complete request head (and a TLS client its handshake); at least 1.
    #[arg(long, env = "ROOMCAST_HEADER_TIMEOUT_S", default_value_t = 10)]
    pub header_timeout_s: u64,

    /// Seconds a kept-alive HTTP connection may wait for its next complete request head (idle time included) before it is closed; at least 1.
    #[arg(long, env = "ROOMCAST_KEEPALIVE_TIMEOUT_S", default_value_t = 60)]
    pub keepalive_timeout_s: u64,

    /// HTTPS from files: PEM certificate chain (reloaded when it changes on disk). Needs --tls-key.
    #[arg(
        long,
        env = "ROOMCAST_TLS_CERT",
        value_name = "PEM",
        help_heading = "HTTPS"
    )]
    pub tls_cert: Option<PathBuf>,

    /// HTTPS from files: PEM private key (PKCS#8, PKCS#1 or SEC1), reloaded with the certificate.
    #[arg(
        long,
        env = "ROOMCAST_TLS_KEY",
        value_name = "PEM",
        help_heading = "HTTPS"
    )]
    pub tls_key: Option<PathBuf>,

    /// Plain-HTTP listener when HTTPS is on: ACME HTTP-01 answers, /healthz, and a redirect to
    /// https:// for everything else. `off` disables it.
    #[arg(
        long,
        env = "ROOMCAST_HTTP_LISTEN",
        default_value = "0.0.0.0:80",
        value_name = "ADDR|off",
        help_heading = "HTTPS"
    )]
    pub http_listen: String,

    /// How often --tls-cert/--tls-key are checked for changes, milliseconds.
    #[arg(
        long,
        env = "ROOMCAST_TLS_RELOAD_INTERVAL_MS",
        default_value_t = 5_000,
        hide = true
    )]
    pub tls_reload_interval_ms: u64,

    /// HTTPS over ACME: a domain to obtain a certificate for (repeatable, or comma-separated).
    #[arg(
        long = "acme-domain",
        env = "ROOMCAST_ACME_DOMAIN",
        value_delimiter = ',',
        value_name = "DOMAIN",
        help_heading = "HTTPS"
    )]
    pub acme_domains: Vec<String>,

    /// Seed compatibility: the domain to obtain a certificate for (used when --acme-domain is not set).
    #[arg(long, env = "RTHOST", hide_short_help = true, help_heading = "HTTPS")]
    pub rthost: Option<String>,

    /// Contact e-mail for the ACME account (expiry notices from the CA).
    #[arg(long, env = "ROOMCAST_ACME_EMAIL", help_heading = "HTTPS")]
    pub acme_email: Option<String>,

    /// ACME directory: `staging` (Let's Encrypt staging, untrusted test certificates), `production`
    /// (Let's Encrypt), or any directory URL.
    #[arg(
        long,
        env = "ROOMCAST_ACME_DIRECTORY",
        default_value = "staging",
        help_heading = "HTTPS"
    )]
    pub acme_directory: String,

    /// Where the ACME account key and certificates are kept (0600). Mount it as a volume in containers.
    #[arg(
        long,
        env = "ROOMCAST_ACME_CACHE_DIR",
        default_value = "roomcast-acme",
        help_heading = "HTTPS"
    )]
    pub acme_cache_dir: PathBuf,

    /// ACME challenge. Default: dns-01 when DNS provider credentials are given, else http-01.
    #[arg(
        long,
        env = "ROOMCAST_ACME_CHALLENGE",
        value_enum,
        help_heading = "HTTPS"
    )]
    pub acme_challenge: Option<AcmeChallenge>,

    /// Extra PEM root CA trusted for the ACME directory (a private or test CA such as pebble).
    #[arg(
        long,
        env = "ROOMCAST_ACME_CA_ROOT",
        value_name = "PEM",
        help_heading = "HTTPS"
    )]
    pub acme_ca_root: Option<PathBuf>,

    /// DNS-01: seconds to wait after the TXT record is set before asking the CA to validate.
    #[arg(
        long,
        env = "ROOMCAST_ACME_DNS_WAIT_S",
        default_value_t = 30,
        help_heading = "HTTPS"
    )]
    pub acme_dns_wait_s: u64,

    /// DNS-01 provider. Default: whichever provider's settings are given.
    #[arg(
        long,
        env = "ROOMCAST_DNS_PROVIDER",
        value_enum,
        help_heading = "HTTPS"
    )]
    pub dns_provider: Option<DnsProviderKind>,

    /// Cloudflare API token with Zone:DNS:Edit permission.
    #[arg(
        long,
        env = "CLOUDFLARE_API_TOKEN",
        hide_env_values = true,
        help_heading = "HTTPS"
    )]
    pub cloudflare_api_token: Option<String>,

    /// Seed compatibility: Cloudflare account e-mail for the global API key.
    #[arg(long, env = "CLOUDFLARE_EMAIL", help_heading = "HTTPS")]
    pub cloudflare_email: Option<String>,

    /// Seed compatibility: Cloudflare global API key (with CLOUDFLARE_EMAIL).
    #[arg(
        long,
        env = "CLOUDFLARE_API_KEY",
        hide_env_values = true,
        help_heading = "HTTPS"
    )]
    pub cloudflare_api_key: Option<String>,

    /// Cloudflare API base URL.
    #[arg(
        long,
        env = "CLOUDFLARE_API_URL",
        default_value = "https://api.cloudflare.com/client/v4",
        hide = true
    )]
    pub cloudflare_api_url: String,

    /// RFC 2136: primary name server that accepts dynamic updates, host:port.
    #[arg(long, env = "RFC2136_NAMESERVER", help_heading = "HTTPS")]
    pub rfc2136_server: Option<String>,

    /// RFC 2136: the zone to update (e.g. example.com). Default: the domain's parent.
    #[arg(long, env = "RFC2136_ZONE", help_heading = "HTTPS")]
    pub rfc2136_zone: Option<String>,

    /// RFC 2136: TSIG key name.
    #[arg(long, env = "RFC2136_TSIG_KEY", help_heading = "HTTPS")]
    pub rfc2136_tsig_key: Option<String>,

    /// RFC 2136: TSIG secret, base64.
    #[arg(
        long,
        env = "RFC2136_TSIG_SECRET",
        hide_env_values = true,
        help_heading = "HTTPS"
    )]
    pub rfc2136_tsig_secret: Option<String>,

    /// RFC 2136: TSIG algorithm.
    #[arg(
        long,
        env = "RFC2136_TSIG_ALGORITHM",
        value_enum,
        default_value = "hmac-sha256",
        help_heading = "HTTPS"
    )]
    pub rfc2136_tsig_algorithm: TsigAlgorithmKind,

    // ---- security: auth, origins, limits. Keep these together. ----
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
    // ---- end of security ----
    // ---- MQTT ingest. Keep these together. ----
    /// MQTT broker to ingest device messages from: mqtt://host[:1883] or mqtts://host[:8883] (TLS).
    /// Each message is published to roomcast's broker, payload unchanged.
    #[arg(long, env = "MQTT_URL", help_heading = "MQTT ingest")]
    pub mqtt_url: Option<String>,

    /// MQTT topic filter to subscribe to (repeatable; `+` and `#` wildcards).
    #[arg(
        long = "mqtt-topic",
        env = "ROOMCAST_MQTT_TOPIC",
        default_value = "#",
        value_name = "FILTER",
        help_heading = "MQTT ingest"
    )]
    pub mqtt_topics: Vec<String>,

    /// Room of an MQTT message: text with {1}, {2}… for the levels matched by the filter's `+`
    /// wildcards, in order (filter devices/+/telemetry with device-{1}: devices/42/telemetry →
    /// device-42). Default: the topic itself.
    #[arg(
        long,
        env = "ROOMCAST_MQTT_ROOM",
        value_name = "TEMPLATE",
        help_heading = "MQTT ingest"
    )]
    pub mqtt_room: Option<String>,

    /// MQTT subscription QoS: 0 (at most once) or 1 (at least once; acknowledged only once
    /// published to roomcast's broker).
    #[arg(
        long,
        env = "ROOMCAST_MQTT_QOS",
        default_value_t = 1,
        value_parser = clap::value_parser!(u8).range(0..=1),
        help_heading = "MQTT ingest"
    )]
    pub mqtt_qos: u8,

    /// MQTT user name.
    #[arg(long, env = "MQTT_USERNAME", help_heading = "MQTT ingest")]
    pub mqtt_username: Option<String>,

    /// MQTT password.
    #[arg(
        long,
        env = "MQTT_PASSWORD",
        hide_env_values = true,
        help_heading = "MQTT ingest"
    )]
    pub mqtt_password: Option<Secret>,

    /// MQTT client id; keep it stable per node, as the persistent session is keyed by it.
    /// Default: roomcast-$HOSTNAME, else roomcast-<random>.
    #[arg(long, env = "MQTT_CLIENT_ID", help_heading = "MQTT ingest")]
    pub mqtt_client_id: Option<String>,

    /// Host name, for the default MQTT client id.
    #[arg(long, env = "HOSTNAME", hide = true)]
    pub hostname: Option<String>,

    /// PEM file of the CA(s) that alone are trusted for an mqtts:// broker; default: the
    /// Mozilla roots.
    #[arg(
        long,
        env = "ROOMCAST_MQTT_CA_FILE",
        value_name = "PEM",
        help_heading = "MQTT ingest"
    )]
    pub mqtt_ca_file: Option<PathBuf>,

    /// MQTT 5 shared-subscription group: nodes subscribe to $share/GROUP/FILTER, so the MQTT
    /// broker hands each message to one node. Empty: plain subscriptions (one node only, or
    /// every node ingests every message).
    #[arg(
        long,
        env = "ROOMCAST_MQTT_SHARE_GROUP",
        default_value = "roomcast",
        value_name = "GROUP",
        help_heading = "MQTT ingest"
    )]
    pub mqtt_share_group: String,

    /// Seconds the MQTT broker keeps roomcast's session (subscriptions, queued QoS 1
    /// messages) while roomcast is disconnected.
    #[arg(
        long,
        env = "ROOMCAST_MQTT_SESSION_EXPIRY_S",
        default_value_t = 300,
        help_heading = "MQTT ingest"
    )]
    pub mqtt_session_expiry_s: u32,
    // ---- end of MQTT ingest ----
    /// Log format.
    #[arg(long, env = "ROOMCAST_LOG_FORMAT", value_enum, default_value = "human")]
    pub log_format: LogFormat,

    /// Log filter (tracing env-filter syntax); RUST_LOG is used when unset.
    #[arg(long, env = "ROOMCAST_LOG", default_value = "info")]
    pub log: String,
}

#[derive(Debug, Clone, Args)]
pub struct PublishArgs {
    /// Channel (room) to publish to.
    pub channel: String,
    /// Payload, sent as-is.
    pub data: String,
    #[command(flatten)]
    pub server: ServerUrl,
    /// API key (Authorization: Bearer).
    #[arg(long, env = "ROOMCAST_API_KEY")]
    pub api_key: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct HealthcheckArgs {
    #[command(flatten)]
    pub server: ServerUrl,
}

/// Where `publish` and `healthcheck` find the server.
#[derive(Debug, Clone, Args)]
pub struct ServerUrl {
    /// Base URL of the roomcast server [default: http://127.0.0.1 on the port of
    /// ROOMCAST_LISTEN when set, else http://127.0.0.1:8080]
    #[arg(long, env = "ROOMCAST_URL")]
    pub url: Option<String>,
    /// The server's own listen address: a container's HEALTHCHECK shares the
    /// server's environment, so it finds a moved port by itself.
    #[arg(long, env = "ROOMCAST_LISTEN", hide = true)]
    pub listen: Option<std::net::SocketAddr>,
}

impl ServerUrl {
    /// `--url`, else the listen address (loopback for a wildcard), else the default.
    pub fn base(&self) -> String {
        if let Some(url) = &self.url {
            return url.trim_end_matches('/').to_owned();
        }
        let listen = self
            .listen
            .unwrap_or_else(|| std::net::SocketAddr::from(([127, 0, 0, 1], 8080)));
        let ip = match listen.ip() {
            std::net::IpAddr::V4(ip) if ip.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::IpAddr::V6(ip) if ip.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
            ip => ip,
        };
        format!("http://{}", std::net::SocketAddr::new(ip, listen.port()))
    }
}

/// The broker settings resolved from flags, env and the seed's REDISHOST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrokerConfig {
    Memory,
    Redis {
        url: String,
        pattern: String,
        subscribe: RedisSubscribe,
    },
    Nats {
        urls: Vec<String>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error(
        "config file {path}: unknown setting `{key}` (settings are the flag names, see --help)"
    )]
    UnknownKey { path: PathBuf, key: String },
    #[error(
        "config file {path}: setting `{key}` must be a string, number, boolean or list of those"
    )]
    BadValue { path: PathBuf, key: String },
    #[error("config file {path}: bad [[rules]] table: {message}")]
    BadRules { path: PathBuf, message: String },
    #[error("--broker redis needs --redis-url (or REDIS_URL, or REDISHOST=host:port)")]
    MissingRedisUrl,
    #[error("--broker nats needs --nats-url (or NATS_URL)")]
    MissingNatsUrl,
    #[error("--socketio-path must start with `/`, got `{0}`")]
    BadPath(String),
    /// Bad flags or file values, `--help` or `--version`: clap's own report.
    #[error("{0}")]
    Flags(clap::Error),
}

/// Parses the process's arguments with the file layer applied. Exits with
/// clap's message on bad flags.
pub fn parse() -> Result<Cli, ConfigError> {
    parse_from(std::env::args_os().collect(), |key| std::env::var_os(key))
}

/// [`parse`] over explicit arguments and environment (for tests).
pub fn parse_from(
    args: Vec<std::ffi::OsString>,
    env: impl Fn(&str) -> Option<std::ffi::OsString>,
) -> Result<Cli, ConfigError> {
    let file = match config_path(&args, env) {
        Some(path) => {
            let text = read_file(&path)?;
            Some((path, text))
        }
        None => None,
    };
    let file = file
        .as_ref()
        .map(|(path, text)| (path.as_path(), text.as_str()));
    match parse_with_file(args, file) {
        // `--help`, `--version` and bad flags: clap prints and exits.
        Err(ConfigError::Flags(error)) => error.exit(),
        other => other,
    }
}

/// The arguments over a config file's text (`path` only names it in
/// errors): the file layer and clap's parse, reading nothing and never
/// exiting, so every bad file is an `Err`. [`parse_from`] reads the file;
/// the config fuzz target feeds text.
pub fn parse_with_file(
    args: Vec<std::ffi::OsString>,
    file: Option<(&Path, &str)>,
) -> Result<Cli, ConfigError> {
    let mut command = Cli::command();
    let mut rules = Vec::new();
    if let Some((path, text)) = file {
        let table = parse_file(path, text)?;
        rules = file_rules(path, &table)?;
        // `roomcast` and `roomcast serve` take the same flags: both get the file.
        for (id, values) in file_defaults(path, table, &command)? {
            command = command
                .mut_arg(&id, |arg| arg.default_values(values.clone()))
                .mut_subcommand("serve", |serve| {
                    serve.mut_arg(&id, |arg| arg.default_values(values))
                });
        }
    }
    let matches = command
        .try_get_matches_from(args)
        .map_err(ConfigError::Flags)?;
    let mut cli = Cli::from_arg_matches(&matches).map_err(ConfigError::Flags)?;
    cli.serve.rules = rules.clone();
    if let Some(Command::Serve(serve)) = &mut cli.command {
        serve.rules = rules;
    }
    Ok(cli)
}

/// The `--config` value from the arguments, else ROOMCAST_CONFIG.
fn config_path(
    args: &[std::ffi::OsString],
    env: impl Fn(&str) -> Option<std::ffi::OsString>,
) -> Option<PathBuf> {
    let mut iter = args.iter().map(|a| a.to_string_lossy());
    while let Some(arg) = iter.next() {
        if arg == "--config" {
            return iter.next().map(|v| PathBuf::from(v.as_ref()));
        }
        if let Some(value) = arg.strip_prefix("--config=") {
            return Some(PathBuf::from(value));
        }
    }
    env("ROOMCAST_CONFIG").map(PathBuf::from)
}

fn read_file(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })
}

fn parse_file(path: &Path, text: &str) -> Result<toml::Table, ConfigError> {
    text.parse().map_err(|source| ConfigError::Parse {
        path: path.to_owned(),
        source: Box::new(source),
    })
}

/// The file's keys that are tables rather than flags (`[[rules]]`).
const TABLE_KEYS: &[&str] = &["rules"];

/// The `[[rules]]` tables of the file, in order.
fn file_rules(path: &Path, table: &toml::Table) -> Result<Vec<RuleConfig>, ConfigError> {
    let Some(value) = table.get("rules") else {
        return Ok(Vec::new());
    };
    parse_rules(value).map_err(|message| ConfigError::BadRules {
        path: path.to_owned(),
        message,
    })
}

/// Parses the value of the `rules` key: an array of tables with `match`
/// and optional `subscribe`/`publish` levels. Public for the fuzz tests.
pub fn parse_rules(value: &toml::Value) -> Result<Vec<RuleConfig>, String> {
    let rules: Vec<RuleConfig> = value
        .clone()
        .try_into()
        .map_err(|e: toml::de::Error| e.message().to_owned())?;
    for rule in &rules {
        if rule.pattern.is_empty() {
            return Err("`match` must not be empty".into());
        }
        if rule.subscribe.is_none() && rule.publish.is_none() {
            return Err(format!(
                "rule `{}` sets neither `subscribe` nor `publish`",
                rule.pattern
            ));
        }
    }
    Ok(rules)
}

/// Turns the TOML table into (flag id, values) pairs, refusing unknown keys.
fn file_defaults(
    path: &Path,
    table: toml::Table,
    command: &clap::Command,
) -> Result<Vec<(String, Vec<String>)>, ConfigError> {
    let mut defaults = Vec::new();
    for (key, value) in table {
        if TABLE_KEYS.contains(&key.as_str()) {
            continue;
        }
        let id = key.replace('-', "_");
        let known = command
            .get_arguments()
            .any(|arg| arg.get_id() == id.as_str() && id != "config");
        // `api_key` is the file spelling of the repeatable --api-key flag.
        let id = if id == "api_key" {
            "api_keys".to_string()
        } else {
            id
        };
        if !known && id != "api_keys" {
            return Err(ConfigError::UnknownKey {
                path: path.to_owned(),
                key,
            });
        }
        let values = toml_values(&value).ok_or_else(|| ConfigError::BadValue {
            path: path.to_owned(),
            key,
        })?;
        defaults.push((id, values));
    }
    Ok(defaults)
}

fn toml_values(value: &toml::Value) -> Option<Vec<String>> {
    match value {
        toml::Value::String(s) => Some(vec![s.clone()]),
        toml::Value::Integer(i) => Some(vec![i.to_string()]),
        toml::Value::Float(f) => Some(vec![f.to_string()]),
        toml::Value::Boolean(b) => Some(vec![b.to_string()]),
        toml::Value::Array(items) => items
            .iter()
            .map(|v| {
                toml_values(v)
                    .filter(|v| v.len() == 1)
                    .map(|mut v| v.remove(0))
            })
            .collect(),
        _ => None,
    }
}

impl ServeArgs {
    /// Resolves the broker: `--broker`, else redis when a Redis address is
    /// known, else memory. REDISHOST=host:port becomes redis://host:port.
    pub fn broker_config(&self) -> Result<BrokerConfig, ConfigError> {
        let url = self
            .redis_url
            .clone()
            .or_else(|| self.redishost.as_ref().map(|h| format!("redis://{h}")));
        let nats = || match self.nats_url.is_empty() {
            true => Err(ConfigError::MissingNatsUrl),
            false => Ok(BrokerConfig::Nats {
                urls: self.nats_url.clone(),
            }),
        };
        match (self.broker, url) {
            (Some(BrokerKind::Nats), _) => nats(),
            (None, None) if !self.nats_url.is_empty() => nats(),
            (Some(BrokerKind::Memory), _) | (None, None) => Ok(BrokerConfig::Memory),
            (Some(BrokerKind::Redis), None) => Err(ConfigError::MissingRedisUrl),
            (Some(BrokerKind::Redis) | None, Some(url)) => Ok(BrokerConfig::Redis {
                url,
                pattern: self.pattern.clone(),
                subscribe: self.redis_subscribe,
            }),
        }
    }

    pub fn outbox_limits(&self) -> OutboxLimits {
        OutboxLimits {
            max_frames: self.client_queue_messages.max(1),
            max_bytes: self.client_queue_bytes.max(1),
        }
    }

    pub fn ping_interval(&self) -> Duration {
        Duration::from_millis(self.ping_interval_ms)
    }

    pub fn ping_timeout(&self) -> Duration {
        Duration::from_millis(self.ping_timeout_ms)
    }

    pub fn write_timeout(&self) -> Duration {
        Duration::from_secs(self.write_timeout_s.max(1))
    }

    pub fn header_timeout(&self) -> Duration {
        Duration::from_secs(self.header_timeout_s.max(1))
    }

    pub fn keepalive_timeout(&self) -> Duration {
        Duration::from_secs(self.keepalive_timeout_s.max(1))
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.socketio_path.starts_with('/') {
            return Err(ConfigError::BadPath(self.socketio_path.clone()));
        }
        self.broker_config().map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_commands_find_the_server_from_its_listen_address() {
        let base = |url: Option<&str>, listen: Option<&str>| {
            ServerUrl {
                url: url.map(str::to_owned),
                listen: listen.map(|l| l.parse().unwrap()),
            }
            .base()
        };
        assert_eq!(base(None, None), "http://127.0.0.1:8080");
        assert_eq!(base(None, Some("0.0.0.0:9000")), "http://127.0.0.1:9000");
        assert_eq!(base(None, Some("[::]:9001")), "http://[::1]:9001");
        assert_eq!(base(None, Some("10.1.2.3:81")), "http://10.1.2.3:81");
        assert_eq!(
            base(Some("http://h:1/"), Some("0.0.0.0:9000")),
            "http://h:1"
        );
    }
    use std::collections::HashMap;
    use std::ffi::OsString;

    fn parse_with(args: &[&str], env: &[(&str, &str)]) -> Result<Cli, ConfigError> {
        let env: HashMap<String, OsString> = env
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        // clap reads `env = ...` attributes from the real environment, so only
        // the config-file lookup goes through `env` here; the tests set no
        // real variables and use flags for the env layer's place instead.
        let args = std::iter::once("roomcast")
            .chain(args.iter().copied())
            .map(OsString::from);
        parse_from(args.collect(), |k| env.get(k).cloned())
    }

    fn write_file(text: &str) -> (tempdir::TempDir, PathBuf) {
        let dir = tempdir::TempDir::new();
        let path = dir.0.join("roomcast.toml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    mod tempdir {
        /// A directory removed on drop (tests only).
        pub struct TempDir(pub std::path::PathBuf);
        impl TempDir {
            pub fn new() -> Self {
                let path = std::env::temp_dir().join(format!(
                    "roomcast-config-{}-{}",
                    std::process::id(),
                    rand::random::<u64>()
                ));
                std::fs::create_dir_all(&path).unwrap();
                TempDir(path)
            }
        }
        impl Drop for TempDir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    #[test]
    fn defaults_use_the_memory_broker_on_8080() {
        let cli = parse_with(&[], &[]).unwrap();
        assert_eq!(cli.serve.listen, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(cli.serve.broker_config().unwrap(), BrokerConfig::Memory);
        assert_eq!(cli.serve.pattern, "*");
    }

    #[test]
    fn file_sets_defaults_and_flags_override_it() {
        let (_dir, path) = write_file(
            "listen = \"127.0.0.1:9000\"\nredis-url = \"redis://10.0.0.1:6379\"\napi_key = [\"a\", \"b\"]\nping_interval_ms = 1000\n",
        );
        let path = path.to_str().unwrap();
        let cli = parse_with(&["--config", path], &[]).unwrap();
        assert_eq!(cli.serve.listen, "127.0.0.1:9000".parse().unwrap());
        let keys: Vec<&str> = cli.serve.api_keys.iter().map(Secret::expose).collect();
        assert_eq!(keys, vec!["a", "b"]);
        assert!(
            !format!("{:?}", cli.serve).contains("\"a\""),
            "Debug never shows keys"
        );
        assert_eq!(cli.serve.ping_interval_ms, 1000);
        assert_eq!(
            cli.serve.broker_config().unwrap(),
            BrokerConfig::Redis {
                url: "redis://10.0.0.1:6379".into(),
                pattern: "*".into(),
                subscribe: RedisSubscribe::Rooms,
            }
        );
        let cli = parse_with(&["--config", path, "--listen", "127.0.0.1:9001"], &[]).unwrap();
        assert_eq!(cli.serve.listen, "127.0.0.1:9001".parse().unwrap());
    }

    #[test]
    fn trusted_proxies_come_from_the_file_or_the_flag() {
        let (_dir, path) = write_file("trusted_proxies = [\"10.1.0.0/16\", \"127.0.0.1\"]\n");
        let path = path.to_str().unwrap();
        let nets = |cli: Cli| -> Vec<String> {
            let nets = cli.serve.trusted_proxies.iter();
            nets.map(|n| n.to_string()).collect()
        };
        let cli = parse_with(&["--config", path], &[]).unwrap();
        assert_eq!(nets(cli), ["10.1.0.0/16", "127.0.0.1/32"]);
        let cli = parse_with(
            &["--config", path, "--trusted-proxies", "::1,fd00::/8"],
            &[],
        );
        assert_eq!(nets(cli.unwrap()), ["::1/128", "fd00::/8"]);
        assert!(
            parse_with(&[], &[])
                .unwrap()
                .serve
                .trusted_proxies
                .is_empty()
        );
    }

    #[test]
    fn the_serve_subcommand_reads_the_file_too() {
        let (_dir, path) = write_file("listen = \"127.0.0.1:9002\"\n");
        let cli = parse_with(&["serve", "--config", path.to_str().unwrap()], &[]).unwrap();
        match cli.command {
            Some(Command::Serve(serve)) => {
                assert_eq!(serve.listen, "127.0.0.1:9002".parse().unwrap())
            }
            other => panic!("expected serve, got {other:?}"),
        }
    }

    #[test]
    fn config_path_may_come_from_the_environment() {
        let (_dir, path) = write_file("pattern = \"device*\"\n");
        let cli = parse_with(&[], &[("ROOMCAST_CONFIG", path.to_str().unwrap())]).unwrap();
        assert_eq!(cli.serve.pattern, "device*");
    }

    #[test]
    fn unknown_file_keys_are_refused_by_name() {
        let (_dir, path) = write_file("lisen = \"x\"\n");
        let err = parse_with(&["--config", path.to_str().unwrap()], &[]).unwrap_err();
        assert!(err.to_string().contains("unknown setting `lisen`"), "{err}");
    }

    #[test]
    fn rules_tables_are_parsed_beside_flags() {
        let (_dir, path) = write_file(
            "auth = \"jwt\"\njwt_secret = \"x\"\n\n[[rules]]\nmatch = \"public:*\"\nsubscribe = \"anyone\"\n\n[[rules]]\nmatch = \"admin:*\"\nsubscribe = \"nobody\"\npublish = \"nobody\"\n",
        );
        let cli = parse_with(&["--config", path.to_str().unwrap()], &[]).unwrap();
        assert_eq!(cli.serve.auth, AuthMode::Jwt);
        assert_eq!(cli.serve.rules.len(), 2);
        assert_eq!(cli.serve.rules[0].pattern, "public:*");
        assert_eq!(
            cli.serve.rules[1].publish,
            Some(crate::security::Level::Nobody)
        );
        assert!(!format!("{:?}", cli.serve).contains("jwt_secret: Some(Secret(\"x"));
    }

    #[test]
    fn bad_rules_are_refused_with_a_reason() {
        for text in [
            "[[rules]]\nmatch = \"a\"\nsubscribe = \"everyone\"\n",
            "[[rules]]\nmatch = \"a\"\n",
            "[[rules]]\nmatch = \"\"\nsubscribe = \"anyone\"\n",
            "[[rules]]\nmatch = \"a\"\nsubscribe = \"anyone\"\nextra = 1\n",
            "rules = 5\n",
        ] {
            let (_dir, path) = write_file(text);
            let err = parse_with(&["--config", path.to_str().unwrap()], &[]).unwrap_err();
            assert!(matches!(err, ConfigError::BadRules { .. }), "{text}: {err}");
        }
    }

    proptest::proptest! {
        #[test]
        fn any_toml_rules_value_is_handled(text in ".{0,200}") {
            if let Ok(table) = text.parse::<toml::Table>()
                && let Some(value) = table.get("rules")
            {
                let _ = parse_rules(value);
            }
        }
    }

    #[test]
    fn seed_redishost_selects_redis() {
        let cli = parse_with(&["--redishost", "redis:6379"], &[]).unwrap();
        assert_eq!(
            cli.serve.broker_config().unwrap(),
            BrokerConfig::Redis {
                url: "redis://redis:6379".into(),
                pattern: "*".into(),
                subscribe: RedisSubscribe::Rooms,
            }
        );
        let cli = parse_with(&["--broker", "redis"], &[]).unwrap();
        assert!(matches!(
            cli.serve.broker_config(),
            Err(ConfigError::MissingRedisUrl)
        ));
        let cli = parse_with(&["--broker", "memory", "--redis-url", "redis://x"], &[]).unwrap();
        assert_eq!(cli.serve.broker_config().unwrap(), BrokerConfig::Memory);
    }

    #[test]
    fn publish_subcommand_parses() {
        let cli = parse_with(&["publish", "room", "hello", "--api-key", "k"], &[]).unwrap();
        match cli.command {
            Some(Command::Publish(p)) => {
                assert_eq!((p.channel.as_str(), p.data.as_str()), ("room", "hello"));
                assert_eq!(p.api_key.as_deref(), Some("k"));
            }
            other => panic!("expected publish, got {other:?}"),
        }
    }
}
