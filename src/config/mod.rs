//! Configuration: command-line flags > environment variables > TOML file >
//! built-in defaults. The only module that reads the environment.
//!
//! The file layer (`file.rs`) works by turning each key of `--config FILE`
//! into the default of the flag of the same name before clap parses, so clap
//! itself applies the precedence and `--help` stays the one reference.
//!
//! [`ServeArgs`] is a few groups flattened into one command line, one file
//! per group, each turned into the settings of the part it configures in
//! that file and nowhere else: `http` (listener, API keys, timeouts),
//! `broker` ([`BrokerConfig`]), `transports` (Socket.IO path, heartbeat,
//! frame size, `/ws`), `hub` (`HubConfig`, `OutboxLimits`), `tls`
//! (`TlsSettings`), `security` (`Security`) and `ingest` (`MqttSettings`).
//! Flag names, env names and file keys are the field names, so moving a
//! flag between groups changes none of them (`tests/config_flags.rs`).

mod broker;
mod file;
mod http;
mod hub;
mod ingest;
mod security;
mod tls;
mod transports;

use std::path::{Path, PathBuf};

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

pub use broker::{BrokerArgs, BrokerConfig, BrokerKind, RedisSubscribe};
pub use file::parse_rules;
pub use http::HttpArgs;
pub use hub::HubArgs;
pub use ingest::MqttArgs;
pub use security::{AuthMode, RoomCharsArg, SecurityArgs};
pub use tls::TlsArgs;
pub use transports::TransportArgs;

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
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// TOML file whose keys (flag names, `-` or `_`) set defaults below env and flags.
    #[arg(long, env = "ROOMCAST_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    #[command(flatten)]
    pub http: HttpArgs,

    #[command(flatten)]
    pub broker: BrokerArgs,

    #[command(flatten)]
    pub transports: TransportArgs,

    #[command(flatten)]
    pub hub: HubArgs,

    #[command(flatten)]
    pub tls: TlsArgs,

    #[command(flatten)]
    pub security: SecurityArgs,

    #[command(flatten)]
    pub mqtt: MqttArgs,

    /// Log format.
    #[arg(long, env = "ROOMCAST_LOG_FORMAT", value_enum, default_value = "human")]
    pub log_format: LogFormat,

    /// Log filter (tracing env-filter syntax); RUST_LOG is used when unset.
    #[arg(long, env = "ROOMCAST_LOG", default_value = "info")]
    pub log: String,
}

