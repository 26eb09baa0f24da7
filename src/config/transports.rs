//! The transports' wire settings: the Socket.IO path, the Engine.IO
//! heartbeat, the largest inbound frame, and what `/ws` clients may do.
//!
//! Turned into durations and checked here only.

use std::time::Duration;

use clap::Args;

use super::ConfigError;

#[derive(Debug, Clone, Args)]
pub struct TransportArgs {
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

    /// Let /ws clients publish with {"op":"publish"}.
    #[arg(long, env = "ROOMCAST_WS_PUBLISH")]
    pub ws_publish: bool,

    /// Invalid requests a /ws client may send before it is disconnected (1008).
    #[arg(long, env = "ROOMCAST_MAX_PROTOCOL_ERRORS", default_value_t = 10)]
    pub max_protocol_errors: u32,

    /// Seconds a lost Socket.IO connection's session (its rooms) waits for the client to
    /// come back with connection state recovery; 0 turns recovery off.
    #[arg(long, env = "ROOMCAST_RECOVERY_WINDOW_S", default_value_t = 120)]
    pub recovery_window_s: u64,
}

impl TransportArgs {
    pub fn ping_interval(&self) -> Duration {
        Duration::from_millis(self.ping_interval_ms)
    }

    pub fn ping_timeout(&self) -> Duration {
        Duration::from_millis(self.ping_timeout_ms)
    }

    pub fn recovery_window(&self) -> Duration {
        Duration::from_secs(self.recovery_window_s)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.socketio_path.starts_with('/') {
            return Err(ConfigError::BadPath(self.socketio_path.clone()));
        }
        Ok(())
    }
}
