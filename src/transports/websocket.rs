//! The WebSocket pieces `/ws` and Engine.IO's websocket transport share:
//! writing the outbox's queued frames in batches (one flush per batch),
//! telling an oversize or broken frame from a lost peer when a read fails,
//! and closing with the RFC 6455 code of a [`DisconnectReason`].
//!
//! Owns no connection and no protocol: the transports' connection tasks
//! call these with their socket and turn frames into messages their way.

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use bytes::Bytes;
use futures_util::SinkExt;

use crate::disconnect::DisconnectReason;
use crate::hub::{Frame, Outbox};

/// Frames taken from the outbox per write batch (one flush per batch).
pub const WRITE_BATCH: usize = 64;

/// How a connection ends: the reason, and the close frame to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Close {
    pub reason: DisconnectReason,
    pub code: u16,
    pub text: &'static str,
}

impl Close {
    /// The close frame of `reason`: its RFC 6455 code and its message.
    pub fn because(reason: DisconnectReason) -> Close {
        let code = match reason {
            // 1012 "service restart": reconnect, another node will take you.
            DisconnectReason::ServerShutdown => 1012,
            DisconnectReason::PingTimeout => 1001,
            DisconnectReason::BadInput => 1002,
            DisconnectReason::SlowConsumer
            | DisconnectReason::PollingBufferFull
            | DisconnectReason::MessageRate => 1008,
            DisconnectReason::TooLarge => 1009,
            DisconnectReason::TransportError => 1011,
            _ => 1000,
        };
        Close {
            reason,
            code,
            text: reason.message(),
        }
    }
}

/// Why a websocket write failed (or a read, which also flushes what waits
/// to be written): the socket's write deadline (`net::deadline`) means the
/// client stopped reading (`slow_consumer`); anything else is the
/// transport's.
pub fn write_failed(error: &(dyn std::error::Error + 'static)) -> DisconnectReason {
    if crate::net::deadline::is_write_timeout(error) {
        DisconnectReason::SlowConsumer
    } else {
        DisconnectReason::TransportError
    }
}

/// How a failed read ends the connection: a frame over the size limit is
/// `too_large` (1009), a broken frame 1002, text that is not UTF-8 1007;
/// else the write deadline (a read also flushes) or the transport.
pub fn read_error(error: axum::Error) -> Close {
    let inner = error.into_inner();
    let bad = |code, text| Close {
        reason: DisconnectReason::BadInput,
        code,
        text,
    };
    match inner.downcast_ref::<tungstenite::Error>() {
        Some(tungstenite::Error::Capacity(_)) => {
            return Close {
                text: "frame too large",
                ..Close::because(DisconnectReason::TooLarge)
            };
        }
        Some(tungstenite::Error::Protocol(error)) => {
            tracing::debug!(%error, "websocket protocol error");
            return bad(1002, "websocket protocol error");
        }
        Some(tungstenite::Error::Utf8(_)) => return bad(1007, "text frame is not UTF-8"),
        _ => {}
    }
    let reason = write_failed(&*inner);
    if reason == DisconnectReason::TransportError {
        tracing::debug!(error = %inner, "websocket read failed");
    }
    Close::because(reason)
}

/// A text frame as a message without copying; `None` (and a warning) for
/// bytes that are not UTF-8, which our encoders never produce.
pub fn text(bytes: Bytes) -> Option<Message> {
    match Utf8Bytes::try_from(bytes) {
        Ok(text) => Some(Message::Text(text)),
        Err(_) => {
            tracing::warn!("dropping a text frame that is not UTF-8 (encoder bug)");
            None
        }
    }
}

/// Writes up to [`WRITE_BATCH`] queued frames and flushes once; returns the
/// bytes taken from the outbox (`None`: it was empty). `message` turns a frame
/// into the transport's message. A client that reads nothing blocks this
/// until the socket's write deadline fails it (`slow_consumer`).
pub async fn write_batch(
    socket: &mut WebSocket,
    outbox: &Outbox,
    message: impl Fn(Frame) -> Option<Message>,
) -> Result<Option<usize>, DisconnectReason> {
    let mut batch = Vec::new();
    if outbox.drain_into(&mut batch, WRITE_BATCH) == 0 {
        return Ok(None);
    }
    let bytes = batch.iter().map(Frame::len).sum();
    // Popped from the end: only the list lives across the writes (an
    // iterator would add its size to every connection's task).
    batch.reverse();
    while let Some(frame) = batch.pop() {
        if let Some(message) = message(frame) {
            socket.feed(message).await.map_err(|e| write_failed(&e))?;
        }
    }
    socket.flush().await.map_err(|e| write_failed(&e))?;
    Ok(Some(bytes))
}

/// Sends the close frame; the caller drops the socket after. A peer that
/// reads nothing fails it at the socket's write deadline. (By reference: a
/// socket moved into each nested future would be stored once per level in
/// the connection task.)
pub async fn send_close(socket: &mut WebSocket, close: Close) {
    let frame = CloseFrame {
        code: close.code,
        reason: Utf8Bytes::from_static(close.text),
    };
    // The peer may be gone already; nothing more to do then.
    let _ = socket.send(Message::Close(Some(frame))).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_codes_follow_the_reason() {
        let code = |reason| Close::because(reason).code;
        assert_eq!(code(DisconnectReason::ServerShutdown), 1012);
        assert_eq!(code(DisconnectReason::SlowConsumer), 1008);
        assert_eq!(code(DisconnectReason::MessageRate), 1008);
        assert_eq!(code(DisconnectReason::TooLarge), 1009);
        assert_eq!(code(DisconnectReason::BadInput), 1002);
        assert_eq!(code(DisconnectReason::ClientClosed), 1000);
        assert_eq!(
            Close::because(DisconnectReason::TooLarge).text,
            DisconnectReason::TooLarge.message()
        );
    }
}