impl ServeArgs {
    /// The checks that need no I/O: the Socket.IO path and the broker.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.transports.validate()?;
        self.broker.settings().map(|_| ())
    }
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
    #[error(
        "--broker redis takes one --redis-url, got {0}; a list of seed nodes is for --broker redis-cluster"
    )]
    TooManyRedisUrls(usize),
    #[error("--broker redis-cluster needs --redis-url (or REDIS_CLUSTER_URLS) with seed nodes")]
    MissingClusterUrls,
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
    let file = match file::config_path(&args, env) {
        Some(path) => {
            let text = file::read_file(&path)?;
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
        let table = file::parse_file(path, text)?;
        rules = file::file_rules(path, &table)?;
        // `roomcast` and `roomcast serve` take the same flags: both get the file.
        for (id, values) in file::file_defaults(path, table, &command)? {
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
    cli.serve.security.rules = rules.clone();
    if let Some(Command::Serve(serve)) = &mut cli.command {
        serve.security.rules = rules;
    }
    Ok(cli)
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
        assert_eq!(cli.serve.http.listen, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(cli.serve.broker.settings().unwrap(), BrokerConfig::Memory);
        assert_eq!(cli.serve.broker.pattern, "*");
    }

    #[test]
    fn file_sets_defaults_and_flags_override_it() {
        let (_dir, path) = write_file(
            "listen = \"127.0.0.1:9000\"\nredis-url = \"redis://10.0.0.1:6379\"\napi_key = [\"a\", \"b\"]\nping_interval_ms = 1000\n",
        );
        let path = path.to_str().unwrap();
        let cli = parse_with(&["--config", path], &[]).unwrap();
        assert_eq!(cli.serve.http.listen, "127.0.0.1:9000".parse().unwrap());
        let keys: Vec<&str> = cli.serve.http.api_keys.iter().map(Secret::expose).collect();
        assert_eq!(keys, vec!["a", "b"]);
        assert!(
            !format!("{:?}", cli.serve).contains("\"a\""),
            "Debug never shows keys"
        );
        assert_eq!(cli.serve.transports.ping_interval_ms, 1000);
        assert_eq!(
            cli.serve.broker.settings().unwrap(),
            BrokerConfig::Redis {
                url: "redis://10.0.0.1:6379".into(),
                pattern: "*".into(),
                subscribe: RedisSubscribe::Rooms,
                ca_file: None,
            }
        );
        let cli = parse_with(&["--config", path, "--listen", "127.0.0.1:9001"], &[]).unwrap();
        assert_eq!(cli.serve.http.listen, "127.0.0.1:9001".parse().unwrap());
    }

    #[test]
    fn trusted_proxies_come_from_the_file_or_the_flag() {
        let (_dir, path) = write_file("trusted_proxies = [\"10.1.0.0/16\", \"127.0.0.1\"]\n");
        let path = path.to_str().unwrap();
        let nets = |cli: Cli| -> Vec<String> {
            let nets = cli.serve.security.trusted_proxies.iter();
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
                .security
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
                assert_eq!(serve.http.listen, "127.0.0.1:9002".parse().unwrap())
            }
            other => panic!("expected serve, got {other:?}"),
        }
    }

    #[test]
    fn config_path_may_come_from_the_environment() {
        let (_dir, path) = write_file("pattern = \"device*\"\n");
        let cli = parse_with(&[], &[("ROOMCAST_CONFIG", path.to_str().unwrap())]).unwrap();
        assert_eq!(cli.serve.broker.pattern, "device*");
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
        assert_eq!(cli.serve.security.auth, AuthMode::Jwt);
        assert_eq!(cli.serve.security.rules.len(), 2);
        assert_eq!(cli.serve.security.rules[0].pattern, "public:*");
        assert_eq!(
            cli.serve.security.rules[1].publish,
            Some(crate::security::Level::Nobody)
        );
        assert!(!format!("{:?}", cli.serve).contains("jwt_secret: Some(Secret(\"x"));
    }

    #[test]
    fn a_lease_shares_one_session_and_subscribes_plainly() {
        let settings = |flags: &[&str]| {
            let mut all = vec!["--mqtt-url", "mqtt://h", "--hostname", "node-1"];
            all.extend_from_slice(flags);
            let cli = parse_with(&all, &[]).unwrap();
            cli.serve.mqtt.settings(1000).unwrap().unwrap()
        };
        let shared = settings(&[]);
        assert_eq!(shared.lease, None);
        assert_eq!(shared.client_id, "roomcast-node-1");
        assert_eq!(shared.share_group.as_deref(), Some("roomcast"));
        let leased = settings(&["--mqtt-lease-s", "5"]);
        assert_eq!(leased.lease, Some(std::time::Duration::from_secs(5)));
        assert_eq!(
            leased.client_id, "roomcast-ingest",
            "one session for every node"
        );
        assert_eq!(leased.share_group, None);
        let named = settings(&["--mqtt-lease-s", "5", "--mqtt-client-id", "plant-7"]);
        assert_eq!(named.client_id, "plant-7");
    }

    #[test]
    fn a_rule_may_set_only_the_cache() {
        let (_dir, path) = write_file("[[rules]]\nmatch = \"device-*\"\ncache = \"last\"\n");
        let cli = parse_with(&["--config", path.to_str().unwrap()], &[]).unwrap();
        let rules = crate::security::Rules::new(cli.serve.security.rules);
        assert!(rules.caches_last("device-1") && !rules.caches_last("other"));
    }

    #[test]
    fn bad_rules_are_refused_with_a_reason() {
        for text in [
            "[[rules]]\nmatch = \"a\"\nsubscribe = \"everyone\"\n",
            "[[rules]]\nmatch = \"a\"\n",
            "[[rules]]\nmatch = \"\"\nsubscribe = \"anyone\"\n",
            "[[rules]]\nmatch = \"a\"\nsubscribe = \"anyone\"\nextra = 1\n",
            "[[rules]]\nmatch = \"a\"\ncache = \"first\"\n",
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
            cli.serve.broker.settings().unwrap(),
            BrokerConfig::Redis {
                url: "redis://redis:6379".into(),
                pattern: "*".into(),
                subscribe: RedisSubscribe::Rooms,
                ca_file: None,
            }
        );
        let cli = parse_with(&["--broker", "redis"], &[]).unwrap();
        assert!(matches!(
            cli.serve.broker.settings(),
            Err(ConfigError::MissingRedisUrl)
        ));
        let cli = parse_with(&["--broker", "memory", "--redis-url", "redis://x"], &[]).unwrap();
        assert_eq!(cli.serve.broker.settings().unwrap(), BrokerConfig::Memory);
    }

    #[test]
    fn redis_cluster_takes_seed_lists_from_flags_or_env() {
        let cluster = |urls: &[&str]| BrokerConfig::RedisCluster {
            urls: urls.iter().map(|u| u.to_string()).collect(),
            pattern: "*".into(),
            ca_file: None,
        };
        let cli = parse_with(
            &[
                "--broker",
                "redis-cluster",
                "--redis-url",
                "redis://a:7000,redis://b:7001",
                "--redis-url",
                "redis://c:7002",
            ],
            &[],
        )
        .unwrap();
        assert_eq!(
            cli.serve.broker.settings().unwrap(),
            cluster(&["redis://a:7000", "redis://b:7001", "redis://c:7002"])
        );
        // The flag in the env variable's place (REDIS_CLUSTER_URLS).
        let cli = parse_with(
            &["--redis-cluster-urls", "redis://a:7000,redis://b:7001"],
            &[],
        )
        .unwrap();
        assert_eq!(
            cli.serve.broker.settings().unwrap(),
            cluster(&["redis://a:7000", "redis://b:7001"])
        );
        let cli = parse_with(&["--broker", "redis-cluster"], &[]).unwrap();
        assert!(matches!(
            cli.serve.broker.settings(),
            Err(ConfigError::MissingClusterUrls)
        ));
        let cli = parse_with(&["--redis-url", "redis://a:1,redis://b:2"], &[]).unwrap();
        assert!(matches!(
            cli.serve.broker.settings(),
            Err(ConfigError::TooManyRedisUrls(2))
        ));
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
