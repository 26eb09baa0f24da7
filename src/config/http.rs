//! The listener and the HTTP server: where to listen, the publish API's keys,
//! the socket and request-head timeouts and the drain deadline.
//!
//! Turned into settings here only: `server` reads these methods, never the
//! raw numbers (each timeout is at least 1 s).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use super::Secret;

#[derive(Debug, Clone, Args)]
pub struct HttpArgs {
    /// Address to listen on.
    #[arg(long, env = "ROOMCAST_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,

    /// API key for POST /api/publish (repeatable). Without one, HTTP publishing is refused.
    #[arg(
        long = "api-key",
        env = "ROOMCAST_API_KEY",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub api_keys: Vec<Secret>,

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
}

impl HttpArgs {
    /// The publish API's keys; an empty key (e.g. `ROOMCAST_API_KEY=`) is no key.
    pub fn api_keys(&self) -> Arc<[String]> {
        self.api_keys
            .iter()
            .map(Secret::expose)
            .filter(|k| !k.is_empty())
            .map(str::to_owned)
            .collect()
    }

    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.shutdown_timeout_s)
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
}
