//! Client connections of every measured transport: connect from a given
//! source address, join one room, then hand each data frame's text to the
//! caller until the server closes or the run cancels.
//!
//! `websocket.rs` speaks Socket.IO over Engine.IO v4 and v3 and roomcast's
//! `/ws` JSON; `sse.rs` reads `/sse`. Pings are answered here, so callers see
//! only data frames.

mod sse;
mod websocket;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::tls::{Connector, Stream};

/// The wire protocol a client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// Socket.IO v5 over Engine.IO v4 websocket (socket.io-client 3.x/4.x).
    Sio4,
    /// Socket.IO v4 over Engine.IO v3 websocket (socket.io-client 1.x/2.x).
    Sio3,
    /// roomcast's `/ws` JSON protocol.
    Ws,
    /// roomcast's `/sse` event stream.
    Sse,
}

impl Transport {
    pub fn name(self) -> &'static str {
        match self {
            Transport::Sio4 => "sio4",
            Transport::Sio3 => "sio3",
            Transport::Ws => "ws",
            Transport::Sse => "sse",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Net(#[from] crate::net::NetError),
    #[error("websocket: {0}")]
    WebSocket(#[from] tokio_tungstenite::tungstenite::Error),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("handshake timed out after {0:?}")]
    Timeout(Duration),
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("server closed the connection")]
    Closed,
}

/// Everything needed to open one connection.
#[derive(Debug, Clone)]
pub struct ConnectSpec {
    pub transport: Transport,
    pub server: SocketAddr,
    pub source: Ipv4Addr,
    pub room: String,
    /// Whole handshake: TCP, TLS, upgrade, namespace connect, join acknowledged.
    pub timeout: Duration,
    /// Speak TLS (`wss://`, `https://`) through this connector.
    pub tls: Option<Connector>,
    /// Resume after this message id: `/ws` subscribes with `since`, SSE sends
    /// `Last-Event-ID`, Socket.IO v4 the `offset` beside `pid` (the recovery
    /// scenario's reconnects).
    pub since: Option<String>,
    /// Socket.IO v4: the session to recover, from the last CONNECT answer.
    pub pid: Option<String>,
}

impl ConnectSpec {
    /// The TCP connection from `source`, with its TLS handshake done when
    /// `tls` is set.
    async fn connect(&self) -> Result<Stream, ClientError> {
        let tcp = crate::net::connect_from(self.source, self.server, self.timeout).await?;
        Ok(match &self.tls {
            Some(connector) => connector.handshake(tcp).await?,
            None => Stream::Plain(tcp),
        })
    }
}

/// The id of a `/ws` message frame (`"id":"<id>"`) or an SSE event (its
/// `id:` line), which a resuming client sends back.
pub fn message_id(frame: &str) -> Option<&str> {
    if let Some(at) = frame.rfind(r#""id":""#) {
        let rest = &frame[at + 6..];
        return rest.find('"').map(|end| &rest[..end]);
    }
    frame
        .lines()
        .find_map(|line| line.strip_prefix("id: "))
        .map(str::trim_end)
}

/// A `/ws` reset frame or SSE `reset` event: the server could not fill a
/// resuming client's gap (docs/RECOVERY.md, "The reset signal").
pub fn is_reset(frame: &str) -> bool {
    frame.contains(r#""type":"reset""#)
}

/// How a pump ended.
#[derive(Debug)]
pub enum End {
    /// The run cancelled it; the connection was healthy.
    Cancelled,
    /// The server or the network ended it.
    Lost(ClientError),
}

/// A joined connection. The variants differ in size, but each lives in its
/// own task for its whole life, so boxing would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub enum Connection {
    WebSocket(websocket::WsClient),
    Sse(sse::SseClient),
}

impl Connection {
    /// Connects, joins `spec.room` and returns once the join is acknowledged
    /// (SSE: once the response headers arrive, when the server has joined).
    pub async fn open(spec: &ConnectSpec) -> Result<Connection, ClientError> {
        let opening = async {
            Ok(match spec.transport {
                Transport::Sse => Connection::Sse(sse::SseClient::open(spec).await?),
                _ => Connection::WebSocket(websocket::WsClient::open(spec).await?),
            })
        };
        tokio::time::timeout(spec.timeout, opening)
            .await
            .map_err(|_| ClientError::Timeout(spec.timeout))?
    }

    /// Socket.IO: the session the server gave, to recover after a loss.
    pub fn pid(&self) -> Option<&str> {
        match self {
            Connection::WebSocket(client) => client.pid(),
            Connection::Sse(_) => None,
        }
    }

    /// Socket.IO: a recovery was asked and refused (a new session, the
    /// stock client's `recovered === false`): the reset of that transport.
    pub fn not_recovered(&self) -> bool {
        match self {
            Connection::WebSocket(client) => client.not_recovered(),
            Connection::Sse(_) => false,
        }
    }

    /// Calls `on_data` with the text of every data frame until `cancel`
    /// fires or the connection ends.
    pub async fn pump(
        &mut self,
        cancel: &CancellationToken,
        on_data: &mut (dyn FnMut(&str) + Send),
    ) -> End {
        match self {
            Connection::WebSocket(client) => client.pump(cancel, on_data).await,
            Connection::Sse(client) => client.pump(cancel, on_data).await,
        }
    }

    /// Closes politely (close frame / FIN), bounded in time.
    pub async fn close(self) {
        let closing = async {
            match self {
                Connection::WebSocket(client) => client.close().await,
                Connection::Sse(client) => drop(client),
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), closing).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_id_a_resuming_client_sends_back() {
        let ws = r#"{"type":"message","channel":"r","data":"rcb:1:2:3:x","id":"lh3k:1150","ts":1}"#;
        assert_eq!(message_id(ws), Some("lh3k:1150"));
        let sse = "event: message\nid: lh3k:1151\ndata: {\"data\":\"rcb:1:2:3:x\"}";
        assert_eq!(message_id(sse), Some("lh3k:1151"));
        assert_eq!(message_id(r#"{"type":"ok","id":1}"#), None);
        assert!(is_reset(r#"{"type":"reset","channel":"r"}"#));
        assert!(!is_reset(ws));
    }
}
