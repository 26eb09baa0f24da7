//! The message broker: which engine (memory, Redis, Redis Cluster, NATS), its address and
//! options, and the Socket.IO emitter's channel prefix.
//!
//! Turned into a [`BrokerConfig`] here only ([`BrokerArgs::settings`]):
//! `--broker`, else redis when a Redis address is known (REDIS_URL, or the
//! seed's REDISHOST), else redis-cluster when only REDIS_CLUSTER_URLS is,
//! else nats when a NATS URL is, else memory.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use super::ConfigError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BrokerKind {
    /// In-process: one node, no dependencies.
    Memory,
    /// Redis Pub/Sub: SUBSCRIBE per room with members here, or PSUBSCRIBE on --pattern
    /// (--redis-subscribe).
    Redis,
    /// Redis Cluster sharded pub/sub: SSUBSCRIBE each room with members here on the master
    /// of its slot; publishers use SPUBLISH. --redis-url lists seed nodes.
    RedisCluster,
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

#[derive(Debug, Clone, Args)]
pub struct BrokerArgs {
    /// Message broker. Default: redis when a Redis URL or REDISHOST is given, else memory.
    #[arg(long, env = "ROOMCAST_BROKER", value_enum)]
    pub broker: Option<BrokerKind>,

    /// Redis URL, e.g. redis://127.0.0.1:6379 or rediss://user:pass@host:6380/0 (TLS).
    /// With --broker redis-cluster: seed nodes, comma-separated or repeated.
    #[arg(long, env = "REDIS_URL", value_delimiter = ',')]
    pub redis_url: Vec<String>,

    /// Redis Cluster seed nodes when --redis-url is not set (selects --broker redis-cluster).
    #[arg(
        long,
        env = "REDIS_CLUSTER_URLS",
        value_delimiter = ',',
        hide_short_help = true
    )]
    pub redis_cluster_urls: Vec<String>,

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
}

/// The broker settings resolved from flags, env and the seed's REDISHOST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrokerConfig {
    Memory,
    Redis {
        url: String,
        pattern: String,
        subscribe: RedisSubscribe,
        /// `--redis-ca-file`: the only CA(s) trusted for rediss://.
        ca_file: Option<PathBuf>,
    },
    RedisCluster {
        urls: Vec<String>,
        pattern: String,
        /// `--redis-ca-file`, for every node.
        ca_file: Option<PathBuf>,
    },
    Nats {
        urls: Vec<String>,
        prefix: String,
        ca_file: Option<PathBuf>,
    },
}

impl BrokerArgs {
    /// Resolves the broker: `--broker`, else redis when a Redis address is
    /// known, else memory. REDISHOST=host:port becomes redis://host:port.
    pub fn settings(&self) -> Result<BrokerConfig, ConfigError> {
        let urls: Vec<String> = self
            .redis_url
            .iter()
            .map(|url| url.trim().to_string())
            .filter(|url| !url.is_empty())
            .collect();
        let cluster = || {
            let seeds = if urls.is_empty() {
                &self.redis_cluster_urls
            } else {
                &urls
            };
            match seeds.is_empty() {
                true => Err(ConfigError::MissingClusterUrls),
                false => Ok(BrokerConfig::RedisCluster {
                    urls: seeds.clone(),
                    pattern: self.pattern.clone(),
                    ca_file: self.redis_ca_file.clone(),
                }),
            }
        };
        if urls.len() > 1 && matches!(self.broker, None | Some(BrokerKind::Redis)) {
            return Err(ConfigError::TooManyRedisUrls(urls.len()));
        }
        let url = urls
            .first()
            .cloned()
            .or_else(|| self.redishost.as_ref().map(|h| format!("redis://{h}")));
        let nats = || match self.nats_url.is_empty() {
            true => Err(ConfigError::MissingNatsUrl),
            false => Ok(BrokerConfig::Nats {
                urls: self.nats_url.clone(),
                prefix: self.nats_prefix.clone(),
                ca_file: self.nats_ca_file.clone(),
            }),
        };
        match (self.broker, url) {
            (Some(BrokerKind::RedisCluster), _) => cluster(),
            (None, None) if !self.redis_cluster_urls.is_empty() => cluster(),
            (Some(BrokerKind::Nats), _) => nats(),
            (None, None) if !self.nats_url.is_empty() => nats(),
            (Some(BrokerKind::Memory), _) | (None, None) => Ok(BrokerConfig::Memory),
            (Some(BrokerKind::Redis), None) => Err(ConfigError::MissingRedisUrl),
            (Some(BrokerKind::Redis) | None, Some(url)) => Ok(BrokerConfig::Redis {
                url,
                pattern: self.pattern.clone(),
                subscribe: self.redis_subscribe,
                ca_file: self.redis_ca_file.clone(),
            }),
        }
    }
}
