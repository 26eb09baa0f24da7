//! The hub's bounds: each client's outgoing queue, each room's history and
//! how long a cached room's newest message is kept.
//!
//! Turned into the hub's [`HubConfig`] and [`OutboxLimits`] here only.

use std::time::Duration;

use clap::Args;

use crate::hub::{HubConfig, OutboxLimits};

#[derive(Debug, Clone, Args)]
pub struct HubArgs {
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

    /// Seconds a cached room's newest message (`cache = "last"` in the config file's [[rules]]) is
    /// kept for clients that join later.
    #[arg(long, env = "ROOMCAST_CACHE_TTL_S", default_value_t = 86_400)]
    pub cache_ttl_s: u64,

    /// Send the seed's `hello` on join only while the room has fewer members than this (0: never).
    #[arg(long, env = "ROOMCAST_HELLO_MAX_MEMBERS", default_value_t = 1000)]
    pub hello_max_members: usize,
}

impl HubArgs {
    pub fn hub_config(&self) -> HubConfig {
        HubConfig {
            history_size: self.history_size,
            history_ttl: self.history_ttl(),
            hello_max_members: self.hello_max_members,
            cache_ttl: Duration::from_secs(self.cache_ttl_s),
        }
    }

    /// Each client's queue bound (at least one frame and one byte).
    pub fn outbox_limits(&self) -> OutboxLimits {
        OutboxLimits {
            max_frames: self.client_queue_messages.max(1),
            max_bytes: self.client_queue_bytes.max(1),
        }
    }

    /// How long a room's history outlives its last member; a per-room broker
    /// subscription lingers as long.
    pub fn history_ttl(&self) -> Duration {
        Duration::from_secs(self.history_ttl_s)
    }
}
