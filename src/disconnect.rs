//! Why a client connection ended: one enum for every transport, so logs and
//! metrics use the same stable codes everywhere.

use std::fmt;

/// The reason a server-side connection ended. `code()` is stable: it appears in
/// logs, metrics labels and close frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DisconnectReason {
    /// The client closed the connection or said goodbye.
    ClientClosed,
    /// The underlying transport failed (reset, EOF mid-frame, write error).
    TransportError,
    /// No heartbeat within the configured interval + timeout.
    PingTimeout,
    /// The client's outbox overflowed: it does not read fast enough.
    SlowConsumer,
    /// The client sent something the protocol does not allow.
    BadInput,
    /// The session moved to another transport (polling upgraded to websocket)
    /// or a duplicate transport was refused.
    TransportReplaced,
    /// The server asked the client to leave (an application decision).
    ServerDisconnect,
    /// The server is shutting down.
    ServerShutdown,
    /// The client opened a transport but never completed the protocol's own
    /// handshake (Socket.IO CONNECT) in time.
    ConnectTimeout,
    /// The client sent more messages per second than `--max-messages-per-s`.
    MessageRate,
    /// A message or frame was larger than `--max-payload`.
    TooLarge,
    /// A Socket.IO long-polling session held more than `--max-polling-buffer`
    /// bytes between two polls (its own code: the cure is a shorter poll or a
    /// websocket, not a faster reader).
    PollingBufferFull,
}

impl DisconnectReason {
    /// Stable snake_case code for logs, metrics and close frames.
    pub fn code(self) -> &'static str {
        match self {
            DisconnectReason::ClientClosed => "client_closed",
            DisconnectReason::TransportError => "transport_error",
            DisconnectReason::PingTimeout => "ping_timeout",
            DisconnectReason::SlowConsumer => "slow_consumer",
            DisconnectReason::BadInput => "bad_input",
            DisconnectReason::TransportReplaced => "transport_replaced",
            DisconnectReason::ServerDisconnect => "server_disconnect",
            DisconnectReason::ServerShutdown => "server_shutdown",
            DisconnectReason::ConnectTimeout => "connect_timeout",
            DisconnectReason::MessageRate => "message_rate",
            DisconnectReason::TooLarge => "too_large",
            DisconnectReason::PollingBufferFull => "polling_buffer_full",
        }
    }

    /// Human-readable text for close frames and error events.
    pub fn message(self) -> &'static str {
        match self {
            DisconnectReason::ClientClosed => "client closed the connection",
            DisconnectReason::TransportError => "transport error",
            DisconnectReason::PingTimeout => "ping timeout",
            DisconnectReason::SlowConsumer => "slow consumer: outgoing queue full",
            DisconnectReason::BadInput => "protocol violation",
            DisconnectReason::TransportReplaced => "transport replaced",
            DisconnectReason::ServerDisconnect => "disconnected by server",
            DisconnectReason::ServerShutdown => "server shutting down",
            DisconnectReason::ConnectTimeout => "no handshake in time",
            DisconnectReason::MessageRate => "too many messages per second",
            DisconnectReason::TooLarge => "message too large",
            DisconnectReason::PollingBufferFull => {
                "polling buffer full: too much queued between polls"
            }
        }
    }
}

impl fmt::Display for DisconnectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}
