//! Transports hold client connections and speak their wire protocols; all of
//! them join rooms on the same hub and drain the same kind of bounded outbox.
//!
//! Each declares one `hub::Format` with a unique id below `hub::MAX_FORMATS`:
//! Socket.IO 0, SSE 1, plain WebSocket 2.

pub mod json;
pub mod socketio;
pub mod sse;
pub mod ws;

use std::time::Duration;

use crate::disconnect::DisconnectReason;
use crate::hub::{ClientId, Hub, JoinRefused, Ready};

/// How long a join waits for the broker to confirm the room's subscription
/// before it is refused (`broker_unavailable`).
pub const JOIN_CONFIRM_TIMEOUT: Duration = Duration::from_secs(5);

/// Waits until the broker confirmed this node's subscription to every room
/// in `joined` (the rooms this request just added `client` to), so that
/// every message published after the acknowledgement reaches the client.
/// On a refusal or a timeout the client leaves those rooms again and the
/// transport answers the error instead of the acknowledgement. Every
/// transport's join goes through here, between the hub's join and its
/// acknowledgement.
pub async fn confirm_joins(
    hub: &Hub,
    client: ClientId,
    joined: &[&str],
) -> Result<(), JoinRefused> {
    let result = confirm_all(hub, joined).await;
    if let Err(refused) = &result {
        tracing::info!(client = client.0, code = refused.code, message = %refused.message, "join not confirmed");
        for room in joined {
            hub.leave(room, client);
        }
    }
    result
}

async fn confirm_all(hub: &Hub, joined: &[&str]) -> Result<(), JoinRefused> {
    let deadline = tokio::time::Instant::now() + JOIN_CONFIRM_TIMEOUT;
    for room in joined {
        match hub.ready(room) {
            Ready::Now(result) => result?,
            Ready::Later(pending) => match tokio::time::timeout_at(deadline, pending).await {
                Ok(result) => result?,
                Err(_) => {
                    return Err(JoinRefused {
                        code: "broker_unavailable",
                        message: format!(
                            "the broker did not confirm the subscription to {room:?} within {JOIN_CONFIRM_TIMEOUT:?}"
                        ),
                    });
                }
            },
        }
    }
    Ok(())
}

/// Why a websocket write failed (or a read, which also flushes what waits
/// to be written): the socket's write deadline ([`crate::net::deadline`])
/// means the client stopped reading (`slow_consumer`); anything else is the
/// transport's.
pub fn write_failed(error: &(dyn std::error::Error + 'static)) -> DisconnectReason {
    if crate::net::deadline::is_write_timeout(error) {
        DisconnectReason::SlowConsumer
    } else {
        DisconnectReason::TransportError
    }
}
